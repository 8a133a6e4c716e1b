"""A run's detector, decoding and post-processing included, as one serialized StableHLO
program (`jax.export`) with its weights inside, and metadata.json beside it.

The program maps float32 pixels 0..255 [B, S, S, 3] (the canvas `jaxdet.data.canvas`
makes) to the fixed-size detections `predict` gives: boxes [B, D, 4] xyxy canvas pixels,
scores [B, D], classes [B, D] (labels 0..C-1), valid [B, D]. B is fixed, or symbolic
("dynamic") where every operation of the detector allows it.
"""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp

import jaxdet
from jaxdet import configs, detectors, files, parallel
from jaxdet.detectors.inference import PIXEL_MEAN, PIXEL_STD, forward
from jaxdet.errors import ConfigError
from jaxdet.evaluation.predict import restore_weights

PROGRAM, METADATA = "model.stablehlo", "metadata.json"


def export(workdir: str, which: str = "latest", batch: int | str = 1, out: str | None = None) -> str:
    """Writes the artifact of `workdir`'s checkpoint `which` to `out` (default
    <workdir>/export/stablehlo-step<N>); `batch` an int or "dynamic". Returns `out`."""
    config, classes = configs.load_recorded(workdir)
    # The plain kernel forms: the artifact may run on another backend than the one that
    # exports it (the CPU forms are the same computation, rewritten for XLA:CPU).
    with config.unlocked():
        config.model.kernels = "plain"
    detector = detectors.build_detector(config, len(classes.names), None)
    size = config.data.image_size
    devices = jax.local_devices()[:1]
    variables, step = restore_weights(workdir, which, detector, size, parallel.make_mesh(devices))

    def run(images: jax.Array) -> dict:
        outputs, _ = forward(detector, variables, {"image": images}, jax.random.key(0), train=False)
        return detector.predict(outputs)._asdict()

    if batch == "dynamic":
        (b,) = jax.export.symbolic_shape("b")
    elif isinstance(batch, int) and batch >= 1:
        b = batch
    else:
        raise ConfigError(f"--batch={batch!r}: a number of images >= 1, or 'dynamic'")
    try:
        exported = jax.export.export(jax.jit(run))(jax.ShapeDtypeStruct((b, size, size, 3), jnp.float32))
    except Exception as e:  # jax names the operation that has no symbolic form
        if batch != "dynamic":
            raise
        raise ConfigError(
            f"{config.model.name} does not export with a symbolic batch ({type(e).__name__}: {str(e)[:300]}); "
            "export a fixed batch (--batch=N)"
        ) from None
    out = out or os.path.join(workdir, "export", f"stablehlo-step{step}")
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, PROGRAM + ".tmp"), "wb") as f:
        f.write(exported.serialize())
    os.replace(os.path.join(out, PROGRAM + ".tmp"), os.path.join(out, PROGRAM))
    meta = {
        "format": "stablehlo",
        "detector": config.model.name,
        "input_size": size,
        "batch": batch,
        "input": "float32 pixels 0..255 [B, S, S, 3], RGB; the longer side resized to S, zero padding bottom/right",
        "normalisation": {
            "mean": [float(v) for v in PIXEL_MEAN],
            "std": [float(v) for v in PIXEL_STD],
            "applied": "inside the program",
        },  # fmt: skip
        "class_names": list(classes.names),
        "category_ids": [int(i) for i in classes.ids],
        "score_threshold": float(config.model.score_threshold),
        "max_detections": int(config.model.max_detections),
        "jaxdet_version": jaxdet.__version__,
        "config_hash": configs.fingerprint(config),
        "checkpoint_step": int(step),
        "workdir": os.path.abspath(workdir),
    }
    files.write_atomic(os.path.join(out, METADATA), json.dumps(meta, indent=1))
    return out
