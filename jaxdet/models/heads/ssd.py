"""SSD (Liu et al. 2016): multi-scale default boxes, per-level heads, hard negative mining.

A ResNet body gives C3..C5; extra stride-2 blocks (1x1 then 3x3, as SSD's extras)
continue to `max_level`. Each level has its own 3x3 class and box convolutions. Default
boxes match ground truth by max IoU (0.5, every box gets its best default box); the
classification term covers the positives and the hardest negatives (3 per positive,
static shape via ranking); the localization term covers positives.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from jaxdet import anchors as anchor_ops
from jaxdet import assigners, box_coder, losses, postprocess
from jaxdet import boxes as box_ops
from jaxdet.models.backbones import ResNet, get_backbone_spec
from jaxdet.models.heads import common
from jaxdet.models.layers import Conv, make_norm


class SSDModule(nn.Module):
    """images [B, S, S, 3] -> {"cls_logits" [B, A, K], "box_deltas" [B, A, 4]}."""

    num_logits: int
    boxes_per_level: tuple[int, ...]
    backbone: str
    extra_channels: int
    min_level: int
    max_level: int
    backbone_norm: str
    quality_branch: bool = False
    dtype: Any = jnp.float32
    axis_name: str | None = None

    @nn.compact
    def __call__(self, images: Array, train: bool = False, targets: dict | None = None) -> dict[str, Array]:
        del targets  # One-stage: targets only enter the loss.
        feats = ResNet(get_backbone_spec(self.backbone), self.backbone_norm, self.dtype, self.axis_name)(images, train)
        norm = make_norm(self.backbone_norm, train, self.dtype, self.axis_name)
        x = feats[max(feats)]
        for lvl in range(max(feats) + 1, self.max_level + 1):
            x = nn.relu(norm()(Conv(self.extra_channels // 2, (1, 1), use_bias=False, dtype=self.dtype)(x)))
            x = Conv(self.extra_channels, (3, 3), strides=2, padding="SAME", use_bias=False, dtype=self.dtype)(x)
            feats[lvl] = nn.relu(norm()(x))
        logits, deltas, quality = [], [], []
        for lvl, a in zip(range(self.min_level, self.max_level + 1), self.boxes_per_level):
            f = feats[lvl]
            bsz = f.shape[0]
            logits.append(
                Conv(a * self.num_logits, (3, 3), dtype=self.dtype, name=f"cls_p{lvl}")(f).reshape(
                    bsz, -1, self.num_logits
                )
            )
            deltas.append(Conv(a * 4, (3, 3), dtype=self.dtype, name=f"box_p{lvl}")(f).reshape(bsz, -1, 4))
            if self.quality_branch:
                quality.append(Conv(a, (3, 3), dtype=self.dtype, name=f"quality_p{lvl}")(f).reshape(bsz, -1))
        cat = lambda xs: jnp.concatenate(xs, axis=1).astype(jnp.float32)
        out = {"cls_logits": cat(logits), "box_deltas": cat(deltas)}
        if quality:
            out["quality_logits"] = cat(quality)
        return out


@dataclasses.dataclass(frozen=True)
class SSD:
    """An SSD detector: the Flax module, its default boxes and the pure loss/predict."""

    module: nn.Module
    anchors: np.ndarray  # [A, 4] default boxes, xyxy pixels
    num_classes: int
    classification: losses.ClassificationLoss
    localization: losses.LocalizationLoss
    confidence: losses.ConfidenceLoss
    weights: dict[str, float]
    iou_threshold: float
    neg_pos_ratio: int
    box_weights: tuple[float, float, float, float]
    detect_kwargs: dict[str, Any]

    def loss_fn(
        self, outputs: dict[str, Array], batch: dict[str, Array], rng: Array, axis_name: str | None = None
    ) -> tuple[Array, dict[str, Array]]:
        """Weighted total and the three named terms (confidence is 0 unless loss.confidence adds a branch)."""
        del rng
        anchors = jnp.asarray(self.anchors)
        thr = self.iou_threshold
        asg = jax.vmap(lambda b, m: assigners.max_iou_assign(anchors, b, m, thr, thr, True))(
            batch["boxes"], batch["box_mask"]
        )
        image_ok = common.image_mask(batch, asg.label.shape[0])
        pos = (asg.label == assigners.POSITIVE) & image_ok
        neg = (asg.label == assigners.NEGATIVE) & image_ok
        norm = common.positive_normalizer(pos, axis_name)
        gt_labels, gt_boxes = common.gather_targets(batch, asg.matched)
        anchors_b = jnp.broadcast_to(anchors, gt_boxes.shape)
        pred_boxes = box_coder.decode_deltas(anchors_b, outputs["box_deltas"], self.box_weights)
        iou = jax.lax.stop_gradient(box_ops.elementwise_iou(pred_boxes, gt_boxes))

        cls_target = jnp.where(pos, gt_labels, self.num_classes)
        quality = common.classification_quality(self.classification, iou)
        cls = self.classification.fn(outputs["cls_logits"], cls_target, quality)  # [B, A]
        # neg_pos_ratio hardest negatives per positive, per image; an image without objects
        # still contributes neg_pos_ratio negatives so empty images teach background too.
        num_keep = self.neg_pos_ratio * jnp.maximum(jnp.sum(pos, axis=1), 1)
        hard = jax.vmap(assigners.hard_negative_mask)(jax.lax.stop_gradient(cls), neg, num_keep)
        cls_loss = jnp.sum(jnp.where(pos | hard, cls, 0.0)) / norm

        encode = lambda gt: box_coder.encode_deltas(anchors_b, gt, self.box_weights)
        loc_loss = common.localization_term(
            self.localization, outputs["box_deltas"], encode, pred_boxes, gt_boxes, pos, norm
        )
        # The optional quality branch learns from positives and all negatives.
        conf_loss = common.confidence_term(self.confidence, outputs.get("quality_logits"), pos, iou, pos | neg, norm)
        terms = {"classification": cls_loss, "localization": loc_loss, "confidence": conf_loss}
        return common.weighted_total(self.weights, terms), terms

    def predict(self, outputs: dict[str, Array]) -> postprocess.Detections:
        """Head outputs -> `Detections` [B, D] in input pixels."""
        boxes = box_coder.decode_deltas(jnp.asarray(self.anchors), outputs["box_deltas"], self.box_weights)
        scores = common.class_probabilities(self.classification, outputs["cls_logits"], self.num_classes)
        if "quality_logits" in outputs:
            scores = jnp.sqrt(scores * jax.nn.sigmoid(outputs["quality_logits"])[..., None])
        return common.detect(self.detect_kwargs, scores, boxes)


def build_ssd(config, num_classes: int, axis_name: str | None) -> SSD:
    """SSD from `config.model`, `config.loss` and `config.data`."""
    m = config.model
    cls_loss, loc_loss, conf_loss, num_logits = common.build_losses(config, num_classes)
    levels = list(range(m.min_level, m.max_level + 1))
    ratios = [tuple(r) for r in m.ssd_aspect_ratios]
    if len(ratios) == 1:
        ratios = ratios * len(levels)
    shapes = anchor_ops.ssd_box_shapes(len(levels), m.ssd_min_scale, m.ssd_max_scale, ratios)
    anchors = anchor_ops.ssd_default_boxes(config.data.image_size, levels, shapes, m.anchor_offset)
    module = SSDModule(
        num_logits=num_logits,
        boxes_per_level=tuple(len(s) for s in shapes),
        backbone=m.backbone,
        extra_channels=m.fpn_channels,
        min_level=m.min_level,
        max_level=m.max_level,
        backbone_norm=m.backbone_norm,
        quality_branch=conf_loss.target != "none",
        dtype=jnp.dtype(config.train.compute_dtype),
        axis_name=axis_name if m.sync_batch_norm else None,
    )
    return SSD(
        module, anchors, num_classes, cls_loss, loc_loss, conf_loss, common.loss_weights(config.loss),
        m.fg_iou, m.neg_pos_ratio, tuple(m.box_weights), common.detect_kwargs(m),
    )  # fmt: skip
