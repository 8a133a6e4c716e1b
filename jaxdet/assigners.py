"""Label assignment with static shapes: every function sees padded ground truth + a mask.

Outputs are per-anchor arrays of fixed length, so they vectorise over the batch with
`jax.vmap` and compile once. Padded ground-truth boxes can never be matched.
"""

from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp
from jax import Array

from jaxdet import boxes as box_ops

POSITIVE, NEGATIVE, IGNORE = 1, 0, -1


class Assignment(NamedTuple):
    """Per-anchor assignment. matched: int32 [A] index into the ground truth (valid where
    label == POSITIVE); label: int32 [A] in {POSITIVE, NEGATIVE, IGNORE}; iou: float [A]
    overlap with the matched ground truth (0 for negatives)."""

    matched: Array
    label: Array
    iou: Array


def max_iou_assign(
    anchors: Array,
    gt_boxes: Array,
    gt_mask: Array,
    fg_iou: float = 0.5,
    bg_iou: float = 0.4,
    allow_low_quality: bool = True,
) -> Assignment:
    """Max-IoU matcher with an ignore band (RetinaNet / Faster R-CNN).

    Args:
      anchors: [A, 4] xyxy. gt_boxes: [M, 4] xyxy, padded. gt_mask: bool [M].
      fg_iou: IoU >= this is positive. bg_iou: IoU < this is negative; between is ignored.
      allow_low_quality: also make positive every anchor whose IoU equals the best IoU
        of some ground truth, so every box gets at least one anchor (as torchvision).
    """
    iou = box_ops.box_iou(anchors, gt_boxes)  # [A, M]
    iou = jnp.where(gt_mask[None, :], iou, -1.0)
    best_gt = jnp.argmax(iou, axis=1).astype(jnp.int32)
    best_iou = jnp.max(iou, axis=1) if gt_boxes.shape[0] else jnp.full(anchors.shape[:1], -1.0)
    label = jnp.where(best_iou >= fg_iou, POSITIVE, jnp.where(best_iou < bg_iou, NEGATIVE, IGNORE))
    if allow_low_quality and gt_boxes.shape[0]:
        best_per_gt = jnp.max(iou, axis=0)  # [M]
        is_best = (iou == best_per_gt[None, :]) & gt_mask[None, :] & (best_per_gt[None, :] > 0)
        label = jnp.where(jnp.any(is_best, axis=1), POSITIVE, label)
    matched_iou = jnp.where(label == POSITIVE, jnp.maximum(best_iou, 0.0), 0.0)
    return Assignment(matched=best_gt, label=label.astype(jnp.int32), iou=matched_iou)


ASSIGNERS = {"max_iou": max_iou_assign}
