"""Latency of a run's detector as jaxdet predicts with it, as its StableHLO artifact and as
its ONNX artifact in onnxruntime, side by side in one process (median after warm-up):

    python -m experiments.bench_export --workdir=runs/default --batches=1,8 --steps=20

Each side maps the same canvases [B, S, S, 3] to detections (the model, decoding and
post-processing; not the image resize, which all three share). Artifacts go to a
temporary folder; their sizes are printed with the times. First, --images images of
random other sizes go through predict and each artifact (batch 1): how many agree in
count, classes and order, and the largest box and score differences.
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
_IMAGES = flags.DEFINE_integer("images", 20, "Images of random other sizes to compare each artifact with predict on.")
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


def _tie_swapped(ref: dict, got: dict, atol: float = 1e-5) -> bool:
    """Whether `got` is `ref` up to the order of detections whose scores tie within `atol`
    (another form or runtime rounds them the other way round): same count, the sorted
    scores within `atol`, and each detection's class and box among its tied ones."""
    if len(ref["scores"]) != len(got["scores"]) or np.abs(ref["scores"] - got["scores"]).max(initial=0) > atol:
        return False
    for i in range(len(got["scores"])):
        tied = np.abs(ref["scores"] - got["scores"][i]) <= atol
        hit = tied & (ref["classes"] == got["classes"][i]) & (np.abs(ref["boxes"] - got["boxes"][i]).max(-1) <= 1e-3)
        if not hit.any():
            return False
    return True


def _same(ref: dict, got: dict, box_atol: float = 1e-3, score_atol: float = 1e-5) -> bool:
    """Same count, classes and order, boxes within `box_atol` px and scores within `score_atol`."""
    if len(ref["scores"]) != len(got["scores"]) or not np.array_equal(ref["classes"], got["classes"]):
        return False
    boxes = np.abs(ref["boxes"] - got["boxes"]).max(initial=0.0)
    return boxes <= box_atol and np.abs(ref["scores"] - got["scores"]).max(initial=0.0) <= score_atol


def _agreement(predictor: Predictor, artifact: Artifact, n: int) -> str:
    """Each of `n` random images (sides 40-200 px) through predict and the artifact: how many
    agree in count, classes, order, boxes and scores (and how many only up to tied scores),
    and the largest box and score differences over the agreeing ones."""
    rng = np.random.default_rng(0)
    same, swapped, box, score, total = 0, 0, 0.0, 0.0, 0
    for _ in range(n):
        image = rng.integers(0, 255, (int(rng.integers(40, 200)), int(rng.integers(40, 200)), 3), dtype=np.uint8)
        ref, got = predictor(image), artifact(image)
        total += len(ref["scores"])
        if not _same(ref, got):  # (a tied-score swap within one class keeps the classes' order: boxes too)
            swapped += _tie_swapped(ref, got)
            continue
        same += 1
        if len(ref["scores"]):
            box = max(box, float(np.abs(ref["boxes"] - got["boxes"]).max()))
            score = max(score, float(np.abs(ref["scores"] - got["scores"]).max()))
    return (
        f"{same}/{n} images same count, classes and order (boxes within 1e-3 px, scores 1e-5), {swapped} the same "
        f"up to tied scores, {n - same - swapped} other "
        f"({total} detections); max |box| {box:.2g} px, |score| {score:.2g}"
    )


def _size_mb(directory: str, name: str) -> float:
    return os.path.getsize(os.path.join(directory, name)) / 1e6


def main(argv):
    cli.start(argv)
    from jaxdet.export.onnx import export as onnx_export  # (the [onnx] extra)

    predictor = Predictor(_WORKDIR.value, _CHECKPOINT.value)
    size = predictor.config.data.image_size
    device = jax.devices()[0].device_kind
    print(f"{predictor.config.model.name} at {size} px, checkpoint step {predictor.step}, {device}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        if _IMAGES.value:
            for fmt, export in (("stablehlo", stablehlo.export), ("onnx", onnx_export.export)):
                artifact = Artifact(export(_WORKDIR.value, _CHECKPOINT.value, 1, os.path.join(tmp, f"check_{fmt}")))
                print(f"{fmt} against predict: {_agreement(predictor, artifact, _IMAGES.value)}")
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
            rows.append(
                f"| {batch} | {ms['jaxdet']:.1f} | {ms['stablehlo']:.1f} | {ms['onnx']:.1f} "
                f"| {_size_mb(shlo, stablehlo.PROGRAM):.1f} | {_size_mb(onnx_dir, onnx_export.MODEL):.1f} |"
            )
    print("| batch | jaxdet predict ms/image | StableHLO ms/image | onnxruntime ms/image | StableHLO MB | ONNX MB |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    cli.run(main)
