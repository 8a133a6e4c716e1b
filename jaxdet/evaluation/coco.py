"""COCO box metrics with faster-coco-eval (numerically the same as pycocotools)."""

from __future__ import annotations

import contextlib
import copy
import io

import numpy as np

from jaxdet.errors import ConfigError

COCO_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


def check_metric(metric: str, field: str = "config.train.best_metric") -> None:
    """ConfigError unless `metric` names what an evaluation reports: a COCO key, a validation
    loss (loss_<term>) or a class's AP (AP/<class name>)."""
    if not (metric in COCO_KEYS or metric.startswith(("loss_", "AP/"))):
        raise ConfigError(
            f"{field}={metric!r}: use one of {COCO_KEYS}, a validation loss "
            "(loss_<term>, e.g. loss_localization, or loss_roi_box for Faster R-CNN) or AP/<class name>"
        )


def evaluate_coco(ground_truth: dict, detections: list[dict]) -> dict[str, float]:
    """COCO bbox metrics (see `evaluate_coco_detailed`)."""
    return evaluate_coco_detailed(ground_truth, detections)[0]


def evaluate_coco_detailed(ground_truth: dict, detections: list[dict]) -> tuple[dict[str, float], np.ndarray]:
    """COCO bbox metrics and the accumulated precision array.

    Args:
      ground_truth: COCO-format dict with `images`, `annotations` (bbox [x, y, w, h],
        area, iscrowd) and `categories`.
      detections: COCO results format: dicts with `image_id`, `category_id`,
        `bbox` [x, y, w, h] and `score`.
    Returns:
      ({key: float} for COCO_KEYS, -1.0 where undefined, as pycocotools;
       precision [10 IoUs, 101 recalls, categories (by id), 4 areas, 3 max-dets], -1 = no data).
    """
    from faster_coco_eval import COCO, COCOeval_faster

    gt = copy.deepcopy(ground_truth)
    gt.setdefault("info", {})
    gt.setdefault("licenses", [])
    known_images = {img["id"] for img in gt["images"]}
    known_cats = {c["id"] for c in gt["categories"]}
    for det in detections:
        if det["image_id"] not in known_images:
            raise ValueError(f"detection for image_id {det['image_id']} which is not in the ground truth")
        if det["category_id"] not in known_cats:
            raise ValueError(f"detection with category_id {det['category_id']} which is not in the ground truth")
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO(gt)
        coco_dt = coco_gt.loadRes(copy.deepcopy(detections))
        ev = COCOeval_faster(coco_gt, coco_dt, "bbox", print_function=lambda *a, **k: None)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = np.asarray(ev.stats[:12], np.float64)
    return {k: float(v) for k, v in zip(COCO_KEYS, stats)}, np.asarray(ev.eval["precision"])
