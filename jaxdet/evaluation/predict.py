"""Detections on image files with a trained run: resized and padded as in evaluation,
boxes mapped back to each file's own pixels.

The run's workdir holds what is needed: config.json (the config it trained with),
classes.json (class names and the dataset's category ids) and its checkpoints.

Nothing is ever written over an input: each picture goes to OUT/<the input's path relative
to the inputs' common folder>.png (so a/x.jpg, b/x.jpg and x.png give three files), and
a run whose outputs would land on an input file is refused before anything is written.
"""

from __future__ import annotations

import json
import os

import jax
import numpy as np
from PIL import Image

from jaxdet import configs, detectors, files, parallel, visualize
from jaxdet.console import Progress
from jaxdet.data import decode
from jaxdet.data.canvas import preprocess, to_original  # noqa: F401  (predict.preprocess: tests, users)
from jaxdet.detectors import inference
from jaxdet.detectors.inference import restore_weights  # (re-exported: callers import it from here)
from jaxdet.errors import ConfigError


class Predictor:
    """A restored detector that runs on one image at a time (any size, JPEG or PNG)."""

    def __init__(self, workdir: str, which: str = "latest"):
        self.config, self.classes = configs.load_recorded(workdir)
        self.class_names = list(self.classes.names)
        cfg = self.config
        devices = jax.local_devices()[:1]
        self.detector = detectors.build_detector(cfg, len(self.class_names), None, devices[0].platform)
        mesh = parallel.make_mesh(devices)
        self.variables, self.step = restore_weights(workdir, which, self.detector, cfg.data.image_size, mesh)
        self._run = inference.make_predict_step(self.detector, mesh)

    def __call__(self, image: np.ndarray) -> dict[str, np.ndarray]:
        """uint8 [H, W, 3] -> {boxes [D, 4] original xyxy pixels, scores [D], classes [D]} (valid only)."""
        h, w = image.shape[:2]
        x, scale = preprocess(image, self.config.data.image_size)
        dets = jax.device_get(self._run(self.variables, x[None]))
        keep = dets["valid"][0]
        return {
            "boxes": to_original(dets["boxes"][0][keep], scale, h, w),
            "scores": dets["scores"][0][keep],
            "classes": dets["classes"][0][keep],
        }


def output_names(paths: list[str]) -> list[str]:
    """Each input's picture name: its path relative to the inputs' common folder, plus .png
    (distinct inputs give distinct names, whatever their folders and extensions)."""
    full = [os.path.abspath(p) for p in paths]
    if len(set(full)) != len(full):
        raise ConfigError("the same image is given twice (--images)")
    root = os.path.commonpath([os.path.dirname(p) for p in full])
    return [os.path.relpath(p, root) + ".png" for p in full]


def check_outputs(paths: list[str], out_dir: str) -> list[str]:
    """The picture paths for `paths` in `out_dir`; ConfigError if `out_dir` is a file, cannot
    be written, or any output (pictures, detections.json) would replace an input."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ConfigError(f"--out={out_dir!r} is a file; pass a directory (created if missing)")
    outputs = [os.path.join(out_dir, n) for n in output_names(paths)]
    inputs = {os.path.realpath(p): p for p in paths}
    for out in [*outputs, os.path.join(out_dir, "detections.json")]:
        if os.path.realpath(out) in inputs:
            raise ConfigError(
                f"--out={out_dir!r} would write {out} over the input image {inputs[os.path.realpath(out)]!r}; "
                "nothing was written: choose another --out"
            )
    try:
        files.make_writable(out_dir)
    except OSError as e:
        why = e.strerror or e
        raise ConfigError(f"--out={out_dir!r} cannot be written ({why}); pass a writable directory") from None
    return outputs


def predict_files(predictor: Predictor, paths: list[str], out_dir: str, score_threshold: float) -> list[dict]:
    """Draws each image's detections (score >= threshold) to out_dir (see `output_names`) and
    returns COCO results (image_id = position in `paths` from 1, the dataset's category_id,
    bbox [x, y, w, h] in the file's pixels, file_name = the path under the common folder)."""
    outputs = check_outputs(paths, out_dir)
    results = []
    progress = Progress("predict", len(paths))
    for image_id, (path, out) in enumerate(zip(paths, outputs), start=1):
        try:
            with open(path, "rb") as f:
                image = decode.decode_rgb(f.read())  # the decoder training and evaluation use
        except (OSError, decode.BadImage) as e:
            raise ConfigError(f"cannot read image {path!r}: {e}") from None
        dets = predictor(image)
        keep = dets["scores"] >= score_threshold
        name = os.path.relpath(out, out_dir)[: -len(".png")]
        for box, score, cls in zip(dets["boxes"][keep], dets["scores"][keep], dets["classes"][keep]):
            x1, y1, x2, y2 = (float(v) for v in box)
            results.append({"image_id": image_id, "file_name": name, "category_id": predictor.classes.category_id(cls),
                            "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(score)})  # fmt: skip
        pic = visualize.draw_boxes(
            image, dets["boxes"][keep], dets["classes"][keep], dets["scores"][keep], predictor.class_names
        )
        os.makedirs(os.path.dirname(out), exist_ok=True)
        Image.fromarray(pic).save(out, format="PNG")
        progress.update(image_id)
    progress.finish()
    with open(os.path.join(out_dir, "detections.json"), "w") as f:
        json.dump(results, f)
    return results
