"""Box encodings: R-CNN deltas (RetinaNet, Faster R-CNN, SSD) and ltrb distances (FCOS/YOLO).

Encode turns matched ground-truth boxes into regression targets relative to anchors;
decode inverts it. Encoded targets feed the L1 family of losses, decoded boxes the
IoU family, so every detector can train with any localization loss.
"""

from __future__ import annotations

import math

import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

# As torchvision/detectron2: exp() of a larger width/height delta would overflow and
# no real box is 1000/16 times bigger than its anchor.
DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


def encode_deltas(
    anchors: ArrayLike, boxes: ArrayLike, weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0)
) -> Array:
    """R-CNN deltas (dx, dy, dw, dh) of xyxy `boxes` [..., 4] relative to `anchors` [..., 4].

    Zero-size boxes or anchors are floored at a tiny size so the log stays finite.
    """
    anchors = jnp.asarray(anchors, jnp.float32)
    boxes = jnp.asarray(boxes, jnp.float32)
    wx, wy, ww, wh = weights
    aw = jnp.maximum(anchors[..., 2] - anchors[..., 0], 1e-3)
    ah = jnp.maximum(anchors[..., 3] - anchors[..., 1], 1e-3)
    ax = anchors[..., 0] + 0.5 * aw
    ay = anchors[..., 1] + 0.5 * ah
    bw = jnp.maximum(boxes[..., 2] - boxes[..., 0], 1e-3)
    bh = jnp.maximum(boxes[..., 3] - boxes[..., 1], 1e-3)
    bx = boxes[..., 0] + 0.5 * bw
    by = boxes[..., 1] + 0.5 * bh
    return jnp.stack([wx * (bx - ax) / aw, wy * (by - ay) / ah, ww * jnp.log(bw / aw), wh * jnp.log(bh / ah)], axis=-1)


def decode_deltas(
    anchors: ArrayLike,
    deltas: ArrayLike,
    weights: tuple[float, float, float, float] = (1.0, 1.0, 1.0, 1.0),
    scale_clamp: float = DEFAULT_SCALE_CLAMP,
) -> Array:
    """Inverse of `encode_deltas`: anchors [..., 4] and deltas [..., 4] -> xyxy boxes [..., 4]."""
    anchors = jnp.asarray(anchors, jnp.float32)
    deltas = jnp.asarray(deltas, jnp.float32)
    wx, wy, ww, wh = weights
    aw = anchors[..., 2] - anchors[..., 0]
    ah = anchors[..., 3] - anchors[..., 1]
    ax = anchors[..., 0] + 0.5 * aw
    ay = anchors[..., 1] + 0.5 * ah
    dx, dy = deltas[..., 0] / wx, deltas[..., 1] / wy
    dw = jnp.minimum(deltas[..., 2] / ww, scale_clamp)
    dh = jnp.minimum(deltas[..., 3] / wh, scale_clamp)
    cx, cy = dx * aw + ax, dy * ah + ay
    w, h = jnp.exp(dw) * aw, jnp.exp(dh) * ah
    return jnp.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], axis=-1)


def encode_ltrb(points: ArrayLike, boxes: ArrayLike, stride: ArrayLike = 1.0) -> Array:
    """Distances (left, top, right, bottom) from points [..., 2] to box sides [..., 4], / stride."""
    points = jnp.asarray(points, jnp.float32)
    boxes = jnp.asarray(boxes, jnp.float32)
    stride = jnp.asarray(stride, jnp.float32)[..., None]
    ltrb = jnp.concatenate([points - boxes[..., :2], boxes[..., 2:] - points], axis=-1)
    return ltrb / stride


def decode_ltrb(points: ArrayLike, ltrb: ArrayLike, stride: ArrayLike = 1.0) -> Array:
    """Inverse of `encode_ltrb`: points [..., 2], distances [..., 4] -> xyxy boxes [..., 4]."""
    points = jnp.asarray(points, jnp.float32)
    ltrb = jnp.asarray(ltrb, jnp.float32) * jnp.asarray(stride, jnp.float32)[..., None]
    return jnp.concatenate([points - ltrb[..., :2], points + ltrb[..., 2:]], axis=-1)
