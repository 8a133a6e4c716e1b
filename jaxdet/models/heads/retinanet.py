"""RetinaNet (Lin et al. 2017): the head module, its loss terms and its post-processing.

The head is shared across pyramid levels. Training targets come from the max-IoU
assigner, vectorised over the batch; the loss reports the three named terms
(`confidence` is 0: RetinaNet has no objectness output).
"""

from __future__ import annotations

import dataclasses
import math
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
from jaxdet.models.fpn import FPN
from jaxdet.models.heads import common
from jaxdet.models.layers import Conv, make_norm


class RetinaNetHead(nn.Module):
    """Shared conv towers: {level: [B, H, W, F]} -> logits [B, A_total, K], deltas [B, A_total, 4]."""

    num_logits: int
    num_anchors: int
    num_convs: int = 4
    channels: int = 256
    norm: str = "group"
    prior_prob: float = 0.01
    quality_branch: bool = False
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features: dict[int, Array]) -> dict[str, Array]:
        init = nn.initializers.normal(0.01)
        # Focal-loss prior: every anchor starts with foreground probability prior_prob.
        bias = -math.log((1 - self.prior_prob) / self.prior_prob)
        cls_convs = [
            Conv(self.channels, (3, 3), kernel_init=init, dtype=self.dtype, name=f"cls_conv{i}")
            for i in range(self.num_convs)
        ]
        box_convs = [
            Conv(self.channels, (3, 3), kernel_init=init, dtype=self.dtype, name=f"box_conv{i}")
            for i in range(self.num_convs)
        ]
        # Norms are per level (as torchvision's v2 head) while convs are shared.
        cls_out = Conv(
            self.num_anchors * self.num_logits,
            (3, 3),
            kernel_init=init,
            bias_init=nn.initializers.constant(bias),
            dtype=self.dtype,
            name="cls_logits",
        )
        box_out = Conv(self.num_anchors * 4, (3, 3), kernel_init=init, dtype=self.dtype, name="box_deltas")
        # IoU-aware RetinaNet (Wu et al. 2020): a per-anchor quality logit off the box tower.
        quality_out = (
            Conv(self.num_anchors, (3, 3), kernel_init=init, dtype=self.dtype, name="quality")
            if self.quality_branch
            else None
        )
        logits, deltas, quality = [], [], []
        for lvl in sorted(features):
            norm = make_norm(self.norm, True, self.dtype)
            c = b = features[lvl]
            for i in range(self.num_convs):
                c = nn.relu(norm(name=f"cls_norm{i}_p{lvl}")(cls_convs[i](c)))
                b = nn.relu(norm(name=f"box_norm{i}_p{lvl}")(box_convs[i](b)))
            bsz = c.shape[0]
            logits.append(cls_out(c).reshape(bsz, -1, self.num_logits))
            deltas.append(box_out(b).reshape(bsz, -1, 4))
            if quality_out is not None:
                quality.append(quality_out(b).reshape(bsz, -1))
        out = {
            "cls_logits": jnp.concatenate(logits, axis=1).astype(jnp.float32),
            "box_deltas": jnp.concatenate(deltas, axis=1).astype(jnp.float32),
        }
        if quality:
            out["quality_logits"] = jnp.concatenate(quality, axis=1).astype(jnp.float32)
        return out


class RetinaNetModule(nn.Module):
    """Backbone + FPN + head: images [B, S, S, 3] -> {"cls_logits", "box_deltas"[, "quality_logits"]}."""

    num_logits: int
    num_anchors: int
    backbone: str
    fpn_channels: int
    min_level: int
    max_level: int
    head_convs: int
    backbone_norm: str
    head_norm: str
    quality_branch: bool = False
    fpn_extra: str = "conv"
    dtype: Any = jnp.float32
    axis_name: str | None = None

    @nn.compact
    def __call__(self, images: Array, train: bool = False, targets: dict | None = None) -> dict[str, Array]:
        del targets  # One-stage: targets only enter the loss.
        feats = ResNet(get_backbone_spec(self.backbone), self.backbone_norm, self.dtype, self.axis_name)(images, train)
        pyramid = FPN(self.fpn_channels, self.min_level, self.max_level, self.dtype, self.fpn_extra)(feats)
        return RetinaNetHead(
            self.num_logits,
            self.num_anchors,
            self.head_convs,
            self.fpn_channels,
            self.head_norm,
            quality_branch=self.quality_branch,
            dtype=self.dtype,
        )(pyramid)


@dataclasses.dataclass(frozen=True)
class RetinaNet:
    """A RetinaNet detector: the Flax module plus its static anchors, loss and post-processing."""

    module: nn.Module
    anchors: np.ndarray  # [A_total, 4] xyxy pixels
    num_classes: int
    classification: losses.ClassificationLoss
    localization: losses.LocalizationLoss
    confidence: losses.ConfidenceLoss
    weights: dict[str, float]
    fg_iou: float
    bg_iou: float
    box_weights: tuple[float, float, float, float]
    detect_kwargs: dict[str, Any]

    def assign(self, batch: dict[str, Array]) -> assigners.Assignment:
        """Max-IoU assignment for every image of the batch: fields [B, A_total]."""
        anchors = jnp.asarray(self.anchors)
        fn = lambda b, m: assigners.max_iou_assign(anchors, b, m, self.fg_iou, self.bg_iou, True)
        return jax.vmap(fn)(batch["boxes"], batch["box_mask"])

    def loss_fn(
        self, outputs: dict[str, Array], batch: dict[str, Array], rng: Array, axis_name: str | None = None
    ) -> tuple[Array, dict[str, Array]]:
        """Weighted total and the three named terms, each normalised by the positives."""
        del rng  # RetinaNet's targets are deterministic.
        asg = self.assign(batch)
        image_ok = common.image_mask(batch, asg.label.shape[0])
        pos = (asg.label == assigners.POSITIVE) & image_ok  # [B, A]
        care = (asg.label != assigners.IGNORE) & image_ok
        norm = common.positive_normalizer(pos, axis_name)
        gt_labels, gt_boxes = common.gather_targets(batch, asg.matched)
        anchors = jnp.broadcast_to(jnp.asarray(self.anchors), gt_boxes.shape)
        pred_boxes = box_coder.decode_deltas(anchors, outputs["box_deltas"], self.box_weights)
        # IoU-aware targets are weights, not something to push the boxes towards.
        iou = jax.lax.stop_gradient(box_ops.elementwise_iou(pred_boxes, gt_boxes))

        cls_target = jnp.where(pos, gt_labels, self.num_classes)
        quality = common.classification_quality(self.classification, iou)
        cls = self.classification.fn(outputs["cls_logits"], cls_target, quality)
        cls_loss = jnp.sum(jnp.where(care, cls, 0.0)) / norm

        encode = lambda gt: box_coder.encode_deltas(anchors, gt, self.box_weights)
        loc_loss = common.localization_term(
            self.localization, outputs["box_deltas"], encode, pred_boxes, gt_boxes, pos, norm
        )

        conf_loss = common.confidence_term(self.confidence, outputs.get("quality_logits"), pos, iou, care, norm)

        terms = {"classification": cls_loss, "localization": loc_loss, "confidence": conf_loss}
        return common.weighted_total(self.weights, terms), terms

    def scores(self, outputs: dict[str, Array]) -> Array:
        """Per-class detection scores [B, A, C] from head outputs."""
        probs = common.class_probabilities(self.classification, outputs["cls_logits"], self.num_classes)
        if "quality_logits" in outputs:
            # IoU-aware RetinaNet's geometric mean of class probability and predicted quality.
            probs = jnp.sqrt(probs * jax.nn.sigmoid(outputs["quality_logits"])[..., None])
        return probs

    def predict(self, outputs: dict[str, Array]) -> postprocess.Detections:
        """Head outputs for a batch -> `Detections` with fields [B, D, ...] in input pixels."""
        boxes = box_coder.decode_deltas(jnp.asarray(self.anchors), outputs["box_deltas"], self.box_weights)
        return common.detect(self.detect_kwargs, self.scores(outputs), boxes)


def build_retinanet(config, num_classes: int, axis_name: str | None) -> RetinaNet:
    """RetinaNet from `config.model`, `config.loss` and `config.data`."""
    m = config.model
    cls_loss, loc_loss, conf_loss, num_logits = common.build_losses(config, num_classes)
    levels = list(range(m.min_level, m.max_level + 1))
    scales = tuple(2.0 ** (i / m.num_scales) for i in range(m.num_scales))
    anchors = anchor_ops.anchor_grid(
        config.data.image_size, levels, m.anchor_size, scales, tuple(m.aspect_ratios), m.anchor_offset
    )
    dtype = jnp.dtype(config.train.compute_dtype)
    module = RetinaNetModule(
        num_logits=num_logits,
        num_anchors=len(scales) * len(m.aspect_ratios),
        backbone=m.backbone,
        fpn_channels=m.fpn_channels,
        min_level=m.min_level,
        max_level=m.max_level,
        head_convs=m.head_convs,
        backbone_norm=m.backbone_norm,
        head_norm=m.head_norm,
        quality_branch=conf_loss.target != "none",
        fpn_extra=m.get("fpn_extra", "conv"),  # (absent from configs recorded before it existed)
        dtype=dtype,
        axis_name=axis_name if m.sync_batch_norm else None,
    )
    weights = common.loss_weights(config.loss)
    detect = common.detect_kwargs(m)
    return RetinaNet(
        module,
        anchors,
        num_classes,
        cls_loss,
        loc_loss,
        conf_loss,
        weights,
        m.fg_iou,
        m.bg_iou,
        tuple(m.box_weights),
        detect,
    )
