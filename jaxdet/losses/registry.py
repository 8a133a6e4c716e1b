"""The loss table: name -> a loss in the uniform per-anchor interface of its family.

- classification: `fn(logits [N, K], labels int32 [N], quality [N]) -> [N]`, where
  label == num_classes means background. Sigmoid losses take K = num_classes logits,
  softmax losses K = num_classes + 1 (background last); `ClassificationLoss.activation`
  tells the detector which head width and score function to use.
- localization: `fn(pred [N, 4], target [N, 4]) -> [N]`, on encoded offsets
  (`space == "encoded"`), on decoded xyxy boxes (`space == "boxes"`), or on predicted
  distributions over each side's distance (`space == "distribution"`: pred [N, 4, R]
  logits, target [N, 4] distances in strides; only detectors whose head predicts
  distributions take it). A sum of weighted losses is written `"ciou+0.25*distribution_focal"`
  (YOLOv8's box loss): each part in its own space.
- confidence: `fn(logits [N], targets [N]) -> [N]`.

Callers apply masks and normalisers (`losses/assigned.py` for the dense detectors).
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import Array

from jaxdet.errors import ConfigError
from jaxdet.losses import functions as F  # noqa: N812


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
    """`fn(pred, target) -> [N]` in `space` "encoded", "boxes" or "distribution"; a sum of
    losses has `parts` ((loss, weight), ...) instead (fn None, space "sum")."""

    fn: Callable[..., Array] | None
    space: str
    hyper: tuple[str, ...] = ()
    parts: tuple[tuple[LocalizationLoss, float], ...] = ()

    @property
    def components(self) -> tuple[tuple[LocalizationLoss, float], ...]:
        """((loss, weight), ...): the parts of a sum, or this loss with weight 1."""
        return self.parts or ((self, 1.0),)

    @property
    def spaces(self) -> set[str]:
        return {loss.space for loss, _ in self.components}


@dataclasses.dataclass(frozen=True)
class ConfidenceLoss:
    """`fn(logits [N], targets [N]) -> [N]`; `target` says what the detector regresses:
    "objectness" (1 at positives, 0 at negatives), "iou" (the IoU of the predicted box
    with its ground truth under stop_gradient at positives, 0 at negatives), "centerness"
    (FCOS: the centre-ness of the point in its ground truth, at positives only) or "none"."""

    fn: Callable[..., Array]
    target: str
    hyper: tuple[str, ...] = ()


def _sigmoid_targets(logits: Array, labels: Array, quality: Array) -> Array:
    """One-hot [N, C] of `labels` (== C is background: all zeros), scaled by `quality`."""
    num_classes = logits.shape[-1]
    return jax.nn.one_hot(labels, num_classes) * quality[..., None]


def _focal(logits: Array, labels: Array, quality: Array, focal_alpha: float = 0.25, focal_gamma: float = 2.0) -> Array:
    t = _sigmoid_targets(logits, labels, quality)
    return jnp.sum(F.sigmoid_focal_loss(logits, t, focal_alpha, focal_gamma), axis=-1)


def _bce(logits: Array, labels: Array, quality: Array) -> Array:
    return jnp.sum(F.sigmoid_binary_cross_entropy(logits, _sigmoid_targets(logits, labels, quality)), axis=-1)


def _varifocal(
    logits: Array, labels: Array, quality: Array, varifocal_alpha: float = 0.75, focal_gamma: float = 2.0
) -> Array:
    t = _sigmoid_targets(logits, labels, quality)
    return jnp.sum(F.varifocal_loss(logits, t, varifocal_alpha, focal_gamma), axis=-1)


def _qfl(logits: Array, labels: Array, quality: Array, focal_gamma: float = 2.0) -> Array:
    t = _sigmoid_targets(logits, labels, quality)
    return jnp.sum(F.quality_focal_loss(logits, t, focal_gamma), axis=-1)


def _penalty_reduced_focal(
    logits: Array, labels: Array, quality: Array, focal_gamma: float = 2.0, heatmap_beta: float = 4.0
) -> Array:
    """CenterNet's heatmap loss on the soft targets one_hot(label) x quality (a Gaussian's
    value; 1 at a peak). Its `alpha` is focal_gamma (2 in both papers)."""
    t = _sigmoid_targets(logits, labels, quality)
    return jnp.sum(F.penalty_reduced_focal_loss(logits, t, focal_gamma, heatmap_beta), axis=-1)


def _softmax_ce(
    logits: Array, labels: Array, quality: Array, label_smoothing: float = 0.0, no_object_weight: float = 1.0
) -> Array:
    """no_object_weight scales the background rows (label = the last logit): DETR's
    `eos_coef` (0.1), so that the many unmatched queries do not drown the matched ones."""
    del quality  # Hard labels only.
    loss = F.softmax_cross_entropy(logits, labels, label_smoothing)
    return jnp.where(labels == logits.shape[-1] - 1, no_object_weight * loss, loss)


def _smooth_l1(pred: Array, target: Array, smooth_l1_beta: float = 1 / 9) -> Array:
    return jnp.sum(F.smooth_l1_loss(pred, target, smooth_l1_beta), axis=-1)


def _l1(pred: Array, target: Array) -> Array:
    return jnp.sum(F.l1_loss(pred, target), axis=-1)


def _l2(pred: Array, target: Array) -> Array:
    return jnp.sum(F.l2_loss(pred, target), axis=-1)


def _dfl(pred: Array, target: Array) -> Array:
    return jnp.mean(F.distribution_focal_loss(pred, target), axis=-1)


CLASSIFICATION_LOSSES: dict[str, ClassificationLoss] = {
    "sigmoid_focal": ClassificationLoss(_focal, "sigmoid", hyper=("focal_alpha", "focal_gamma")),
    "sigmoid_binary_cross_entropy": ClassificationLoss(_bce, "sigmoid"),
    "softmax_cross_entropy": ClassificationLoss(_softmax_ce, "softmax", hyper=("label_smoothing", "no_object_weight")),
    "varifocal": ClassificationLoss(_varifocal, "sigmoid", iou_aware=True, hyper=("varifocal_alpha", "focal_gamma")),
    "quality_focal": ClassificationLoss(_qfl, "sigmoid", iou_aware=True, hyper=("focal_gamma",)),
    # CenterNet: peaks (target 1) against Gaussian-reduced negatives, on every location.
    "penalty_reduced_focal": ClassificationLoss(
        _penalty_reduced_focal, "sigmoid", hyper=("focal_gamma", "heatmap_beta")
    ),
}

LOCALIZATION_LOSSES: dict[str, LocalizationLoss] = {
    # Encoded offsets (R-CNN deltas / ltrb distances): summed over the 4 coordinates.
    "smooth_l1": LocalizationLoss(_smooth_l1, "encoded", hyper=("smooth_l1_beta",)),
    "l1": LocalizationLoss(_l1, "encoded"),
    "l2": LocalizationLoss(_l2, "encoded"),
    # Decoded xyxy boxes.
    "iou": LocalizationLoss(F.iou_loss, "boxes"),
    "giou": LocalizationLoss(F.giou_loss, "boxes"),
    "diou": LocalizationLoss(F.diou_loss, "boxes"),
    "ciou": LocalizationLoss(F.ciou_loss, "boxes"),
    # Distributions over each side's distance (GFL / YOLOv8), the mean over the 4 sides.
    "distribution_focal": LocalizationLoss(_dfl, "distribution"),
}


def _no_confidence(logits: Array, targets: Array) -> Array:
    return jnp.zeros_like(jnp.asarray(logits, jnp.float32))


def _confidence_varifocal(
    logits: Array, targets: Array, varifocal_alpha: float = 0.75, focal_gamma: float = 2.0
) -> Array:
    return F.varifocal_loss(logits, targets, varifocal_alpha, focal_gamma)


CONFIDENCE_LOSSES: dict[str, ConfidenceLoss] = {
    "none": ConfidenceLoss(_no_confidence, "none"),
    "sigmoid_binary_cross_entropy": ConfidenceLoss(F.sigmoid_binary_cross_entropy, "objectness"),
    "iou_binary_cross_entropy": ConfidenceLoss(F.sigmoid_binary_cross_entropy, "iou"),
    "iou_varifocal": ConfidenceLoss(_confidence_varifocal, "iou", hyper=("varifocal_alpha", "focal_gamma")),
    # FCOS: BCE towards the centre-ness of the point in its box, at positives only.
    "centerness": ConfidenceLoss(F.sigmoid_binary_cross_entropy, "centerness"),
}

LOSSES = {
    "classification": CLASSIFICATION_LOSSES,
    "localization": LOCALIZATION_LOSSES,
    "confidence": CONFIDENCE_LOSSES,
}


def get_loss(family: str, name: str):
    """Looks up `LOSSES[family][name]`, failing with the list of valid names; a
    localization `name` may be a weighted sum, "ciou+0.25*distribution_focal", or one
    weighted loss, "0.25*l1"."""
    if family not in LOSSES:
        raise ConfigError(f"unknown loss family {family!r}; valid families: {sorted(LOSSES)}")
    table = LOSSES[family]
    if family == "localization" and ("+" in name or "*" in name):
        return _sum_of_losses(name, lambda n: get_loss(family, n))
    if name not in table:
        raise ConfigError(f"unknown {family} loss {name!r} (config.loss.{family}); valid names: {sorted(table)}")
    return table[name]


def _sum_of_losses(name: str, lookup: Callable[[str], LocalizationLoss]) -> LocalizationLoss:
    """'a+w*b' -> LocalizationLoss with parts ((a, 1), (b, w)); 'w*a' -> ((a, w),)."""
    parts = []
    for term in name.split("+"):
        weight, _, part = term.strip().rpartition("*")
        try:
            w = float(weight) if weight else 1.0
        except ValueError:
            w = -1.0
        if w < 0 or not part or "+" in part:
            raise ConfigError(
                f"config.loss.localization={name!r}: {term!r} is not 'name' or 'weight*name' with a weight >= 0 "
                "(e.g. 'ciou+0.25*distribution_focal')"
            )
        parts.append((lookup(part.strip()), w))
    names = [p.strip().rpartition("*")[2] for p in name.split("+")]
    if len(set(names)) != len(names):
        raise ConfigError(f"config.loss.localization={name!r} names a loss twice")
    return LocalizationLoss(None, "sum", parts=tuple(parts))


def build_loss(family: str, name: str, loss_config=None):
    """`LOSSES[family][name]` with its hyper-parameters bound from `loss_config` (config.loss).

    Fields absent from `loss_config` keep the function's defaults.
    """
    entry = get_loss(family, name)
    if entry.__class__ is LocalizationLoss and entry.parts:
        return _sum_of_losses(name, lambda n: build_loss(family, n, loss_config))
    kwargs = {h: loss_config[h] for h in entry.hyper if loss_config is not None and h in loss_config}
    if not kwargs:
        return entry
    return dataclasses.replace(entry, fn=functools.partial(entry.fn, **kwargs))
