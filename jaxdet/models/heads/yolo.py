"""YOLO (YOLOX-style, Ge et al. 2021): anchor-free decoupled head with objectness, SimOTA targets.

Over a stride 8/16/32 PAN neck, each grid point predicts class logits (classification
branch), and ltrb distances plus an objectness logit (box branch). Targets come from
SimOTA dynamic assignment with static shapes. Loss terms: classification on positives
(on every point if there is no confidence term), localization on positives (IoU family
on decoded boxes, or the L1 family on log-distances), confidence = objectness on every
point. Scores at inference: class probability x objectness.
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
from jaxdet import assigners, losses, postprocess
from jaxdet import boxes as box_ops
from jaxdet.models.backbones import ResNet, get_backbone_spec
from jaxdet.models.fpn import PAN
from jaxdet.models.heads import common
from jaxdet.models.layers import Conv, make_norm

# exp() of a larger log-distance overflows; no box is 1000/16 strides from its point.
_MAX_LOG_DISTANCE = math.log(1000.0 / 16)


class YOLOHead(nn.Module):
    """Decoupled head shared across levels: {l: [B, H, W, F]} -> cls_logits [B, P, K],
    box_ltrb [B, P, 4] (log of distances in strides), obj_logits [B, P]."""

    num_logits: int
    channels: int
    num_convs: int = 2
    norm: str = "group"
    prior_prob: float = 0.01
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features: dict[int, Array]) -> dict[str, Array]:
        bias = -math.log((1 - self.prior_prob) / self.prior_prob)
        init = nn.initializers.normal(0.01)
        conv = lambda name: Conv(self.channels, (3, 3), kernel_init=init, dtype=self.dtype, name=name)
        cls_convs = [conv(f"cls_conv{i}") for i in range(self.num_convs)]
        box_convs = [conv(f"box_conv{i}") for i in range(self.num_convs)]
        prior = nn.initializers.constant(bias)
        cls_out = Conv(self.num_logits, (1, 1), bias_init=prior, dtype=self.dtype, name="cls")
        box_out = Conv(4, (1, 1), kernel_init=init, dtype=self.dtype, name="box")
        obj_out = Conv(1, (1, 1), bias_init=prior, dtype=self.dtype, name="obj")
        cls_all, box_all, obj_all = [], [], []
        for lvl in sorted(features):
            norm = make_norm(self.norm, True, self.dtype)
            c = b = features[lvl]
            for i in range(self.num_convs):
                c = nn.silu(norm(name=f"cls_norm{i}_p{lvl}")(cls_convs[i](c)))
                b = nn.silu(norm(name=f"box_norm{i}_p{lvl}")(box_convs[i](b)))
            bsz = c.shape[0]
            cls_all.append(cls_out(c).reshape(bsz, -1, self.num_logits))
            box_all.append(box_out(b).reshape(bsz, -1, 4))
            obj_all.append(obj_out(b).reshape(bsz, -1))
        cat = lambda xs: jnp.concatenate(xs, axis=1).astype(jnp.float32)
        return {"cls_logits": cat(cls_all), "box_ltrb": cat(box_all), "obj_logits": cat(obj_all)}


class YOLOModule(nn.Module):
    """Backbone + PAN + decoupled head: images [B, S, S, 3] -> head outputs."""

    num_logits: int
    backbone: str
    neck_channels: int
    min_level: int
    max_level: int
    head_convs: int
    backbone_norm: str
    head_norm: str
    dtype: Any = jnp.float32
    axis_name: str | None = None

    @nn.compact
    def __call__(self, images: Array, train: bool = False, targets: dict | None = None) -> dict[str, Array]:
        del targets  # One-stage: targets only enter the loss.
        feats = ResNet(get_backbone_spec(self.backbone), self.backbone_norm, self.dtype, self.axis_name)(images, train)
        pyramid = PAN(self.neck_channels, self.min_level, self.max_level, self.dtype)(feats)
        return YOLOHead(self.num_logits, self.neck_channels, self.head_convs, self.head_norm, dtype=self.dtype)(pyramid)


def decode_ltrb(points: Array, strides: Array, raw: Array) -> Array:
    """Head output (log of distances in strides) [..., P, 4] -> xyxy boxes [..., P, 4]."""
    dist = jnp.exp(jnp.minimum(raw, _MAX_LOG_DISTANCE)) * strides[:, None]
    return jnp.concatenate([points - dist[..., :2], points + dist[..., 2:]], axis=-1)


def encode_ltrb(points: Array, strides: Array, boxes: Array) -> Array:
    """xyxy boxes -> the head's encoding (log of distances in strides); points outside a box
    (SimOTA's centre region admits them) get a tiny distance instead of a negative one."""
    dist = jnp.concatenate([points - boxes[..., :2], boxes[..., 2:] - points], axis=-1) / strides[:, None]
    return jnp.log(jnp.maximum(dist, 1e-3))


@dataclasses.dataclass(frozen=True)
class YOLO:
    """A YOLOX-style detector: the Flax module, grid points and the pure loss/predict."""

    module: nn.Module
    points: np.ndarray  # [P, 2]
    strides: np.ndarray  # [P]
    num_classes: int
    classification: losses.ClassificationLoss
    localization: losses.LocalizationLoss
    confidence: losses.ConfidenceLoss
    weights: dict[str, float]
    center_radius: float
    simota_k: int
    detect_kwargs: dict[str, Any]

    def scores(self, outputs: dict[str, Array]) -> Array:
        """[B, P, C]: class probability x objectness (class probability alone without a confidence term)."""
        probs = common.class_probabilities(self.classification, outputs["cls_logits"], self.num_classes)
        if self.confidence.target != "none":
            probs = probs * jax.nn.sigmoid(outputs["obj_logits"])[..., None]
        return probs

    def loss_fn(
        self, outputs: dict[str, Array], batch: dict[str, Array], rng: Array, axis_name: str | None = None
    ) -> tuple[Array, dict[str, Array]]:
        """Weighted total and the three named terms, each normalised by the positives."""
        del rng
        points, strides = jnp.asarray(self.points), jnp.asarray(self.strides)
        pred_boxes = decode_ltrb(points, strides, outputs["box_ltrb"])
        scores = self.scores(outputs)
        assign = lambda pb, sc, gb, gl, gm: assigners.simota_assign(
            points, strides, pb, sc, gb, gl, gm, self.center_radius, self.simota_k
        )
        asg = jax.vmap(assign)(pred_boxes, scores, batch["boxes"], batch["labels"], batch["box_mask"])
        image_ok = common.image_mask(batch, pred_boxes.shape[0])
        pos = (asg.label == assigners.POSITIVE) & image_ok
        everywhere = jnp.broadcast_to(image_ok, pos.shape)
        norm = common.positive_normalizer(pos, axis_name)
        gt_labels, gt_boxes = common.gather_targets(batch, asg.matched)
        iou = jax.lax.stop_gradient(box_ops.elementwise_iou(pred_boxes, gt_boxes))

        has_confidence = self.confidence.target != "none"
        cls_target = jnp.where(pos, gt_labels, self.num_classes)
        quality = common.classification_quality(self.classification, iou)
        cls = self.classification.fn(outputs["cls_logits"], cls_target, quality)
        # With objectness, background is the confidence term's job (YOLOX); without it,
        # classification must also learn background at every point.
        cls_loss = jnp.sum(jnp.where(pos if has_confidence else everywhere, cls, 0.0)) / norm

        encode = lambda gt: encode_ltrb(points, strides, gt)
        loc_loss = common.localization_term(
            self.localization, outputs["box_ltrb"], encode, pred_boxes, gt_boxes, pos, norm
        )

        conf_loss = common.confidence_term(self.confidence, outputs["obj_logits"], pos, iou, everywhere, norm)

        terms = {"classification": cls_loss, "localization": loc_loss, "confidence": conf_loss}
        return common.weighted_total(self.weights, terms), terms

    def predict(self, outputs: dict[str, Array]) -> postprocess.Detections:
        """Head outputs -> `Detections` [B, D] in input pixels."""
        boxes = decode_ltrb(jnp.asarray(self.points), jnp.asarray(self.strides), outputs["box_ltrb"])
        return common.detect(self.detect_kwargs, self.scores(outputs), boxes)


def build_yolo(config, num_classes: int, axis_name: str | None) -> YOLO:
    """YOLO from `config.model`, `config.loss` and `config.data`."""
    m = config.model
    cls_loss, loc_loss, conf_loss, num_logits = common.build_losses(config, num_classes)
    levels = list(range(m.min_level, m.max_level + 1))
    points, strides = anchor_ops.point_grid(config.data.image_size, levels, m.anchor_offset)
    module = YOLOModule(
        num_logits=num_logits,
        backbone=m.backbone,
        neck_channels=m.fpn_channels,
        min_level=m.min_level,
        max_level=m.max_level,
        head_convs=m.head_convs,
        backbone_norm=m.backbone_norm,
        head_norm=m.head_norm,
        dtype=jnp.dtype(config.train.compute_dtype),
        axis_name=axis_name if m.sync_batch_norm else None,
    )
    return YOLO(
        module, points, strides, num_classes, cls_loss, loc_loss, conf_loss, common.loss_weights(config.loss),
        m.center_radius, m.simota_k, common.detect_kwargs(m),
    )  # fmt: skip
