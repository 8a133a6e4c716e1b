"""Elementwise loss functions, torchvision.ops names and semantics with reduction='none'.

All give finite values and gradients on degenerate input (zero-area, identical, disjoint
boxes; saturated logits). The LOSSES table (`losses/registry.py`) wraps them per family.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array

from jaxdet import boxes as box_ops
from jaxdet.boxes import EPS


def sigmoid_binary_cross_entropy(logits: Array, targets: Array) -> Array:
    """Elementwise BCE on logits, stable for |logits| of any size: [...] -> [...]."""
    logits = jnp.asarray(logits, jnp.float32)
    return jnp.maximum(logits, 0.0) - logits * targets + jnp.log1p(jnp.exp(-jnp.abs(logits)))


def modulating_power(x: Array, gamma: float) -> Array:
    """x ** gamma for x >= 0 with a finite gradient everywhere, for any gamma >= 0.

    Plain `x ** gamma` has the gradient gamma * x ** (gamma - 1), which is 0 * inf = NaN at
    x = 0 for gamma = 0 (and inf for gamma < 1): a saturated sigmoid (p_t exactly 1 in float32,
    |logit| > ~17) made the focal loss's gradient NaN with gamma = 0 while its value stayed
    finite. torch's pow gives 0 there; so does this (1 for gamma = 0, exactly).
    """
    if gamma == 0:
        return jnp.ones_like(x)
    positive = x > 0
    return jnp.where(positive, jnp.where(positive, x, 1.0) ** gamma, 0.0)


def sigmoid_focal_loss(logits: Array, targets: Array, alpha: float = 0.25, gamma: float = 2.0) -> Array:
    """torchvision.ops.sigmoid_focal_loss, reduction='none'; alpha < 0 disables weighting."""
    logits = jnp.asarray(logits, jnp.float32)
    p = jax.nn.sigmoid(logits)
    ce = sigmoid_binary_cross_entropy(logits, targets)
    p_t = p * targets + (1 - p) * (1 - targets)
    loss = ce * modulating_power(1 - p_t, gamma)
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
    weight = jnp.where(targets > 0, targets, alpha * modulating_power(jnp.abs(p - targets), gamma))
    return sigmoid_binary_cross_entropy(logits, targets) * weight


def quality_focal_loss(logits: Array, targets: Array, beta: float = 2.0) -> Array:
    """Quality focal loss (Li et al. 2020, GFL), elementwise: BCE(logits, y) * |y - sigmoid|^beta."""
    logits = jnp.asarray(logits, jnp.float32)
    return sigmoid_binary_cross_entropy(logits, targets) * modulating_power(
        jnp.abs(targets - jax.nn.sigmoid(logits)), beta
    )


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


def iou_loss(boxes1: Array, boxes2: Array, eps: float = EPS) -> Array:
    """1 - IoU of paired xyxy boxes [..., 4] -> [...] (IoU = inter / (union + eps))."""
    return 1 - box_ops.elementwise_iou(boxes1, boxes2, eps)


def giou_loss(boxes1: Array, boxes2: Array, eps: float = EPS) -> Array:
    """torchvision.ops.generalized_box_iou_loss, reduction='none'."""
    return 1 - box_ops.elementwise_giou(boxes1, boxes2, eps)


def diou_loss(boxes1: Array, boxes2: Array, eps: float = EPS) -> Array:
    """torchvision.ops.distance_box_iou_loss, reduction='none'."""
    return 1 - box_ops.elementwise_diou(boxes1, boxes2, eps)


def ciou_loss(boxes1: Array, boxes2: Array, eps: float = EPS) -> Array:
    """torchvision.ops.complete_box_iou_loss, reduction='none'."""
    return 1 - box_ops.elementwise_ciou(boxes1, boxes2, eps)


def penalty_reduced_focal_loss(logits: Array, targets: Array, alpha: float = 2.0, beta: float = 4.0) -> Array:
    """CornerNet / CenterNet's heatmap loss ("penalty-reduced pixel-wise logistic regression
    with focal loss"), elementwise: logits and targets [...] -> [...].

    A target of exactly 1 is a peak: -(1 - p)^alpha log p; elsewhere the target (a Gaussian
    around the peak) reduces the negative's penalty: -(1 - t)^beta p^alpha log(1 - p). As
    the reference (`_neg_loss` on `_sigmoid`), p = sigmoid(logits) clipped to [1e-4, 1 - 1e-4].
    """
    p = jnp.clip(jax.nn.sigmoid(jnp.asarray(logits, jnp.float32)), 1e-4, 1 - 1e-4)
    t = jnp.asarray(targets, jnp.float32)
    positive = -jnp.log(p) * (1 - p) ** alpha
    negative = -((1 - t) ** beta) * p**alpha * jnp.log(1 - p)
    return jnp.where(t >= 1, positive, negative)


def distribution_focal_loss(logits: Array, target: Array) -> Array:
    """Distribution focal loss (Li et al. 2020, GFL), elementwise over box sides.

    logits [..., R]: a distribution over the distances 0, 1, ..., R - 1 (in strides);
    target [...]: the true distance, clipped to [0, R - 1.01] as ultralytics does, so that
    its right neighbour bin exists. The loss is the cross-entropy with the two bins around
    the target, weighted by proximity: -(r - t) log p_l - (t - l) log p_r, l = floor(t),
    r = l + 1; its minimum puts all mass on those two bins with expectation t.
    Returns [...]. Finite with finite gradients at bin edges (integer t: weight 0 on r).
    """
    logits = jnp.asarray(logits, jnp.float32)
    r_max = logits.shape[-1] - 1
    t = jnp.clip(jnp.asarray(target, jnp.float32), 0.0, r_max - 0.01)
    left = jnp.floor(t)
    w_left, w_right = left + 1 - t, t - left
    logp = jax.nn.log_softmax(logits, axis=-1)
    li = left.astype(jnp.int32)[..., None]
    lp_left = jnp.take_along_axis(logp, li, axis=-1)[..., 0]
    lp_right = jnp.take_along_axis(logp, li + 1, axis=-1)[..., 0]
    return -(w_left * lp_left + w_right * lp_right)


def centerness_target(centers: Array, boxes: Array) -> Array:
    """FCOS centre-ness of points [..., 2] in boxes [..., 4] xyxy -> [...] in [0, 1]:
    sqrt(min(l, r) / max(l, r) * min(t, b) / max(t, b)); 0 for points outside their box."""
    centers = jnp.asarray(centers, jnp.float32)
    boxes = jnp.asarray(boxes, jnp.float32)
    ltrb = jnp.concatenate([centers - boxes[..., :2], boxes[..., 2:] - centers], axis=-1)
    ltrb = jnp.maximum(ltrb, 0.0)
    lr, tb = ltrb[..., 0::2], ltrb[..., 1::2]
    ratio = lambda d: jnp.min(d, -1) / jnp.maximum(jnp.max(d, -1), EPS)  # noqa: E731
    return jnp.sqrt(ratio(lr) * ratio(tb))
