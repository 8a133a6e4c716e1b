"""Pieces every detector's loss and post-processing share: normalisers, target gathering,
scores from logits, the localization term in either space, and batched detection."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import Array

from jaxdet import losses, postprocess


def image_mask(batch: dict[str, Array], batch_size: int) -> Array:
    """bool [B, 1]: False for images padded in to fill the last evaluation batch."""
    return batch.get("image_mask", jnp.ones((batch_size,), bool))[:, None]


def positive_normalizer(pos: Array, axis_name: str | None) -> Array:
    """max(1, number of positives), averaged over `axis_name` and without gradient.

    Averaging over devices makes the mean of per-device gradients equal the gradient of
    the whole global batch normalised by its total positive count.
    """
    num_pos = jnp.sum(pos).astype(jnp.float32)
    if axis_name is not None:
        num_pos = jax.lax.pmean(num_pos, axis_name)
    return jax.lax.stop_gradient(jnp.maximum(num_pos, 1.0))


def gather_targets(batch: dict[str, Array], matched: Array) -> tuple[Array, Array]:
    """Ground truth of each anchor's match: labels int [B, A] and boxes [B, A, 4]."""
    labels = jnp.take_along_axis(batch["labels"], matched, axis=1)
    boxes = jnp.take_along_axis(batch["boxes"], matched[..., None], axis=1)
    return labels, boxes


def class_probabilities(classification: losses.ClassificationLoss, logits: Array, num_classes: int) -> Array:
    """[..., C] probabilities: sigmoid, or softmax without its background column."""
    if classification.activation == "softmax":
        return jax.nn.softmax(logits, axis=-1)[..., :num_classes]
    return jax.nn.sigmoid(logits)


def localization_term(
    localization: losses.LocalizationLoss,
    raw: Array,
    encode: Callable[[Array], Array],
    pred_boxes: Array,
    gt_boxes: Array,
    pos: Array,
    norm: Array,
) -> Array:
    """Normalised localization loss over positives, in the loss's own space.

    raw: the head's regression output [B, A, 4]; encode: gt boxes -> targets in the
    same encoding as `raw`; pred_boxes: `raw` decoded to xyxy [B, A, 4].
    """
    if localization.space == "encoded":
        per_anchor = localization.fn(raw, encode(gt_boxes))
    else:
        per_anchor = localization.fn(pred_boxes, gt_boxes)
    return jnp.sum(jnp.where(pos, per_anchor, 0.0)) / norm


def weighted_total(weights: dict[str, float], terms: dict[str, Array]) -> Array:
    return sum(weights[k] * v for k, v in terms.items())


def detect(detect_kwargs: dict[str, Any], scores: Array, boxes: Array) -> postprocess.Detections:
    """Batched `select_detections`: scores [B, A, C], boxes [B, A, 4] -> Detections [B, D]."""
    return jax.vmap(lambda s, b: postprocess.select_detections(s, b, **detect_kwargs))(scores, boxes)


def detect_kwargs(model_config) -> dict[str, Any]:
    return dict(
        pre_nms_topk=model_config.pre_nms_topk,
        score_threshold=model_config.score_threshold,
        iou_threshold=model_config.nms_iou_threshold,
        max_detections=model_config.max_detections,
    )


def loss_weights(loss_config) -> dict[str, float]:
    return {
        "classification": loss_config.classification_weight,
        "localization": loss_config.localization_weight,
        "confidence": loss_config.confidence_weight,
    }


def build_losses(config, num_classes: int):
    """The three losses of `config.loss` with hyper-parameters bound, and the class-logit
    count their activation needs: (classification, localization, confidence, num_logits)."""
    cls = losses.build_loss("classification", config.loss.classification, config.loss)
    loc = losses.build_loss("localization", config.loss.localization, config.loss)
    conf = losses.build_loss("confidence", config.loss.confidence, config.loss)
    return cls, loc, conf, num_classes + (1 if cls.activation == "softmax" else 0)


def classification_quality(classification: losses.ClassificationLoss, iou: Array) -> Array:
    """Positives' target score: the (stop_gradient) IoU for IoU-aware losses, else 1."""
    return iou if classification.iou_aware else jnp.ones_like(iou)


def confidence_term(
    confidence: losses.ConfidenceLoss, logits: Array, pos: Array, iou: Array, region: Array, norm: Array
) -> Array:
    """Normalised confidence loss over `region`: target 1 (objectness) or the IoU at
    positives, 0 elsewhere; 0 when the detector has no confidence loss."""
    if confidence.target == "none":
        return jnp.zeros((), jnp.float32)
    target = jnp.where(pos, iou if confidence.target == "iou" else 1.0, 0.0)
    return jnp.sum(jnp.where(region, confidence.fn(logits, target), 0.0)) / norm
