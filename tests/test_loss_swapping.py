"""Every loss in LOSSES trains every detector; term gradients add up; sweeps tabulate."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from experiments.configs import default
from jaxdet import losses, optim, sweep, train
from jaxdet.models import detectors


def _config(**loss):
    config = default.get_config("tiny")
    config.data.image_size = 32
    config.model.pre_nms_topk = 50
    for k, v in loss.items():
        config.loss[k] = v
    return config


def _batch(n=2, size=32, all_padding=False):
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, size / 2, (n, 3, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(4, size / 2, (n, 3, 2))], -1).astype(np.float32)
    mask = np.zeros((n, 3), bool) if all_padding else np.array([[True, True, False]] * n)
    return {
        "image": rng.uniform(0, 255, (n, size, size, 3)).astype(np.float32),
        "boxes": boxes,
        "labels": rng.integers(0, 5, (n, 3)).astype(np.int32),
        "box_mask": mask,
        "image_mask": np.ones(n, bool),
    }


def _train(config, steps=2, batch=None):
    mesh = train.make_mesh(jax.devices()[:1])
    det = detectors.build_detector(config, 5)
    tx, lr = optim.make_optimizer(config.optim, 10)
    state = train.init_state(det, tx, jax.random.key(0), config.data.image_size, mesh)
    step = train.shard_train_step(train.make_train_step(det, tx, lr), mesh)
    batch = train.global_batch(mesh, batch or _batch())
    out = []
    for _ in range(steps):
        state, m = step(state, batch, jax.random.key(1))
        out.append(jax.device_get(m))
    return det, state, out


SWAPS = (
    [("classification", n) for n in sorted(losses.CLASSIFICATION_LOSSES)]
    + [("localization", n) for n in sorted(losses.LOCALIZATION_LOSSES)]
    + [("confidence", n) for n in sorted(losses.CONFIDENCE_LOSSES)]
)


@pytest.mark.parametrize("detector", sorted(detectors.DETECTORS))
@pytest.mark.parametrize("family, name", SWAPS)
def test_every_loss_trains_every_detector(detector, family, name):
    config = _config(**{family: name})
    config.model.name = detector
    _, _, metrics = _train(config)
    for m in metrics:
        assert all(np.isfinite(v) for v in m.values()), (family, name, m)
    assert metrics[-1][family] >= 0
    if family == "confidence" and name != "none":
        assert metrics[-1]["confidence"] > 0  # the confidence branch exists and is trained


def test_all_padding_batch_gives_finite_loss_and_gradients():
    for cls in ("sigmoid_focal", "varifocal", "softmax_cross_entropy"):
        _, _, metrics = _train(_config(classification=cls, confidence="iou_varifocal"), batch=_batch(all_padding=True))
        assert all(np.isfinite(v) for v in metrics[-1].values())
        assert metrics[-1]["localization"] == 0.0


def test_loss_hyperparameters_come_from_the_config():
    config = _config(focal_gamma=0.0, focal_alpha=-1.0)
    bound = losses.build_loss("classification", "sigmoid_focal", config.loss)
    logits, labels = jnp.array([[0.3, -1.0]]), jnp.array([0])
    expected = jnp.sum(losses.sigmoid_binary_cross_entropy(logits, jnp.array([[1.0, 0.0]])))
    np.testing.assert_allclose(bound.fn(logits, labels, jnp.ones(1)), [expected], rtol=1e-6)


def test_term_gradients_sum_to_the_total_gradient():
    config = _config(confidence="iou_binary_cross_entropy", localization="giou")
    mesh = train.make_mesh(jax.devices()[:1])
    det = detectors.build_detector(config, 5)
    tx, _ = optim.make_optimizer(config.optim, 10)
    state = train.init_state(det, tx, jax.random.key(0), 32, mesh)
    batch = train.global_batch(mesh, _batch())

    def both(state, batch):
        rng = jax.random.key(3)
        jac = train.per_term_gradients(det, state, batch, rng)

        def total(params):
            variables = {"params": params, "batch_stats": state.batch_stats}
            outputs, _ = det.module.apply(
                variables, train.normalize(batch["image"]), train=True, mutable=["batch_stats"]
            )
            return det.loss_fn(outputs, batch, rng, axis_name=train.AXIS)[0]

        return jac, jax.grad(total)(state.params)

    fn = jax.jit(jax.shard_map(both, mesh=mesh, in_specs=(P(), P("data")), out_specs=P(), check_vma=False))
    jac, grad = fn(state, batch)
    for j, g in zip(jax.tree_util.tree_leaves(jac), jax.tree_util.tree_leaves(grad)):
        np.testing.assert_allclose(np.asarray(j).sum(0), np.asarray(g), rtol=1e-4, atol=1e-6)

    diag = jax.device_get(train.make_term_grad_step(det, mesh)(state, batch, jax.random.key(0)))
    assert all(np.isfinite(v) for v in diag.values())
    assert (
        diag["grad_norm/classification"] > 0 and diag["grad_norm/localization"] > 0 and diag["grad_norm/confidence"] > 0
    )
    for k, v in diag.items():
        if k.startswith("grad_cos/"):
            assert -1.0 - 1e-5 <= v <= 1.0 + 1e-5


def test_sweep_parsing_and_errors():
    config = default.get_config()
    grid = sweep.parse_sweep(config, ["loss.localization=l1,giou", "optim.learning_rate=0.1,0.01"])
    assert len(grid) == 4 and grid[1] == {"loss.localization": "l1", "optim.learning_rate": 0.01}
    assert sweep.parse_sweep(config, ["model.aspect_ratios=(0.5,1.0),(1.0,)"])[0]["model.aspect_ratios"] == (0.5, 1.0)
    assert sweep.arm_name(grid[0]) == "loss.localization=l1,optim.learning_rate=0.1"
    with pytest.raises(ValueError, match="no field 'localisation'"):
        sweep.parse_sweep(config, ["loss.localisation=l1"])
    with pytest.raises(ValueError, match="--seeds"):
        sweep.parse_sweep(config, ["seed=1,2"])


def test_two_arm_sweep_writes_results(tfds_dir, tmp_path, capsys):
    from jaxdet import loop

    config = default.get_config("tiny")
    config.data.data_dir = tfds_dir
    config.train.term_grad_norms_every = 3
    runner = lambda cfg, wd: loop.train_and_evaluate(cfg, wd, jax.devices()[:1])
    grid = sweep.parse_sweep(config, ["loss.localization=smooth_l1,giou"])
    records = sweep.run_sweep(config, str(tmp_path), grid, [0], runner)
    md, png = sweep.write_results(records, str(tmp_path))
    text = open(md).read()
    assert "| loss.localization=smooth_l1 |" in text and "| loss.localization=giou |" in text
    assert os.path.getsize(png) > 10_000
    # Same seed: every arm starts from the same parameters (and the data order is a function of the seed).
    mesh = train.make_mesh(jax.devices()[:1])
    inits = []
    for overrides in grid:
        cfg = sweep.apply(config, overrides, 0)
        det = detectors.build_detector(cfg, 5)
        tx, _ = optim.make_optimizer(cfg.optim, cfg.train.steps)
        inits.append(train.init_state(det, tx, train.init_key(cfg.seed), cfg.data.image_size, mesh).params)
    for a, b in zip(jax.tree_util.tree_leaves(inits[0]), jax.tree_util.tree_leaves(inits[1])):
        np.testing.assert_array_equal(a, b)
    with open(os.path.join(records[0]["workdir"], "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    diag = [r for r in rows if r["split"] == "diagnostics"]
    assert [r["step"] for r in diag] == [0, 3] and "grad_cos/classification__localization" in diag[0]
    # Re-running skips finished arms.
    capsys.readouterr()
    sweep.run_sweep(config, str(tmp_path), grid, [0], runner)
    assert capsys.readouterr().out.count("already finished") == 2
