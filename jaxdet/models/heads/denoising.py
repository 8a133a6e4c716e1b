"""Contrastive denoising queries for DETR-family training (DN-DETR, DINO; RT-DETR's form).

Besides its Q matching queries, the decoder gets G groups of noised ground truth. Each
group holds, for every ground-truth slot m (padded to M), a *positive* query (the box
moved by less than half its size, the label flipped with some probability) that must
reconstruct box m and its true class, and a *negative* query (moved by between one and
two half-sizes) that must predict "no object". Their targets are known, so they need no
matching; they give the decoder a stable, dense training signal from the first step.

Static shapes: Qd = G x 2 x M denoising queries, laid out group by group, positives then
negatives, slot by slot (index g * 2M + s * M + m). Padded slots make queries that no
other query attends to and that no loss covers.

The attention mask keeps the matching queries blind to the denoising ones (inference has
none) and each group blind to the others (a group would otherwise read the answer off
another group's nearby boxes).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array


class DenoisingQueries(NamedTuple):
    """labels int32 [B, Qd] (noised; num_classes on padded slots); boxes [B, Qd, 4] noised
    normalised (cx, cy, w, h); slot int32 [B, Qd] (the ground-truth index m); positive bool
    [B, Qd]; real bool [B, Qd] (False for padded slots)."""

    labels: Array
    boxes: Array
    slot: Array
    positive: Array
    real: Array


def make_queries(
    rng: Array, boxes: Array, labels: Array, mask: Array, groups: int, num_classes: int,
    label_noise: float = 0.5, box_noise: float = 1.0,
) -> DenoisingQueries:  # fmt: skip
    """Ground truth boxes [B, M, 4] normalised (cx, cy, w, h), labels int [B, M], mask bool
    [B, M] -> `DenoisingQueries` with Qd = groups x 2 x M.

    label_noise: a label is replaced by a uniformly random class with probability
    label_noise / 2 (RT-DETR's convention). box_noise: the corners move by up to
    box_noise x half the box's size (positives) or between 1x and 2x that (negatives).
    """
    b, m = labels.shape
    qd = groups * 2 * m
    slot = np.tile(np.arange(m), groups * 2)  # [Qd]
    positive = np.tile(np.repeat([True, False], m), groups)  # [Qd]
    real = jnp.take(mask, jnp.asarray(slot), axis=1)  # [B, Qd]
    gt_boxes = jnp.take(boxes, jnp.asarray(slot), axis=1)
    gt_labels = jnp.take(labels, jnp.asarray(slot), axis=1)

    k_flip, k_class, k_sign, k_part = jax.random.split(rng, 4)
    flip = jax.random.uniform(k_flip, (b, qd)) < label_noise * 0.5
    noised_labels = jnp.where(flip, jax.random.randint(k_class, (b, qd), 0, num_classes), gt_labels)
    noised_labels = jnp.where(real, noised_labels, num_classes).astype(jnp.int32)

    xyxy = jnp.concatenate([gt_boxes[..., :2] - gt_boxes[..., 2:] / 2, gt_boxes[..., :2] + gt_boxes[..., 2:] / 2], -1)
    half = jnp.tile(gt_boxes[..., 2:] / 2, (1, 1, 2)) * box_noise
    sign = jax.random.randint(k_sign, (b, qd, 4), 0, 2) * 2.0 - 1.0
    part = jax.random.uniform(k_part, (b, qd, 4)) + jnp.asarray(~positive, jnp.float32)[None, :, None]
    xyxy = jnp.clip(xyxy + sign * part * half, 0.0, 1.0)
    noised = jnp.concatenate([(xyxy[..., :2] + xyxy[..., 2:]) / 2, xyxy[..., 2:] - xyxy[..., :2]], -1)
    noised = jnp.where(real[..., None], noised, jnp.asarray([0.5, 0.5, 0.1, 0.1]))  # padded: any finite box
    return DenoisingQueries(
        noised_labels, noised, jnp.broadcast_to(jnp.asarray(slot, jnp.int32), (b, qd)),
        jnp.broadcast_to(jnp.asarray(positive), (b, qd)), real,
    )  # fmt: skip


def attention_mask(real: Array, groups: int, num_queries: int) -> Array:
    """Self-attention mask bool [B, 1, T, T] (True: may attend) over the decoder's
    T = Qd + Q queries, denoising first: matching queries see only matching queries; a
    denoising query sees its own group and the matching queries; padded denoising
    queries are seen by none but themselves."""
    b, qd = real.shape
    t = qd + num_queries
    group = np.full(t, -1)
    group[:qd] = np.arange(qd) // (qd // groups)
    allowed = (group[:, None] == group[None, :]) | (group[None, :] == -1)  # [T, T]: own group, or matching keys
    allowed &= ~((group[:, None] == -1) & (group[None, :] >= 0))  # matching queries never see denoising ones
    key_real = jnp.concatenate([real, jnp.ones((b, num_queries), bool)], 1)  # [B, T]
    mask = jnp.asarray(allowed)[None] & (key_real[:, None, :] | jnp.eye(t, dtype=bool)[None])
    return mask[:, None]
