"""What every export format shares: the run's detector as one function of canvas pixels,
post-processing included, with the plain kernel forms (an artifact may run on another
backend, or runtime, than the one that exports it), and the artifact's metadata."""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable

import jax

import jaxdet
from jaxdet import configs, detectors, files, parallel
from jaxdet.detectors.inference import PIXEL_MEAN, PIXEL_STD, forward
from jaxdet.errors import ConfigError
from jaxdet.evaluation.predict import restore_weights

METADATA = "metadata.json"


@dataclasses.dataclass
class Prepared:
    """A run's checkpoint ready to export: `run(images [B, S, S, 3] float32 0..255)` ->
    {"boxes" [B, D, 4] xyxy canvas pixels, "classes" [B, D], "scores" [B, D], "valid" [B, D]}."""

    config: object
    classes: object
    run: Callable[[jax.Array], dict]
    step: int
    size: int
    variables: dict  # the checkpoint's {"params", "batch_stats"}


def prepare(workdir: str, which: str = "latest") -> Prepared:
    """The run's config, classes and the weights of checkpoint `which` (latest, best, a step)."""
    config, classes = configs.load_recorded(workdir)
    # The plain kernel forms: the CPU forms are the same computation rewritten for XLA:CPU.
    with config.unlocked():
        config.model.kernels = "plain"
    detector = detectors.build_detector(config, len(classes.names), None)
    size = config.data.image_size
    devices = jax.local_devices()[:1]
    variables, step = restore_weights(workdir, which, detector, size, parallel.make_mesh(devices))

    def run(images: jax.Array) -> dict:
        outputs, _ = forward(detector, variables, {"image": images}, jax.random.key(0), train=False)
        return detector.predict(outputs)._asdict()

    return Prepared(config, classes, run, int(step), size, variables)


def check_out(out: str, overwrite: bool) -> None:
    """Refuses (ConfigError) an `out` folder that already holds an artifact, unless `overwrite`:
    an export never replaces an earlier one unasked."""
    if os.path.isfile(out):
        raise ConfigError(f"--out={out} is a file; an artifact is a folder")
    held = [
        name
        for name in (METADATA, "model.stablehlo", "model.onnx", "model.safetensors")
        if os.path.exists(os.path.join(out, name))
    ]
    if held and not overwrite:
        raise ConfigError(
            f"--out={out} already holds an artifact ({', '.join(held)}): choose another --out, or pass "
            "--overwrite to replace it"
        )


def write_metadata(out: str, prepared: Prepared, fmt: str, batch, workdir: str, **extra) -> dict:
    """metadata.json: input size and layout, normalisation, class names and the dataset's
    category ids, score threshold, detections per image, jaxdet version, config hash;
    returns it."""
    config, classes = prepared.config, prepared.classes
    meta = {
        "format": fmt,
        "detector": config.model.name,
        "input_size": prepared.size,
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
        "checkpoint_step": prepared.step,
        "workdir": os.path.abspath(workdir),
        **extra,
    }
    files.write_atomic(os.path.join(out, METADATA), json.dumps(meta, indent=1))
    return meta
