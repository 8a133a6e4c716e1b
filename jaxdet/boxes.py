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


def _safe_div(num: Array, den: Array) -> Array:
    """num / den with 0/0 -> 0 and a gradient that stays finite where den == 0."""
    ok = den > 0
    return jnp.where(ok, num / jnp.where(ok, den, 1.0), 0.0)


def _div(num: Array, den: Array, eps: float | None) -> Array:
    """torchvision's two divisions: its box ops' num / den (guarded: 0 where den == 0) when
    `eps` is None, its IoU losses' num / (den + eps) otherwise."""
    return _safe_div(num, den) if eps is None else num / (den + eps)


def _iou_union(a: Array, b: Array, eps: float | None) -> tuple[Array, Array]:
    """IoU and union of broadcastable box arrays [..., 4] (float32)."""
    wh = jnp.minimum(a[..., 2:], b[..., 2:]) - jnp.maximum(a[..., :2], b[..., :2])
    # An intersection only where both sides are positive (torchvision's losses mask it so;
    # its box ops clamp each side at 0: the same value).
    inter = jnp.where((wh[..., 0] > 0) & (wh[..., 1] > 0), wh[..., 0] * wh[..., 1], 0.0)
    union = box_area(a) + box_area(b) - inter
    return _div(inter, union, eps), union


def _enclosing_sides(a: Array, b: Array, eps: float | None) -> Array:
    """Width and height [..., 2] of the smallest box enclosing both; torchvision's box ops
    clamp them at 0 (they differ from its losses' only for inverted boxes)."""
    wh = jnp.maximum(a[..., 2:], b[..., 2:]) - jnp.minimum(a[..., :2], b[..., :2])
    return jnp.clip(wh, 0.0) if eps is None else wh


def _float(a: ArrayLike, b: ArrayLike) -> tuple[Array, Array]:
    return jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)


# The elementwise IoU family: paired boxes [..., 4], [..., 4] -> [...]. With eps=None the
# values of torchvision.ops' pairwise functions (box_iou, generalized_box_iou, ...); with
# eps (1e-7: EPS) those inside its IoU losses (generalized_box_iou_loss = 1 - elementwise_giou
# with eps, ...), which losses/functions.py and the task-aligned assigner use.


def elementwise_iou(a: ArrayLike, b: ArrayLike, eps: float | None = None) -> Array:
    """IoU of paired boxes; 0 where the union is empty (eps None)."""
    return _iou_union(*_float(a, b), eps)[0]


def elementwise_giou(a: ArrayLike, b: ArrayLike, eps: float | None = None) -> Array:
    """Generalized IoU of paired boxes (torchvision's formula)."""
    a, b = _float(a, b)
    iou, union = _iou_union(a, b, eps)
    wh = _enclosing_sides(a, b, eps)
    hull = wh[..., 0] * wh[..., 1]
    return iou - _div(hull - union, hull, eps)


def _diou_iou(a: Array, b: Array, eps: float | None) -> tuple[Array, Array]:
    """(DIoU, IoU) of paired float32 boxes: IoU - squared centre distance / squared diagonal
    of the enclosing box (+eps; EPS for the box ops, as torchvision)."""
    iou, _ = _iou_union(a, b, eps)
    diag2 = jnp.sum(_enclosing_sides(a, b, eps) ** 2, axis=-1) + (EPS if eps is None else eps)
    dist2 = jnp.sum((0.5 * (a[..., :2] + a[..., 2:]) - 0.5 * (b[..., :2] + b[..., 2:])) ** 2, axis=-1)
    return iou - dist2 / diag2, iou


def elementwise_diou(a: ArrayLike, b: ArrayLike, eps: float | None = None) -> Array:
    """Distance IoU of paired boxes (torchvision's formula)."""
    return _diou_iou(*_float(a, b), eps)[0]


def elementwise_ciou(a: ArrayLike, b: ArrayLike, eps: float | None = None) -> Array:
    """Complete IoU of paired boxes (torchvision's formula): DIoU - alpha v, with v =
    4/pi^2 (atan(w_b/h_b) - atan(w_a/h_a))^2 and alpha = v / (1 - IoU + v + eps)."""
    a, b = _float(a, b)
    e = EPS if eps is None else eps
    diou, iou = _diou_iou(a, b, eps)
    wa, ha = a[..., 2] - a[..., 0], a[..., 3] - a[..., 1]
    wb, hb = b[..., 2] - b[..., 0], b[..., 3] - b[..., 1]
    # atan(w / (h + eps)): torchvision's loss form; the eps keeps zero-height boxes finite.
    v = (4.0 / jnp.pi**2) * (jnp.arctan(wb / (hb + e)) - jnp.arctan(wa / (ha + e))) ** 2
    # torchvision computes alpha without gradient (it is a weight, not a target).
    alpha = jax.lax.stop_gradient(v / (1.0 - iou + v + e))
    return diou - alpha * v


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
