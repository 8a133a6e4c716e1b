"""Detections from head outputs with static shapes: top-k, score threshold, class-aware NMS
(`jaxdet.ops.nms`).

Everything here runs inside jit: the number of candidates and of detections is fixed,
and padding is carried by masks (or -1 indices), never by data-dependent shapes.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

from jaxdet import boxes as box_ops
from jaxdet.ops import nms as nms_ops


class Detections(NamedTuple):
    """Fixed-size detections per image: boxes [..., D, 4] xyxy, scores [..., D],
    classes int32 [..., D], valid bool [..., D] (padding has valid False, score 0)."""

    boxes: Array
    scores: Array
    classes: Array
    valid: Array


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
    nms_form: str = "plain",
) -> Detections:
    """One image: per-class scores [A, C] and boxes [A, 4] (or class-specific [A, C, 4])
    -> `Detections` of size max_detections.

    Takes the top `pre_nms_topk` (anchor, class) pairs, over all anchors or, given
    `level_sizes` (anchors per pyramid level, in order, summing to A), per level as
    torchvision's RetinaNet does; drops those under the score threshold (and boxes with a
    side under `min_size` pixels, as torchvision's Faster R-CNN), runs class-aware NMS over
    all of them and keeps the best `max_detections`. `nms_form`: the kernel form of the NMS
    (`jaxdet.ops.nms.greedy_keep`; the same detections either way).
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
    kept = nms_ops.batched_nms(cand_boxes, top_scores, cls, valid, iou_threshold, max_detections, nms_form)
    return _gather(kept, cand_boxes, top_scores, cls)


def _gather(kept: Array, boxes: Array, scores: Array, classes: Array) -> Detections:
    """The candidates an NMS kept (indices [D], -1 padded) as Detections [D]."""
    ok = kept >= 0
    idx = jnp.maximum(kept, 0)
    return Detections(
        boxes=jnp.where(ok[:, None], boxes[idx], 0.0),
        scores=jnp.where(ok, scores[idx], 0.0),
        classes=jnp.where(ok, classes[idx], 0),
        valid=ok,
    )


def _fuse(kept: Detections, boxes: Array, scores: Array, classes: Array, valid: Array, iou_threshold: float,
          num_views: int) -> Detections:  # fmt: skip
    """One image's weighted box fusion (`merge`): candidates [N] onto the kept boxes [D]."""
    overlap = box_ops.box_iou(boxes, kept.boxes)  # [N, D]
    member = (overlap > iou_threshold) & (classes[:, None] == kept.classes[None]) & valid[:, None] & kept.valid[None]
    cluster = jnp.argmax(member, axis=1)  # the first (highest-scoring) kept box it joins
    joins = jax.nn.one_hot(cluster, kept.boxes.shape[0]) * jnp.any(member, axis=1)[:, None]  # [N, D]
    weight = joins * scores[:, None]
    total = jnp.sum(weight, axis=0)  # [D]
    # A sum of products, not a matrix product: exact float32 on every backend (no TF32).
    fused = jnp.sum(weight[:, :, None] * boxes[:, None, :], axis=0) / jnp.maximum(total, 1e-12)[:, None]
    count = jnp.sum(joins, axis=0)
    score = jnp.where(kept.valid, total / jnp.maximum(count, num_views), 0.0)
    order = jnp.argsort(-jnp.where(kept.valid, score, -1.0), stable=True)  # by fused score, as detections are
    out = Detections(jnp.where(kept.valid[:, None], fused, 0.0), score, kept.classes, kept.valid)
    return jax.tree_util.tree_map(lambda x: x[order], out)


def top_pairs(scores: Array, boxes: Array, max_detections: int, score_threshold: float, image_size: int) -> Detections:
    """Detections without NMS (set predictors, heatmap peaks): the `max_detections` best
    (candidate, class) pairs of scores [B, N, C] over all candidates, each with its
    candidate's box from boxes [B, N, 4] (clipped to the image); valid above the threshold."""
    b, n, c = scores.shape
    top, flat = jax.lax.top_k(scores.reshape(b, n * c), min(max_detections, n * c))
    picked = jnp.take_along_axis(boxes, (flat // c)[..., None], axis=1)
    picked = jnp.clip(picked, 0.0, float(image_size))
    valid = top > score_threshold
    return Detections(
        boxes=jnp.where(valid[..., None], picked, 0.0),
        scores=jnp.where(valid, top, 0.0),
        classes=jnp.where(valid, flat % c, 0).astype(jnp.int32),
        valid=valid,
    )


def hflip(detections: Detections, width: float) -> Detections:
    """Detections of a left-right mirrored image mapped back onto the image (width pixels)."""
    b = detections.boxes
    boxes = jnp.stack([width - b[..., 2], b[..., 1], width - b[..., 0], b[..., 3]], axis=-1)
    return detections._replace(boxes=jnp.where(detections.valid[..., None], boxes, 0.0))


def rescale(detections: Detections, factor: float) -> Detections:
    """Detections with their boxes multiplied by `factor` (a view at another canvas size
    mapped onto the original canvas)."""
    if factor == 1.0:
        return detections
    return detections._replace(boxes=detections.boxes * factor)


MERGES = ("nms", "wbf")


def merge(
    views: list[Detections], iou_threshold: float, max_detections: int, nms_form: str = "plain", method: str = "nms"
) -> Detections:
    """Test-time augmentation: the detections of several views of the same images [B, D_i]
    (boxes already on the original image) -> [B, max_detections].

    "nms": class-aware NMS over their union (the best box of a cluster stays, as one view
    would report it). "wbf": weighted box fusion (Solovyev et al. 2019) with the NMS's
    clusters: each box joins the highest-scoring kept box of its class it overlaps by more
    than `iou_threshold` (the one that suppressed it); a cluster's box is the score-weighted
    mean of its members' and its score the sum of theirs over max(members, views) (the
    reference's "avg" score; the reference matches boxes against the growing fused box,
    here against the cluster's best box, so that the shapes stay static).
    """
    if method not in MERGES:
        raise ValueError(f"unknown TTA merge {method!r}; valid: {MERGES}")
    boxes = jnp.concatenate([v.boxes for v in views], axis=1)
    scores = jnp.concatenate([v.scores for v in views], axis=1)
    classes = jnp.concatenate([v.classes for v in views], axis=1)
    valid = jnp.concatenate([v.valid for v in views], axis=1)

    def one(b, s, c, v):
        kept = _gather(nms_ops.batched_nms(b, s, c, v, iou_threshold, max_detections, nms_form), b, s, c)
        return kept if method == "nms" else _fuse(kept, b, s, c, v, iou_threshold, len(views))

    return jax.vmap(one)(boxes, scores, classes, valid)
