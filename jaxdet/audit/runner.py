"""One pass of a trained detector over a split for the audit: per image its loss terms and
head-gradient norm (per_example.py), per annotated box and per detection the suspicions
(suspects.py), all from one compiled step per batch, streamed through the evaluation
pipeline (no augmentation); each batch's records go to a callback (records.RecordWriter
streams them to disk), so the pass holds one batch whatever the split's size."""

from __future__ import annotations

from collections.abc import Callable

import jax
import numpy as np

from jaxdet.audit import suspects
from jaxdet.audit.per_example import per_example
from jaxdet.console import Progress
from jaxdet.data import pipeline


def make_audit_step(
    detector, heads: list[str], match_iou: float, near_iou: float, missing_score: float = 0.3
) -> Callable:
    """jit of `(variables, batch) -> (per-example numbers, suspicions, detections)`."""
    numbers = per_example(detector, heads)

    def step(variables: dict, batch: dict):
        per_image, outputs = numbers(variables, batch, jax.random.key(0))
        detections = detector.predict(outputs)
        found = suspects.box_suspicions(
            batch["boxes"], batch["labels"], batch["box_mask"], detections, match_iou, near_iou, missing_score
        )
        return per_image, found, detections._asdict()

    return jax.jit(step)


def _xywh(box: np.ndarray, scale: float) -> list[float]:
    x1, y1, x2, y2 = (float(v) / scale for v in box)
    return [x1, y1, x2 - x1, y2 - y1]


def run_pass(
    step: Callable, variables: dict, data: pipeline.Pipeline, batch_size: int, classes,
    on_batch: Callable[[list[dict], list[dict], list[dict]], None],
    log: Callable[[str], None] = print, every_s: float | None = None,
) -> None:  # fmt: skip
    """Streams every example of `data` once through `step`, handing each batch's records
    (images, annotated boxes, unexplained detections: `_records`) to `on_batch`; logs
    progress and an ETA every `every_s` seconds (console.PROGRESS_EVERY_S)."""
    progress = Progress("audit", len(data.source), every_s, log)
    stream = data.eval(batch_size)
    try:
        for b, local in enumerate(stream):
            inputs = jax.device_put(pipeline.model_inputs(local))
            numbers, sus, dets = jax.device_get(step(variables, inputs))
            on_batch(*_records(b * batch_size, local, numbers, sus, dets, classes))
            progress.update((b + 1) * batch_size)
    finally:
        stream.close()
    progress.finish()


def _records(first: int, local: dict, numbers: dict, sus: dict, dets: dict, classes) -> tuple[list, list, list]:
    """One batch's records in the dataset's ids and original pixels (boxes xywh): images
    (image_id, index, loss, <terms>, grad_norm), annotated boxes and unexplained detections
    (each with its image's loss, for the loss-only ranking)."""
    images, boxes, missing = [], [], []
    for i in np.nonzero(local["image_mask"])[0]:
        image_id, scale, index = int(local["image_id"][i]), float(local["scale"][i]), first + int(i)
        images.append({"image_id": image_id, "index": index, **{k: float(v[i]) for k, v in numbers.items()}})
        for g in np.nonzero(local["box_mask"][i])[0]:
            other = int(sus["other_class"][i, g])
            boxes.append({
                "image_id": image_id, "index": index, "box": int(g), "image_loss": images[-1]["loss"],
                "bbox": _xywh(local["boxes"][i, g], scale),
                "category_id": classes.category_id(int(local["labels"][i, g])),
                **{k: float(sus[k][i, g]) for k in (*suspects.KINDS, "best_iou", "score")},
                "other_category_id": classes.category_id(other) if other >= 0 else None,
            })  # fmt: skip
        for d in np.nonzero(sus["missing_box"][i] > 0)[0]:
            missing.append({
                "image_id": image_id, "index": index, "image_loss": images[-1]["loss"],
                "bbox": _xywh(dets["boxes"][i, d], scale),
                "category_id": classes.category_id(int(dets["classes"][i, d])),
                "missing_box": float(sus["missing_box"][i, d]),
            })  # fmt: skip
    return images, boxes, missing
