"""Latency of a run's detector as jaxdet predicts with it, as its StableHLO artifact and as
its ONNX artifact in onnxruntime, side by side in one process (median after warm-up):

    python -m experiments.bench_export --workdir=runs/default --batches=1,8 --steps=20

Each side maps the same canvases [B, S, S, 3] to detections (the model, decoding and
post-processing; not the image resize, which all three share). Artifacts go to a
temporary folder; their sizes are printed with the times.
"""

import os
import statistics
import tempfile
import time

import jax
import numpy as np
from absl import flags

from experiments import cli
from jaxdet.evaluation.predict import Predictor
from jaxdet.export import stablehlo
from jaxdet.export.load import Artifact

_WORKDIR = flags.DEFINE_string("workdir", None, "The trained run's directory.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", "latest", "latest, best or a step number.")
_BATCHES = flags.DEFINE_list("batches", ["1", "8"], "Images per call.")
_STEPS = flags.DEFINE_integer("steps", 20, "Timed calls per side (the median is reported).")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed calls after compilation or session start.")
flags.mark_flags_as_required(["workdir"])


def _median_ms(fn, canvases: np.ndarray, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        fn(canvases)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn(canvases)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def _size_mb(directory: str, name: str) -> float:
    return os.path.getsize(os.path.join(directory, name)) / 1e6


def main(argv):
    cli.start(argv)
    from jaxdet.export.onnx import export as onnx_export  # (the [onnx] extra)

    predictor = Predictor(_WORKDIR.value, _CHECKPOINT.value)
    size = predictor.config.data.image_size
    device = jax.devices()[0].device_kind
    print(f"{predictor.config.model.name} at {size} px, checkpoint step {predictor.step}, {device}")
    print("| batch | jaxdet predict ms/image | StableHLO ms/image | onnxruntime ms/image | StableHLO MB | ONNX MB |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for batch in [int(b) for b in _BATCHES.value]:
            canvases = np.random.default_rng(0).uniform(0, 255, (batch, size, size, 3)).astype(np.float32)
            shlo = stablehlo.export(_WORKDIR.value, _CHECKPOINT.value, batch, os.path.join(tmp, f"shlo{batch}"))
            onnx_dir = onnx_export.export(_WORKDIR.value, _CHECKPOINT.value, batch, os.path.join(tmp, f"onnx{batch}"))
            sides = {
                "jaxdet": lambda x: jax.device_get(predictor._run(predictor.variables, x)),
                "stablehlo": Artifact(shlo).batch_call,
                "onnx": Artifact(onnx_dir).batch_call,
            }
            ms = {name: _median_ms(fn, canvases, _WARMUP.value, _STEPS.value) / batch for name, fn in sides.items()}
            print(
                f"| {batch} | {ms['jaxdet']:.1f} | {ms['stablehlo']:.1f} | {ms['onnx']:.1f} "
                f"| {_size_mb(shlo, stablehlo.PROGRAM):.1f} | {_size_mb(onnx_dir, onnx_export.MODEL):.1f} |"
            )


if __name__ == "__main__":
    cli.run(main)
