"""Training-step and inference benchmarks of a jaxdet detector on synthetic batches (no
dataset needed).

What is timed is exactly the jitted data-parallel train step the trainer runs
(`shard_train_step`): forward, target assignment, loss, backward, pmean and the
optimizer update, on a batch already on the devices. Figures:

- compile_s: `lower` + `compile` of the step (with a persistent compilation cache
  configured and warm, this is the cache load instead);
- step_s: the median of `steps` timed steps after `warmup` untimed ones, each ended by
  `block_until_ready`, so asynchronous dispatch cannot hide work;
- images_per_s = batch / step_s;
- flops_per_step: XLA's cost analysis of the step lowered for the CPU backend, whatever
  the devices (multiply-adds count 2). On GPU the cost analysis leaves out convolutions
  (they become cuDNN calls): measured on an H100 it gave 84 GFLOP for a RetinaNet-R50
  step that the CPU lowering of the same program counts in TFLOPs;
- mfu: flops_per_step / step_s / the chip's peak for the compute dtype (known chips only);
- peak_host_mb (this process's max RSS) and peak_device_mb (`memory_stats`, GPU/TPU).

Inference (`bench_jaxdet_inference`) times `inference.make_predict_step` the same way: the
eval-mode forward and the detector's post-processing, a step per batch.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import ml_collections

from benchmarks import profile
from benchmarks.memory import peak_host_mb
from jaxdet import configs, detectors, kernels, parallel
from jaxdet.data.synthetic import synthetic_batch
from jaxdet.detectors import inference
from jaxdet.training import optim
from jaxdet.training.step import init_key, init_state, make_train_step, shard_train_step

# Dense peak FLOP/s per chip by compute dtype, from the vendors' data sheets. The float32
# entry is the TF32 tensor-core rate, which XLA uses for float32 convolutions on these GPUs.
PEAK_FLOPS = {
    "H100": {"bfloat16": 989e12, "float16": 989e12, "float32": 494e12},
    "H200": {"bfloat16": 989e12, "float16": 989e12, "float32": 494e12},
    "A100": {"bfloat16": 312e12, "float16": 312e12, "float32": 156e12},
}


def _flops(stage) -> float | None:
    """FLOPs of a jax `Lowered` or `Compiled` stage from XLA's cost analysis."""
    analysis = stage.cost_analysis()
    if isinstance(analysis, (list, tuple)):  # older jax: one dict per program
        analysis = analysis[0] if analysis else None
    if not analysis or "flops" not in analysis:
        return None
    return float(analysis["flops"])


def _peak_device_bytes() -> int | None:
    stats = jax.local_devices()[0].memory_stats()
    return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


def step_flops(detector, tx, lr_schedule, state, batch: dict, rng: jax.Array, num_devices: int) -> float | None:
    """FLOPs of one global train step, counted on the CPU lowering of the per-device program.

    Only lowers (no compilation, no device memory): the abstract state and a per-device
    batch go through the same `shard_train_step` on a 1-device CPU mesh.
    """
    cpu_step = shard_train_step(make_train_step(detector, tx, lr_schedule), parallel.make_mesh(jax.devices("cpu")[:1]))
    abstract = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype)  # noqa: E731
    per_device = {k: jax.ShapeDtypeStruct((v.shape[0] // num_devices, *v.shape[1:]), v.dtype) for k, v in batch.items()}
    lowered = cpu_step.lower(jax.tree_util.tree_map(abstract, state), per_device, abstract(rng))
    flops = _flops(lowered)
    return flops * num_devices if flops is not None else None


def _peak_flops(dtype: str) -> float | None:
    kind = jax.local_devices()[0].device_kind
    for name, peaks in PEAK_FLOPS.items():
        if name in kind:
            return peaks.get(dtype)
    return None


def _setup(config: ml_collections.ConfigDict, num_classes: int, steps: int, warmup: int, seed: int):
    """The detector, optimizer, initial state and a synthetic global batch over every local device."""
    if steps < 1 or warmup < 1:
        raise ValueError(f"steps and warmup must be >= 1, got steps={steps}, warmup={warmup}")
    mesh = parallel.make_mesh()
    config = configs.resolve(config)
    configs.validate(config, mesh.size)
    detector = detectors.build_detector(
        config, num_classes, parallel.AXIS, kernels.platform(mesh.devices.flat), mesh.size
    )
    tx, lr = optim.make_optimizer(config.optim, max(config.train.steps, steps + warmup), config.model)
    state = init_state(detector, tx, init_key(seed), config.data.image_size, mesh)
    local = synthetic_batch(config.train.batch_size, config.data.image_size, config.data.max_boxes, num_classes, seed)
    return config, mesh, detector, tx, lr, state, parallel.global_batch(mesh, local)


def _time(run: Callable[[], Any], steps: int, warmup: int) -> list[float]:
    """Seconds of each of `steps` calls of `run` (which must block on its results) after `warmup`."""
    times = []
    for i in range(warmup + steps):
        t = time.perf_counter()
        run()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return times


def _result(config, mesh, state, mode: str, compile_s: float, times: list[float], flops: float | None) -> dict:
    step_s = statistics.median(times)
    peak = _peak_flops(config.train.compute_dtype)
    device_bytes = _peak_device_bytes()
    return {
        "framework": "jaxdet",
        "mode": mode,
        "detector": config.model.name,
        "backbone": config.model.backbone,
        "device": f"{mesh.size} x {jax.local_devices()[0].device_kind}",
        "image_size": config.data.image_size,
        "batch": config.train.batch_size,
        "compute_dtype": config.train.compute_dtype,
        "params_m": sum(x.size for x in jax.tree_util.tree_leaves(state.params)) / 1e6,
        "compile_s": compile_s,
        "step_s": step_s,
        "step_s_min": min(times),
        "images_per_s": config.train.batch_size / step_s,
        "flops_per_step": flops,
        "mfu": flops / step_s / peak / mesh.size if flops and peak else None,
        "peak_host_mb": peak_host_mb(),
        "peak_device_mb": device_bytes / 2**20 if device_bytes is not None else None,
    }


def _maybe_profile(run: Callable[[], Any], compiled, profile_dir: str) -> None:
    """With a directory: 3 more steps under the profiler, their summary printed and saved."""
    if profile_dir:
        print(profile.profile(run, compiled.as_text(), profile_dir), flush=True)


def bench_jaxdet(
    config: ml_collections.ConfigDict, num_classes: int, steps: int, warmup: int, seed: int = 0, profile_dir: str = ""
) -> dict[str, Any]:
    """Times `config`'s train step on synthetic batches over every local device.

    `config.train.batch_size` is the global batch; `config.data.image_size` the square
    input side. Returns the figures listed in the module docstring. `profile_dir`: then
    profile the step too (`benchmarks.profile`).
    """
    config, mesh, detector, tx, lr, state, batch = _setup(config, num_classes, steps, warmup, seed)
    step = shard_train_step(make_train_step(detector, tx, lr), mesh)
    rng = jax.random.key(seed)
    t0 = time.perf_counter()
    compiled = step.lower(state, batch, rng).compile()
    compile_s = time.perf_counter() - t0

    losses, box = [], [state]

    def run():
        box[0], metrics = compiled(box[0], batch, rng)
        losses.append(float(metrics["loss"]))  # blocks on the step's outputs
        jax.block_until_ready(box[0])

    times = _time(run, steps, warmup)
    timed_losses = losses[:]  # the warm-up and timed steps', not the profiled ones
    _maybe_profile(run, compiled, profile_dir)
    # The model's FLOPs are counted on its plain forms: XLA's cost analysis counts a loop's body
    # once, and a CPU form may loop (cpu_conv's weight-gradient taps are a scan).
    plain = copy.deepcopy(config)
    plain.model.kernels = "plain"
    plain_detector = detectors.build_detector(plain, num_classes, parallel.AXIS, "cpu", mesh.size)
    flops = step_flops(plain_detector, tx, lr, box[0], batch, rng, mesh.size)
    return {**_result(config, mesh, box[0], "train", compile_s, times, flops), "losses": timed_losses}


def bench_jaxdet_inference(
    config: ml_collections.ConfigDict, num_classes: int, steps: int, warmup: int, seed: int = 0, profile_dir: str = ""
) -> dict[str, Any]:
    """Times inference: `inference.make_predict_step` (eval-mode forward + post-processing) on
    a synthetic batch of `config.train.batch_size` images, randomly initialised weights.
    Post-processing has static shapes, so its work does not depend on the scores."""
    config, mesh, detector, _, _, state, batch = _setup(config, num_classes, steps, warmup, seed)
    step = inference.make_predict_step(detector, mesh)
    variables = state.variables
    t0 = time.perf_counter()
    compiled = step.lower(variables, batch["image"]).compile()
    compile_s = time.perf_counter() - t0
    detections = []

    def run():
        out = compiled(variables, batch["image"])
        jax.block_until_ready(out)
        detections.append(int(jax.device_get(out["valid"]).sum()))

    times = _time(run, steps, warmup)
    _maybe_profile(run, compiled, profile_dir)
    cpu = inference.make_predict_step(detector, parallel.make_mesh(jax.devices("cpu")[:1]))
    abstract = lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype)  # noqa: E731
    images = batch["image"]
    per_device = jax.ShapeDtypeStruct((images.shape[0] // mesh.size, *images.shape[1:]), images.dtype)
    flops = _flops(cpu.lower(jax.tree_util.tree_map(abstract, variables), per_device))
    flops = flops * mesh.size if flops is not None else None
    return {**_result(config, mesh, state, "inference", compile_s, times, flops), "detections": detections[-1]}


def format_result(r: dict[str, Any]) -> str:
    """One human-readable line of a result dict (either framework)."""
    parts = [
        f"{r['framework']:<11} {r['detector']}/{r['backbone']} {r['image_size']}px batch {r['batch']} "
        f"{r['compute_dtype']} on {r['device']}:",
        f"{r.get('mode', 'train')}:",
        f"{r['images_per_s']:.2f} img/s",
        f"step {r['step_s'] * 1e3:.1f} ms (median; min {r['step_s_min'] * 1e3:.1f})",
    ]
    if r.get("compile_s") is not None:
        parts.append(f"compile {r['compile_s']:.1f} s")
    if r.get("flops_per_step"):
        parts.append(f"{r['flops_per_step'] / 1e9:.1f} GFLOP/step")
    if r.get("mfu") is not None:
        parts.append(f"MFU {100 * r['mfu']:.1f}%")
    parts.append(f"peak host {r['peak_host_mb']:.0f} MB")
    if r.get("peak_device_mb") is not None:
        parts.append(f"peak device {r['peak_device_mb']:.0f} MB")
    return "  ".join(parts)
