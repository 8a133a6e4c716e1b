"""Run as a script by tests/test_scaling.py: 1 vs 4 vs 8 devices, 10 steps, same global batch:
the parameters, BatchNorm statistics and the EMA of the weights agree.

Needs 8 CPU devices, so it sets XLA_FLAGS itself before JAX starts (the pytest process
has 4). Exits 1 with the largest difference when the parameters disagree.
"""

import os
import sys

os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8 --xla_backend_optimization_level=0"

import jax  # noqa: E402
import numpy as np  # noqa: E402

from experiments.configs import default  # noqa: E402
from jaxdet import (
    detectors,  # noqa: E402
    parallel,
)
from jaxdet.data.synthetic import synthetic_batch  # noqa: E402
from jaxdet.training import optim  # noqa: E402
from jaxdet.training.step import init_key, init_state, make_train_step, shard_train_step  # noqa: E402


def run(config, devices, batches):
    assert len(devices) == len({d.id for d in devices})
    mesh = parallel.make_mesh(devices)
    det = detectors.build_detector(config, 5, parallel.AXIS, "cpu", num_devices=len(devices))
    tx, lr = optim.make_optimizer(config.optim, config.train.steps)
    state = init_state(det, tx, init_key(0), config.data.image_size, mesh, with_ema=True)
    step = shard_train_step(make_train_step(det, tx, lr, config.optim), mesh)
    losses = []
    for b in batches:
        state, metrics = step(state, parallel.global_batch(mesh, b), jax.random.key(1))
        losses.append(float(metrics["loss"]))
    return jax.device_get(state), losses


def main() -> int:
    config = default.get_config("tiny")
    assert config.model.sync_batch_norm  # the default: BatchNorm over the global batch on any device count
    config.optim.name, config.optim.learning_rate, config.train.steps = "sgd", 0.01, 10
    config.optim.ema_decay, config.optim.ema_warmup = 0.9, 3  # (the EMA agrees too)
    batches = [synthetic_batch(8, 64, 8, 5, seed=s) for s in range(10)]
    # Host devices explicitly: on a GPU machine jax.devices() holds the GPU(s), and slicing
    # them would compare one device with itself.
    cpus = jax.devices("cpu")
    if len(cpus) < 8:
        print(f"needs 8 CPU devices, have {len(cpus)}")
        return 1
    ref, ref_losses = run(config, cpus[:1], batches)
    worst = 0.0
    for n in (4, 8):
        state, losses = run(config, cpus[:n], batches)
        assert int(state.step) == 10
        leaves = [jax.tree_util.tree_leaves((s.params, s.batch_stats, s.ema)) for s in (ref, state)]
        for a, b in zip(*leaves, strict=True):
            worst = max(worst, float(np.max(np.abs(a - b) / (np.abs(a) + 1e-3))))
            if not np.allclose(a, b, rtol=1e-4, atol=1e-5):
                print(f"{n} devices differ from 1 device: max abs diff {np.max(np.abs(a - b)):.3g}")
                return 1
        print(f"{n} devices: losses {losses[0]:.5f} .. {losses[-1]:.5f} (1 device: {ref_losses[-1]:.5f})")
    if not ref_losses[-1] < ref_losses[0]:
        print(f"loss did not decrease: {ref_losses}")
        return 1
    print(f"ok: 1, 4 and 8 devices agree after 10 steps (largest relative difference {worst:.2e})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
