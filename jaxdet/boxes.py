"""Box formats, areas and pairwise overlaps (IoU, GIoU, DIoU, CIoU).

All boxes are `xyxy` in pixels unless a name says otherwise. The pairwise functions
return the same values as the torchvision.ops functions of the same names, and accept
numpy or jax arrays. Degenerate boxes (zero area, touching, disjoint, identical) give
finite values: every division is guarded so gradients stay finite too.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

# torchvision uses eps=1e-7 in its DIoU/CIoU losses; we guard every division with it.
EPS = 1e-7


def box_area(boxes: ArrayLike) -> Array:
    """Area of xyxy boxes [..., 4] -> [...]; inverted boxes give negative area, as torchvision."""
    boxes = jnp.asarray(boxes)
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def xyxy_to_cxcywh(boxes: ArrayLike) -> Array:
    """[..., 4] xyxy -> [..., 4] (center x, center y, width, height)."""
    boxes = jnp.asarray(boxes)
    wh = boxes[..., 2:] - boxes[..., :2]
    return jnp.concatenate([boxes[..., :2] + 0.5 * wh, wh], axis=-1)


def cxcywh_to_xyxy(boxes: ArrayLike) -> Array:
    """[..., 4] (cx, cy, w, h) -> [..., 4] xyxy."""
    boxes = jnp.asarray(boxes)
    half = 0.5 * boxes[..., 2:]
    return jnp.concatenate([boxes[..., :2] - half, boxes[..., :2] + half], axis=-1)


def clip_boxes(boxes: ArrayLike, height: float, width: float) -> Array:
    """Clips xyxy boxes [..., 4] to the image [0, width] x [0, height]."""
    boxes = jnp.asarray(boxes)
    x = jnp.clip(boxes[..., 0::2], 0.0, width)
    y = jnp.clip(boxes[..., 1::2], 0.0, height)
    return jnp.stack([x[..., 0], y[..., 0], x[..., 1], y[..., 1]], axis=-1)


def _inter_union(a: Array, b: Array) -> tuple[Array, Array]:
    """Intersection and union of broadcastable box arrays [..., 4]."""
    lt = jnp.maximum(a[..., :2], b[..., :2])
    rb = jnp.minimum(a[..., 2:], b[..., 2:])
    wh = jnp.clip(rb - lt, 0.0)
    inter = wh[..., 0] * wh[..., 1]
    union = box_area(a) + box_area(b) - inter
    return inter, union


def _safe_div(num: Array, den: Array) -> Array:
    """num / den with 0/0 -> 0 and a gradient that stays finite where den == 0."""
    ok = den > 0
    return jnp.where(ok, num / jnp.where(ok, den, 1.0), 0.0)


def elementwise_iou(a: ArrayLike, b: ArrayLike) -> Array:
    """IoU of paired boxes [..., 4], [..., 4] -> [...]; 0 where the union is empty."""
    a, b = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
    inter, union = _inter_union(a, b)
    return _safe_div(inter, union)


def elementwise_giou(a: ArrayLike, b: ArrayLike) -> Array:
    """Generalized IoU of paired boxes [..., 4] -> [...] (torchvision's formula)."""
    a, b = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
    inter, union = _inter_union(a, b)
    iou = _safe_div(inter, union)
    lt = jnp.minimum(a[..., :2], b[..., :2])
    rb = jnp.maximum(a[..., 2:], b[..., 2:])
    wh = jnp.clip(rb - lt, 0.0)
    hull = wh[..., 0] * wh[..., 1]
    return iou - _safe_div(hull - union, hull)


def _center_distance_terms(a: Array, b: Array) -> tuple[Array, Array]:
    """Squared center distance and squared diagonal of the enclosing box (+EPS), [...]."""
    lt = jnp.minimum(a[..., :2], b[..., :2])
    rb = jnp.maximum(a[..., 2:], b[..., 2:])
    diag2 = jnp.sum(jnp.clip(rb - lt, 0.0) ** 2, axis=-1) + EPS
    ca = 0.5 * (a[..., :2] + a[..., 2:])
    cb = 0.5 * (b[..., :2] + b[..., 2:])
    dist2 = jnp.sum((ca - cb) ** 2, axis=-1)
    return dist2, diag2


def elementwise_diou(a: ArrayLike, b: ArrayLike) -> Array:
    """Distance IoU of paired boxes [..., 4] -> [...] (torchvision's formula, eps=1e-7)."""
    a, b = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
    iou = elementwise_iou(a, b)
    dist2, diag2 = _center_distance_terms(a, b)
    return iou - dist2 / diag2


def _aspect_term(a: Array, b: Array) -> Array:
    """CIoU's v = 4/pi^2 (atan(w_b/h_b) - atan(w_a/h_a))^2."""
    wa, ha = a[..., 2] - a[..., 0], a[..., 3] - a[..., 1]
    wb, hb = b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]
    # torchvision's atan(w / h), with eps so zero-height boxes keep finite values and gradients.
    return (4.0 / jnp.pi**2) * (jnp.arctan(wb / (hb + EPS)) - jnp.arctan(wa / (ha + EPS))) ** 2


def elementwise_ciou(a: ArrayLike, b: ArrayLike) -> Array:
    """Complete IoU of paired boxes [..., 4] -> [...] (torchvision's formula, eps=1e-7)."""
    a, b = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
    iou = elementwise_iou(a, b)
    dist2, diag2 = _center_distance_terms(a, b)
    v = _aspect_term(a, b)
    # torchvision computes alpha without gradient (it is a weight, not a target).
    alpha = jax.lax.stop_gradient(v / (1.0 - iou + v + EPS))
    return iou - dist2 / diag2 - alpha * v


def _pairwise(fn, boxes1: ArrayLike, boxes2: ArrayLike) -> Array:
    b1 = jnp.asarray(boxes1, jnp.float32)[:, None, :]
    b2 = jnp.asarray(boxes2, jnp.float32)[None, :, :]
    return fn(b1, b2)


def box_iou(boxes1: ArrayLike, boxes2: ArrayLike) -> Array:
    """Pairwise IoU [N, 4], [M, 4] -> [N, M], as torchvision.ops.box_iou."""
    return _pairwise(elementwise_iou, boxes1, boxes2)


def generalized_box_iou(boxes1: ArrayLike, boxes2: ArrayLike) -> Array:
    """Pairwise GIoU [N, 4], [M, 4] -> [N, M], as torchvision.ops.generalized_box_iou."""
    return _pairwise(elementwise_giou, boxes1, boxes2)


def distance_box_iou(boxes1: ArrayLike, boxes2: ArrayLike) -> Array:
    """Pairwise DIoU [N, 4], [M, 4] -> [N, M], as torchvision.ops.distance_box_iou."""
    return _pairwise(elementwise_diou, boxes1, boxes2)


def complete_box_iou(boxes1: ArrayLike, boxes2: ArrayLike) -> Array:
    """Pairwise CIoU [N, 4], [M, 4] -> [N, M], as torchvision.ops.complete_box_iou."""
    return _pairwise(elementwise_ciou, boxes1, boxes2)
