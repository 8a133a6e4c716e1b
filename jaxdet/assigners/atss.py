"""ATSS: adaptive training sample selection (Zhang et al. 2020, "Bridging the Gap Between
Anchor-based and Anchor-free Detection"), with static shapes.

For each ground-truth box: on every pyramid level the `topk` anchors whose centres are
nearest the box's centre are its candidates; its IoU threshold is the mean plus the
standard deviation of the candidates' IoUs (the sample standard deviation, n - 1, as
mmdetection's `ATSSAssigner` computes it with torch); a candidate is positive when its
IoU reaches the threshold and its centre lies inside the box (by more than 0.01 on every
side, as mmdetection). An anchor positive for several boxes takes the one it overlaps
most (the first on a tie); every other anchor is negative (ATSS has no ignore band).
Ties in centre distance keep the lower anchor index, as `jax.lax.top_k` does.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from jax import Array

from jaxdet import boxes as box_ops
from jaxdet.assigners.matching import NEGATIVE, POSITIVE, Assignment, _first_index_of

INSIDE_EPS = 0.01


def atss_assign(
    anchors: Array, level_sizes: Sequence[int], gt_boxes: Array, gt_mask: Array, topk: int = 9
) -> Assignment:
    """ATSS targets.

    Args:
      anchors: [A, 4] xyxy, level by level (the first `level_sizes[0]` are level 0's, ...).
      level_sizes: the number of anchors on each level (static; sum = A).
      gt_boxes: [M, 4] xyxy, padded; gt_mask: bool [M].
      topk: candidates per level and box (9 in the paper), at most the level's size.
    Returns an Assignment: matched [A], label [A] (POSITIVE / NEGATIVE), iou [A] (the IoU
    with the matched box at positives, 0 elsewhere).
    """
    num_anchors, num_gt = anchors.shape[0], gt_boxes.shape[0]
    if sum(level_sizes) != num_anchors:
        raise ValueError(f"level_sizes {tuple(level_sizes)} sum to {sum(level_sizes)}, not the {num_anchors} anchors")
    if num_gt == 0:
        zeros = jnp.zeros((num_anchors,), jnp.int32)
        return Assignment(zeros, jnp.full((num_anchors,), NEGATIVE, jnp.int32), jnp.zeros((num_anchors,)))
    iou = box_ops.box_iou(anchors, gt_boxes)  # [A, M]
    centers = 0.5 * (anchors[:, :2] + anchors[:, 2:])
    gt_centers = 0.5 * (gt_boxes[:, :2] + gt_boxes[:, 2:])
    distance = jnp.sqrt(jnp.sum((centers[:, None, :] - gt_centers[None, :, :]) ** 2, axis=-1))  # [A, M]
    candidate = jnp.zeros((num_gt, num_anchors), bool)
    start = 0
    for size in level_sizes:
        k = min(topk, size)
        if k:
            _, nearest = jax.lax.top_k(-distance[start : start + size].T, k)  # [M, k], lower index first on ties
            rows = jnp.broadcast_to(jnp.arange(num_gt)[:, None], nearest.shape)
            candidate = candidate.at[rows, nearest + start].set(True)
        start += size
    candidate = candidate.T  # [A, M]
    count = jnp.sum(candidate, axis=0)  # [M]
    mean = jnp.sum(jnp.where(candidate, iou, 0.0), axis=0) / count
    var = jnp.sum(jnp.where(candidate, (iou - mean[None, :]) ** 2, 0.0), axis=0) / jnp.maximum(count - 1, 1)
    threshold = mean + jnp.sqrt(var)
    px, py = centers[:, 0:1], centers[:, 1:2]
    sides = jnp.stack([px - gt_boxes[None, :, 0], py - gt_boxes[None, :, 1], gt_boxes[None, :, 2] - px,
                       gt_boxes[None, :, 3] - py], axis=-1)  # fmt: skip
    inside = jnp.min(sides, axis=-1) > INSIDE_EPS
    positive_for = candidate & (iou >= threshold[None, :]) & inside & gt_mask[None, :]  # [A, M]
    scored = jnp.where(positive_for, iou, -1.0)
    best = jnp.max(scored, axis=1)
    positive = jnp.any(positive_for, axis=1)
    matched = jnp.where(positive, _first_index_of(scored, best), 0)
    label = jnp.where(positive, POSITIVE, NEGATIVE).astype(jnp.int32)
    return Assignment(matched=matched.astype(jnp.int32), label=label, iou=jnp.where(positive, best, 0.0))
