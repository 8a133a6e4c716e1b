"""Detections from head outputs with static shapes: top-k, score threshold, (batched) NMS.

Everything here runs inside jit: the number of candidates and of detections is fixed,
and padding is carried by masks (or -1 indices), never by data-dependent shapes.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

from jaxdet import boxes as box_ops


class Detections(NamedTuple):
    """Fixed-size detections per image: boxes [..., D, 4] xyxy, scores [..., D],
    classes int32 [..., D], valid bool [..., D] (padding has valid False, score 0)."""

    boxes: Array
    scores: Array
    classes: Array
    valid: Array


def _greedy_keep(sorted_boxes: Array, sorted_valid: Array, iou_threshold: float) -> Array:
    """Greedy NMS over boxes already sorted by descending score: bool [N] kept.

    Box i is kept if valid and not suppressed by an earlier kept box with IoU > threshold
    (strictly greater, as torchvision). The IoU matrix is computed once; the loop is
    over N with O(N) vector work per step, which XLA keeps on-device.
    """
    n = sorted_boxes.shape[0]
    iou = box_ops.box_iou(sorted_boxes, sorted_boxes)
    later = jnp.arange(n)[None, :] > jnp.arange(n)[:, None]
    suppress = (iou > iou_threshold) & later  # [N, N]: i suppresses j > i

    def body(i, state):
        keep, suppressed = state
        keep_i = sorted_valid[i] & ~suppressed[i]
        suppressed = suppressed | (suppress[i] & keep_i)
        return keep.at[i].set(keep_i), suppressed

    keep0 = jnp.zeros((n,), bool)
    keep, _ = jax.lax.fori_loop(0, n, body, (keep0, jnp.zeros((n,), bool)))
    return keep


def nms(boxes: ArrayLike, scores: ArrayLike, iou_threshold: float, max_output_size: int) -> Array:
    """Non-maximum suppression with a static output size.

    Args:
      boxes: [N, 4] xyxy. scores: [N]. iou_threshold: suppress IoU > this.
      max_output_size: the fixed output length.
    Returns:
      int32 [max_output_size]: kept indices into `boxes` in descending score order,
      padded with -1; the same kept set as torchvision.ops.nms truncated to the size.
    """
    boxes = jnp.asarray(boxes, jnp.float32)
    scores = jnp.asarray(scores, jnp.float32)
    order = jnp.argsort(-scores, stable=True)
    keep = _greedy_keep(boxes[order], jnp.ones(order.shape, bool), iou_threshold)
    (pos,) = jnp.nonzero(keep, size=max_output_size, fill_value=-1)
    return jnp.where(pos >= 0, order[jnp.maximum(pos, 0)], -1).astype(jnp.int32)


def batched_nms(
    boxes: Array, scores: Array, classes: Array, valid: Array, iou_threshold: float, max_output_size: int
) -> Array:
    """Class-aware NMS (boxes of different classes never suppress each other).

    Args: boxes [N, 4], scores [N], classes int [N], valid bool [N].
    Returns: int32 [max_output_size] kept indices by descending score, -1 padded.
    """
    boxes, scores = jnp.asarray(boxes, jnp.float32), jnp.asarray(scores, jnp.float32)
    classes, valid = jnp.asarray(classes), jnp.asarray(valid, bool)
    # torchvision's trick: shift each class into its own disjoint region of the plane.
    span = jnp.max(jnp.where(valid[:, None], jnp.abs(boxes), 0.0)) + 1.0
    shifted = boxes + (classes.astype(jnp.float32) * span)[:, None]
    order = jnp.argsort(-jnp.where(valid, scores, -jnp.inf), stable=True)
    keep = _greedy_keep(shifted[order], valid[order], iou_threshold)
    (pos,) = jnp.nonzero(keep, size=max_output_size, fill_value=-1)
    return jnp.where(pos >= 0, order[jnp.maximum(pos, 0)], -1).astype(jnp.int32)


def select_detections(
    scores: Array,
    boxes: Array,
    *,
    pre_nms_topk: int,
    score_threshold: float,
    iou_threshold: float,
    max_detections: int,
    level_sizes: tuple[int, ...] | None = None,
    min_size: float = 0.0,
) -> Detections:
    """One image: per-class scores [A, C] and boxes [A, 4] (or class-specific [A, C, 4])
    -> `Detections` of size max_detections.

    Takes the top `pre_nms_topk` (anchor, class) pairs, over all anchors or, given
    `level_sizes` (anchors per pyramid level, in order, summing to A), per level as
    torchvision's RetinaNet does; drops those under the score threshold (and boxes with a
    side under `min_size` pixels, as torchvision's Faster R-CNN), runs class-aware NMS over
    all of them and keeps the best `max_detections`.
    """
    num_anchors, num_classes = scores.shape
    if level_sizes is not None and sum(level_sizes) != num_anchors:
        raise ValueError(f"level_sizes {level_sizes} sum to {sum(level_sizes)}, not the {num_anchors} anchors")
    top_scores, flat = [], []
    start = 0
    for n in level_sizes or (num_anchors,):
        t, f = jax.lax.top_k(scores[start : start + n].reshape(-1), min(pre_nms_topk, n * num_classes))
        top_scores.append(t)
        flat.append(f + start * num_classes)
        start += n
    top_scores, flat = jnp.concatenate(top_scores), jnp.concatenate(flat)
    anchor_idx = flat // num_classes
    cls = (flat % num_classes).astype(jnp.int32)
    cand_boxes = boxes[anchor_idx, cls] if boxes.ndim == 3 else boxes[anchor_idx]
    valid = top_scores > score_threshold
    if min_size > 0:
        valid &= jnp.all(cand_boxes[:, 2:] - cand_boxes[:, :2] >= min_size, axis=1)
    kept = batched_nms(cand_boxes, top_scores, cls, valid, iou_threshold, max_detections)
    ok = kept >= 0
    idx = jnp.maximum(kept, 0)
    return Detections(
        boxes=jnp.where(ok[:, None], cand_boxes[idx], 0.0),
        scores=jnp.where(ok, top_scores[idx], 0.0),
        classes=jnp.where(ok, cls[idx], 0),
        valid=ok,
    )
