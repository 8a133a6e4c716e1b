"""The loss table: name -> pure elementwise function, by family.

Raw functions follow torchvision.ops names and semantics with reduction='none'.
The `LOSSES` table wraps them in the uniform per-anchor interfaces detectors call:

- classification: `fn(logits [N, K], labels int32 [N], quality [N]) -> [N]`, where
  label == num_classes means background. Sigmoid losses take K = num_classes logits,
  softmax losses K = num_classes + 1 (background last); `ClassificationLoss.activation`
  tells the detector which head width and score function to use.
- localization: `fn(pred [N, 4], target [N, 4]) -> [N]`, on encoded offsets
  (`space == "encoded"`) or on decoded xyxy boxes (`space == "boxes"`).
- confidence: `fn(logits [N], targets [N]) -> [N]`.

Callers apply masks and normalisers. All functions give finite values and gradients
on degenerate input (zero-area, identical, disjoint boxes; saturated logits).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import Array

from jaxdet.boxes import EPS
from jaxdet.errors import ConfigError

# ----------------------------------------------------------------------------- raw


def sigmoid_binary_cross_entropy(logits: Array, targets: Array) -> Array:
    """Elementwise BCE on logits, stable for |logits| of any size: [...] -> [...]."""
    logits = jnp.asarray(logits, jnp.float32)
    return jnp.maximum(logits, 0.0) - logits * targets + jnp.log1p(jnp.exp(-jnp.abs(logits)))


def sigmoid_focal_loss(logits: Array, targets: Array, alpha: float = 0.25, gamma: float = 2.0) -> Array:
    """torchvision.ops.sigmoid_focal_loss, reduction='none'; alpha < 0 disables weighting."""
    logits = jnp.asarray(logits, jnp.float32)
    p = jax.nn.sigmoid(logits)
    ce = sigmoid_binary_cross_entropy(logits, targets)
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss = loss * (alpha * targets + (1 - alpha) * (1 - targets))
    return loss


def varifocal_loss(logits: Array, targets: Array, alpha: float = 0.75, gamma: float = 2.0) -> Array:
    """Varifocal loss (Zhang et al. 2021), elementwise: [...] -> [...].

    `targets` is the IoU-aware classification score q: q > 0 at positives (weighted by
    q), 0 at negatives (down-weighted by alpha * p^gamma), as mmdetection's
    iou_weighted=True form.
    """
    logits = jnp.asarray(logits, jnp.float32)
    p = jax.nn.sigmoid(logits)
    weight = jnp.where(targets > 0, targets, alpha * jnp.abs(p - targets) ** gamma)
    return sigmoid_binary_cross_entropy(logits, targets) * weight


def quality_focal_loss(logits: Array, targets: Array, beta: float = 2.0) -> Array:
    """Quality focal loss (Li et al. 2020, GFL), elementwise: BCE(logits, y) * |y - sigmoid|^beta."""
    logits = jnp.asarray(logits, jnp.float32)
    return sigmoid_binary_cross_entropy(logits, targets) * jnp.abs(targets - jax.nn.sigmoid(logits)) ** beta


def softmax_cross_entropy(logits: Array, labels: Array, label_smoothing: float = 0.0) -> Array:
    """Cross-entropy of integer `labels` [...] against `logits` [..., K] -> [...]."""
    logits = jnp.asarray(logits, jnp.float32)
    logp = jax.nn.log_softmax(logits, axis=-1)
    k = logits.shape[-1]
    target = jax.nn.one_hot(labels, k) * (1 - label_smoothing) + label_smoothing / k
    return -jnp.sum(target * logp, axis=-1)


def smooth_l1_loss(pred: Array, target: Array, beta: float = 1.0) -> Array:
    """Elementwise smooth L1 as torch.nn.functional.smooth_l1_loss (beta < 1e-5 is L1)."""
    diff = jnp.abs(jnp.asarray(pred, jnp.float32) - target)
    if beta < 1e-5:
        return diff
    return jnp.where(diff < beta, 0.5 * diff**2 / beta, diff - 0.5 * beta)


def l1_loss(pred: Array, target: Array) -> Array:
    """Elementwise absolute error."""
    return jnp.abs(jnp.asarray(pred, jnp.float32) - target)


def l2_loss(pred: Array, target: Array) -> Array:
    """Elementwise squared error (torch's mse_loss, reduction='none')."""
    return (jnp.asarray(pred, jnp.float32) - target) ** 2


def _iou_parts(b1: Array, b2: Array, eps: float) -> tuple[Array, Array, Array]:
    """torchvision's _loss_inter_union plus IoU with eps: (iou, union, enclosing box corners)."""
    b1 = jnp.asarray(b1, jnp.float32)
    b2 = jnp.asarray(b2, jnp.float32)
    x1 = jnp.maximum(b1[..., 0], b2[..., 0])
    y1 = jnp.maximum(b1[..., 1], b2[..., 1])
    x2 = jnp.minimum(b1[..., 2], b2[..., 2])
    y2 = jnp.minimum(b1[..., 3], b2[..., 3])
    inter = jnp.where((x2 > x1) & (y2 > y1), (x2 - x1) * (y2 - y1), 0.0)
    union = (
        (b1[..., 2] - b1[..., 0]) * (b1[..., 3] - b1[..., 1])
        + (b2[..., 2] - b2[..., 0]) * (b2[..., 3] - b2[..., 1])
        - inter
    )
    iou = inter / (union + eps)
    return iou, union, (b1, b2)


def iou_loss(boxes1: Array, boxes2: Array, eps: float = EPS) -> Array:
    """1 - IoU of paired xyxy boxes [..., 4] -> [...]."""
    iou, _, _ = _iou_parts(boxes1, boxes2, eps)
    return 1 - iou


def giou_loss(boxes1: Array, boxes2: Array, eps: float = EPS) -> Array:
    """torchvision.ops.generalized_box_iou_loss, reduction='none'."""
    iou, union, (b1, b2) = _iou_parts(boxes1, boxes2, eps)
    xc1 = jnp.minimum(b1[..., 0], b2[..., 0])
    yc1 = jnp.minimum(b1[..., 1], b2[..., 1])
    xc2 = jnp.maximum(b1[..., 2], b2[..., 2])
    yc2 = jnp.maximum(b1[..., 3], b2[..., 3])
    area_c = (xc2 - xc1) * (yc2 - yc1)
    return 1 - (iou - (area_c - union) / (area_c + eps))


def _diou_parts(b1: Array, b2: Array, eps: float) -> tuple[Array, Array]:
    iou, _, (b1, b2) = _iou_parts(b1, b2, eps)
    xc1 = jnp.minimum(b1[..., 0], b2[..., 0])
    yc1 = jnp.minimum(b1[..., 1], b2[..., 1])
    xc2 = jnp.maximum(b1[..., 2], b2[..., 2])
    yc2 = jnp.maximum(b1[..., 3], b2[..., 3])
    diag2 = (xc2 - xc1) ** 2 + (yc2 - yc1) ** 2 + eps
    dx = 0.5 * (b1[..., 0] + b1[..., 2]) - 0.5 * (b2[..., 0] + b2[..., 2])
    dy = 0.5 * (b1[..., 1] + b1[..., 3]) - 0.5 * (b2[..., 1] + b2[..., 3])
    return 1 - iou + (dx**2 + dy**2) / diag2, iou


def diou_loss(boxes1: Array, boxes2: Array, eps: float = EPS) -> Array:
    """torchvision.ops.distance_box_iou_loss, reduction='none'."""
    return _diou_parts(boxes1, boxes2, eps)[0]


def ciou_loss(boxes1: Array, boxes2: Array, eps: float = EPS) -> Array:
    """torchvision.ops.complete_box_iou_loss, reduction='none'."""
    b1 = jnp.asarray(boxes1, jnp.float32)
    b2 = jnp.asarray(boxes2, jnp.float32)
    diou, iou = _diou_parts(b1, b2, eps)
    w1, h1 = b1[..., 2] - b1[..., 0], b1[..., 3] - b1[..., 1]
    w2, h2 = b2[..., 2] - b2[..., 0], b2[..., 3] - b2[..., 1]
    # atan(w / (h + eps)) is torchvision's; the eps keeps zero-height boxes finite.
    v = (4 / jnp.pi**2) * (jnp.arctan(w2 / (h2 + eps)) - jnp.arctan(w1 / (h1 + eps))) ** 2
    alpha = jax.lax.stop_gradient(v / (1 - iou + v + eps))
    return diou + alpha * v


# ------------------------------------------------------------------ the LOSSES table


@dataclasses.dataclass(frozen=True)
class ClassificationLoss:
    """`fn(logits [N, K], labels [N], quality [N]) -> [N]`; see the module docstring."""

    fn: Callable[..., Array]
    activation: str  # "sigmoid" or "softmax"
    # True: the positive's target is a quality score (IoU of the predicted box with its
    # ground truth, under stop_gradient) instead of 1.
    iou_aware: bool = False
    hyper: tuple[str, ...] = ()  # config.loss fields passed to fn as keyword arguments


@dataclasses.dataclass(frozen=True)
class LocalizationLoss:
    """`fn(pred [N, 4], target [N, 4]) -> [N]` in `space` "encoded" or "boxes"."""

    fn: Callable[..., Array]
    space: str
    hyper: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class ConfidenceLoss:
    """`fn(logits [N], targets [N]) -> [N]`; `target` says what the detector regresses:
    "objectness" (1 at positives, 0 at negatives), "iou" (the IoU of the predicted box
    with its ground truth under stop_gradient at positives, 0 at negatives) or "none"."""

    fn: Callable[..., Array]
    target: str
    hyper: tuple[str, ...] = ()


def _sigmoid_targets(logits: Array, labels: Array, quality: Array) -> Array:
    """One-hot [N, C] of `labels` (== C is background: all zeros), scaled by `quality`."""
    num_classes = logits.shape[-1]
    return jax.nn.one_hot(labels, num_classes) * quality[..., None]


def _focal(logits: Array, labels: Array, quality: Array, focal_alpha: float = 0.25, focal_gamma: float = 2.0) -> Array:
    t = _sigmoid_targets(logits, labels, quality)
    return jnp.sum(sigmoid_focal_loss(logits, t, focal_alpha, focal_gamma), axis=-1)


def _bce(logits: Array, labels: Array, quality: Array) -> Array:
    return jnp.sum(sigmoid_binary_cross_entropy(logits, _sigmoid_targets(logits, labels, quality)), axis=-1)


def _varifocal(
    logits: Array, labels: Array, quality: Array, varifocal_alpha: float = 0.75, focal_gamma: float = 2.0
) -> Array:
    t = _sigmoid_targets(logits, labels, quality)
    return jnp.sum(varifocal_loss(logits, t, varifocal_alpha, focal_gamma), axis=-1)


def _qfl(logits: Array, labels: Array, quality: Array, focal_gamma: float = 2.0) -> Array:
    t = _sigmoid_targets(logits, labels, quality)
    return jnp.sum(quality_focal_loss(logits, t, focal_gamma), axis=-1)


def _softmax_ce(logits: Array, labels: Array, quality: Array, label_smoothing: float = 0.0) -> Array:
    del quality  # Hard labels only.
    return softmax_cross_entropy(logits, labels, label_smoothing)


def _smooth_l1(pred: Array, target: Array, smooth_l1_beta: float = 1 / 9) -> Array:
    return jnp.sum(smooth_l1_loss(pred, target, smooth_l1_beta), axis=-1)


def _l1(pred: Array, target: Array) -> Array:
    return jnp.sum(l1_loss(pred, target), axis=-1)


def _l2(pred: Array, target: Array) -> Array:
    return jnp.sum(l2_loss(pred, target), axis=-1)


CLASSIFICATION_LOSSES: dict[str, ClassificationLoss] = {
    "sigmoid_focal": ClassificationLoss(_focal, "sigmoid", hyper=("focal_alpha", "focal_gamma")),
    "sigmoid_binary_cross_entropy": ClassificationLoss(_bce, "sigmoid"),
    "softmax_cross_entropy": ClassificationLoss(_softmax_ce, "softmax", hyper=("label_smoothing",)),
    "varifocal": ClassificationLoss(_varifocal, "sigmoid", iou_aware=True, hyper=("varifocal_alpha", "focal_gamma")),
    "quality_focal": ClassificationLoss(_qfl, "sigmoid", iou_aware=True, hyper=("focal_gamma",)),
}

LOCALIZATION_LOSSES: dict[str, LocalizationLoss] = {
    # Encoded offsets (R-CNN deltas / ltrb distances): summed over the 4 coordinates.
    "smooth_l1": LocalizationLoss(_smooth_l1, "encoded", hyper=("smooth_l1_beta",)),
    "l1": LocalizationLoss(_l1, "encoded"),
    "l2": LocalizationLoss(_l2, "encoded"),
    # Decoded xyxy boxes.
    "iou": LocalizationLoss(iou_loss, "boxes"),
    "giou": LocalizationLoss(giou_loss, "boxes"),
    "diou": LocalizationLoss(diou_loss, "boxes"),
    "ciou": LocalizationLoss(ciou_loss, "boxes"),
}


def _no_confidence(logits: Array, targets: Array) -> Array:
    return jnp.zeros_like(jnp.asarray(logits, jnp.float32))


def _confidence_varifocal(
    logits: Array, targets: Array, varifocal_alpha: float = 0.75, focal_gamma: float = 2.0
) -> Array:
    return varifocal_loss(logits, targets, varifocal_alpha, focal_gamma)


CONFIDENCE_LOSSES: dict[str, ConfidenceLoss] = {
    "none": ConfidenceLoss(_no_confidence, "none"),
    "sigmoid_binary_cross_entropy": ConfidenceLoss(sigmoid_binary_cross_entropy, "objectness"),
    "iou_binary_cross_entropy": ConfidenceLoss(sigmoid_binary_cross_entropy, "iou"),
    "iou_varifocal": ConfidenceLoss(_confidence_varifocal, "iou", hyper=("varifocal_alpha", "focal_gamma")),
}

LOSSES = {
    "classification": CLASSIFICATION_LOSSES,
    "localization": LOCALIZATION_LOSSES,
    "confidence": CONFIDENCE_LOSSES,
}


def get_loss(family: str, name: str):
    """Looks up `LOSSES[family][name]`, failing with the list of valid names."""
    if family not in LOSSES:
        raise ConfigError(f"unknown loss family {family!r}; valid families: {sorted(LOSSES)}")
    table = LOSSES[family]
    if name not in table:
        raise ConfigError(f"unknown {family} loss {name!r} (config.loss.{family}); valid names: {sorted(table)}")
    return table[name]


def build_loss(family: str, name: str, loss_config=None):
    """`LOSSES[family][name]` with its hyper-parameters bound from `loss_config` (config.loss).

    Fields absent from `loss_config` keep the function's defaults.
    """
    entry = get_loss(family, name)
    kwargs = {h: loss_config[h] for h in entry.hyper if loss_config is not None and h in loss_config}
    if not kwargs:
        return entry
    return dataclasses.replace(entry, fn=functools.partial(entry.fn, **kwargs))
