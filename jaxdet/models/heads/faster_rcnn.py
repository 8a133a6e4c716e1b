"""Faster R-CNN with FPN (Ren et al. 2015; Lin et al. 2017), every shape static.

RPN: a shared conv head over the FPN levels, max-IoU anchor targets (0.7 / 0.3) with
random balanced sampling (256 per image, half positive at most). Proposals: per-level
top-k, decode, clip, drop tiny boxes, NMS per level, a fixed count kept with a mask;
their coordinates carry no gradient. Second stage: ground truth appended to the
proposals, 512 RoIs per image sampled (a quarter positive at most, IoU >= 0.5),
multi-level RoIAlign (7x7), two FC layers, class scores and class-specific deltas.
Terms: classification = box-head classification; localization = RPN + box-head
localization; confidence = RPN objectness. All three losses are swappable by flag.
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
from jaxdet.errors import ConfigError
from jaxdet.models.backbones import ResNet, get_backbone_spec
from jaxdet.models.fpn import FPN
from jaxdet.models.heads import common
from jaxdet.models.layers import Conv
from jaxdet.ops.roi_align import multilevel_roi_align

HEAD_BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)  # torchvision's / detectron2's second-stage deltas


@dataclasses.dataclass(frozen=True)
class TwoStageSpec:
    """Static settings the module needs (hashable, so the module stays a plain dataclass)."""

    image_size: int
    level_sizes: tuple[int, ...]  # anchors per pyramid level, in order
    pre_nms_topk: int  # per level
    post_nms_topk: int
    nms_iou: float
    min_box_size: float
    roi_per_image: int
    roi_positive_fraction: float
    roi_fg_iou: float
    num_classes: int
    pooled_size: int = 7


class RPNHead(nn.Module):
    """Shared conv over the levels: {l: [B, H, W, F]} -> objectness [B, N], deltas [B, N, 4]."""

    channels: int
    num_anchors: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, pyramid: dict[int, Array]) -> tuple[Array, Array]:
        init = nn.initializers.normal(0.01)
        conv = Conv(self.channels, (3, 3), kernel_init=init, dtype=self.dtype, name="conv")
        obj = Conv(self.num_anchors, (1, 1), kernel_init=init, dtype=self.dtype, name="objectness")
        box = Conv(4 * self.num_anchors, (1, 1), kernel_init=init, dtype=self.dtype, name="deltas")
        logits, deltas = [], []
        for lvl in sorted(pyramid):
            h = nn.relu(conv(pyramid[lvl]))
            b = h.shape[0]
            logits.append(obj(h).reshape(b, -1))
            deltas.append(box(h).reshape(b, -1, 4))
        return jnp.concatenate(logits, 1).astype(jnp.float32), jnp.concatenate(deltas, 1).astype(jnp.float32)


class BoxHead(nn.Module):
    """RoIAlign + two FC layers: rois [B, R, 4] -> logits [B, R, K], class-specific deltas [B, R, C, 4]."""

    fc_dim: int
    num_logits: int
    num_classes: int
    pooled_size: int = 7
    aligned: bool = True  # RoIAlign's half-pixel shift (torchvision's MultiScaleRoIAlign: False)
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, pyramid: dict[int, Array], rois: Array) -> tuple[Array, Array]:
        b, r, _ = rois.shape
        # RoIs pool from P2..P5 at most (Lin et al.; P6 only feeds the RPN), as torchvision.
        pooled = multilevel_roi_align(
            {lvl: f for lvl, f in pyramid.items() if lvl <= 5}, rois, self.pooled_size, 2, self.aligned
        )
        x = pooled.reshape(b * r, -1)
        for i in range(2):
            x = nn.relu(nn.Dense(self.fc_dim, dtype=self.dtype, name=f"fc{i}")(x))
        logits = nn.Dense(self.num_logits, dtype=self.dtype, name="cls")(x)
        init = nn.initializers.normal(0.001)
        deltas = nn.Dense(4 * self.num_classes, kernel_init=init, dtype=self.dtype, name="box")(x)
        return (
            logits.reshape(b, r, -1).astype(jnp.float32),
            deltas.reshape(b, r, self.num_classes, 4).astype(jnp.float32),
        )


class FasterRCNNModule(nn.Module):
    """images -> RPN outputs, proposals, and box-head outputs on sampled (train) or all
    (eval) proposals. `targets` (the batch) drives RoI sampling; a "sampling" rng is used."""

    spec: TwoStageSpec
    anchors: Any  # np.ndarray [N, 4]
    num_anchors: int
    num_logits: int
    backbone: str
    fpn_channels: int
    min_level: int
    max_level: int
    fc_dim: int
    backbone_norm: str
    fpn_extra: str = "conv"
    roi_aligned: bool = True
    dtype: Any = jnp.float32
    axis_name: str | None = None

    def _proposals(self, logits: Array, deltas: Array) -> tuple[Array, Array]:
        """[B, N] objectness and [B, N, 4] deltas -> proposals [B, P, 4] (no gradient), valid [B, P]."""
        s = self.spec
        logits, deltas = jax.lax.stop_gradient(logits), jax.lax.stop_gradient(deltas)
        anchors = jnp.asarray(self.anchors)

        def one_image(logit, delta):
            boxes, scores, levels, start = [], [], [], 0
            for lvl, n in enumerate(s.level_sizes):
                k = min(s.pre_nms_topk, n)
                top, idx = jax.lax.top_k(logit[start : start + n], k)
                idx = idx + start
                boxes.append(box_coder.decode_deltas(anchors[idx], delta[idx]))
                scores.append(top)
                levels.append(jnp.full((k,), lvl, jnp.int32))
                start += n
            boxes = box_ops.clip_boxes(jnp.concatenate(boxes), s.image_size, s.image_size)
            scores, levels = jnp.concatenate(scores), jnp.concatenate(levels)
            wh = boxes[:, 2:] - boxes[:, :2]
            valid = (wh[:, 0] >= s.min_box_size) & (wh[:, 1] >= s.min_box_size) & jnp.isfinite(scores)
            kept = postprocess.batched_nms(boxes, scores, levels, valid, s.nms_iou, s.post_nms_topk)
            ok = kept >= 0
            return jnp.where(ok[:, None], boxes[jnp.maximum(kept, 0)], 0.0), ok

        return jax.vmap(one_image)(logits, deltas)

    def _sample_rois(self, proposals: Array, valid: Array, targets: dict[str, Array]) -> dict[str, Array]:
        """Appends ground truth to the proposals and samples `roi_per_image` RoIs per image."""
        s = self.spec
        rngs = jax.random.split(self.make_rng("sampling"), proposals.shape[0])

        def one_image(rng, props, ok, gt_boxes, gt_labels, gt_mask):
            cands = jnp.concatenate([props, gt_boxes])
            cand_ok = jnp.concatenate([ok, gt_mask])
            iou = jnp.where(gt_mask[None, :], box_ops.box_iou(cands, gt_boxes), -1.0)  # [P + M, M]
            best = jnp.max(iou, axis=1)
            matched = jnp.argmax(iou, axis=1)
            fg = cand_ok & (best >= s.roi_fg_iou)
            bg = cand_ok & ~fg
            pos, neg = assigners.sample_balanced(rng, fg, bg, s.roi_per_image, s.roi_positive_fraction)
            (idx,) = jnp.nonzero(pos | neg, size=s.roi_per_image, fill_value=0)
            sampled = jnp.arange(s.roi_per_image) < jnp.sum(pos | neg)
            is_pos = pos[idx] & sampled
            labels = jnp.where(is_pos, gt_labels[matched[idx]], s.num_classes)
            return cands[idx], labels, gt_boxes[matched[idx]], sampled, is_pos

        rois, labels, gt, sampled, pos = jax.vmap(one_image)(
            rngs, proposals, valid, targets["boxes"], targets["labels"], targets["box_mask"]
        )
        return {
            "roi_boxes": rois,
            "roi_labels": labels,
            "roi_gt_boxes": gt,
            "roi_sampled": sampled,
            "roi_positive": pos,
        }

    @nn.compact
    def __call__(self, images: Array, train: bool = False, targets: dict | None = None) -> dict[str, Array]:
        feats = ResNet(get_backbone_spec(self.backbone), self.backbone_norm, self.dtype, self.axis_name)(images, train)
        pyramid = FPN(self.fpn_channels, self.min_level, self.max_level, self.dtype, self.fpn_extra)(feats)
        rpn_logits, rpn_deltas = RPNHead(self.fpn_channels, self.num_anchors, self.dtype, name="rpn")(pyramid)
        proposals, valid = self._proposals(rpn_logits, rpn_deltas)
        out = {"rpn_logits": rpn_logits, "rpn_deltas": rpn_deltas, "proposals": proposals, "proposal_valid": valid}
        # One box head (one set of weights) for the sampled RoIs and the test-time proposals.
        box_head = BoxHead(
            self.fc_dim, self.num_logits, self.spec.num_classes, self.spec.pooled_size, self.roi_aligned, self.dtype
        )
        if targets is not None:
            out.update(self._sample_rois(proposals, valid, targets))
            out["roi_cls_logits"], out["roi_deltas"] = box_head(pyramid, out["roi_boxes"])
        if not train:
            out["det_cls_logits"], out["det_deltas"] = box_head(pyramid, proposals)
        return out


@dataclasses.dataclass(frozen=True)
class FasterRCNN:
    """A two-stage detector: the Flax module plus the pure RPN / box-head losses and predict."""

    module: nn.Module
    anchors: np.ndarray  # [N, 4]
    num_classes: int
    classification: losses.ClassificationLoss
    localization: losses.LocalizationLoss
    confidence: losses.ConfidenceLoss
    weights: dict[str, float]
    rpn_fg_iou: float
    rpn_bg_iou: float
    rpn_per_image: int
    rpn_positive_fraction: float
    image_size: int
    detect_kwargs: dict[str, Any]

    def _rpn_terms(self, outputs, batch, rng, image_ok, axis_name) -> tuple[Array, Array]:
        """RPN objectness (confidence) and localization over 256 sampled anchors per image."""
        anchors = jnp.asarray(self.anchors)
        fg, bg = self.rpn_fg_iou, self.rpn_bg_iou
        asg = jax.vmap(lambda b, m: assigners.max_iou_assign(anchors, b, m, fg, bg, True))(
            batch["boxes"], batch["box_mask"]
        )
        rngs = jax.random.split(rng, asg.label.shape[0])
        sample = lambda r, p, n: assigners.sample_balanced(r, p, n, self.rpn_per_image, self.rpn_positive_fraction)
        pos, neg = jax.vmap(sample)(rngs, (asg.label == assigners.POSITIVE) & image_ok, (asg.label == 0) & image_ok)
        norm = common.positive_normalizer(pos | neg, axis_name)  # torchvision: / sampled anchors
        _, gt_boxes = common.gather_targets(batch, asg.matched)
        anchors_b = jnp.broadcast_to(anchors, gt_boxes.shape)
        pred_boxes = box_coder.decode_deltas(anchors_b, outputs["rpn_deltas"])
        iou = jax.lax.stop_gradient(box_ops.elementwise_iou(pred_boxes, gt_boxes))
        obj_loss = common.confidence_term(self.confidence, outputs["rpn_logits"], pos, iou, pos | neg, norm)
        encode = lambda gt: box_coder.encode_deltas(anchors_b, gt)
        loc_loss = common.localization_term(
            self.localization, outputs["rpn_deltas"], encode, pred_boxes, gt_boxes, pos, norm
        )
        return obj_loss, loc_loss

    def _head_terms(self, outputs, image_ok, axis_name) -> tuple[Array, Array]:
        """Box-head classification and localization over the sampled RoIs."""
        sampled = outputs["roi_sampled"] & image_ok
        pos = outputs["roi_positive"] & image_ok
        norm = common.positive_normalizer(sampled, axis_name)  # torchvision: / sampled RoIs
        labels = outputs["roi_labels"]
        rois, gt_boxes = outputs["roi_boxes"], outputs["roi_gt_boxes"]
        cls_index = jnp.minimum(labels, self.num_classes - 1)[..., None, None]
        deltas = jnp.take_along_axis(outputs["roi_deltas"], cls_index, axis=2)[:, :, 0]  # [B, R, 4]
        pred_boxes = box_coder.decode_deltas(rois, deltas, HEAD_BOX_WEIGHTS)
        iou = jax.lax.stop_gradient(box_ops.elementwise_iou(pred_boxes, gt_boxes))
        quality = common.classification_quality(self.classification, iou)
        cls = self.classification.fn(outputs["roi_cls_logits"], labels, quality)
        cls_loss = jnp.sum(jnp.where(sampled, cls, 0.0)) / norm
        encode = lambda gt: box_coder.encode_deltas(rois, gt, HEAD_BOX_WEIGHTS)
        loc_loss = common.localization_term(self.localization, deltas, encode, pred_boxes, gt_boxes, pos, norm)
        return cls_loss, loc_loss

    def loss_fn(
        self, outputs: dict[str, Array], batch: dict[str, Array], rng: Array, axis_name: str | None = None
    ) -> tuple[Array, dict[str, Array]]:
        """Weighted total and the three named terms (see the module docstring)."""
        image_ok = common.image_mask(batch, outputs["rpn_logits"].shape[0])
        obj_loss, rpn_loc = self._rpn_terms(outputs, batch, rng, image_ok, axis_name)
        cls_loss, head_loc = self._head_terms(outputs, image_ok, axis_name)
        terms = {"classification": cls_loss, "localization": rpn_loc + head_loc, "confidence": obj_loss}
        return common.weighted_total(self.weights, terms), terms

    def predict(self, outputs: dict[str, Array]) -> postprocess.Detections:
        """Test-time proposals through the box head -> `Detections` [B, D] in input pixels."""
        props = outputs["proposals"]  # [B, P, 4]
        boxes = box_coder.decode_deltas(props[:, :, None, :], outputs["det_deltas"], HEAD_BOX_WEIGHTS)
        boxes = box_ops.clip_boxes(boxes, self.image_size, self.image_size)  # [B, P, C, 4]
        scores = common.class_probabilities(self.classification, outputs["det_cls_logits"], self.num_classes)
        scores = jnp.where(outputs["proposal_valid"][..., None], scores, 0.0)
        return common.detect(self.detect_kwargs, scores, boxes)


def build_faster_rcnn(config, num_classes: int, axis_name: str | None) -> FasterRCNN:
    """Faster R-CNN + FPN from `config.model`, `config.loss` and `config.data`."""
    m = config.model
    cls_loss, loc_loss, conf_loss, num_logits = common.build_losses(config, num_classes)
    if conf_loss.target == "none":
        raise ConfigError(
            "config.loss.confidence='none': Faster R-CNN's RPN needs an objectness loss; use "
            "'sigmoid_binary_cross_entropy' (standard) or an IoU-aware one"
        )
    levels = list(range(m.min_level, m.max_level + 1))
    scales = tuple(2.0 ** (i / m.num_scales) for i in range(m.num_scales))
    ratios = tuple(m.aspect_ratios)
    anchors = anchor_ops.anchor_grid(config.data.image_size, levels, m.anchor_size, scales, ratios, m.anchor_offset)
    per_loc = anchor_ops.anchors_per_location(scales, ratios)
    spec = TwoStageSpec(
        image_size=config.data.image_size,
        level_sizes=tuple(h * w * per_loc for h, w in anchor_ops.level_shapes(config.data.image_size, levels)),
        pre_nms_topk=m.rpn_pre_nms_topk,
        post_nms_topk=m.rpn_post_nms_topk,
        nms_iou=m.rpn_nms_iou,
        min_box_size=1e-3,
        roi_per_image=m.roi_per_image,
        roi_positive_fraction=m.roi_positive_fraction,
        roi_fg_iou=m.fg_iou,
        num_classes=num_classes,
    )
    module = FasterRCNNModule(
        spec=spec,
        anchors=anchors,
        num_anchors=per_loc,
        num_logits=num_logits,
        backbone=m.backbone,
        fpn_channels=m.fpn_channels,
        min_level=m.min_level,
        max_level=m.max_level,
        fc_dim=m.fc_dim,
        backbone_norm=m.backbone_norm,
        fpn_extra=m.get("fpn_extra", "conv"),  # (absent from configs recorded before they existed)
        roi_aligned=m.get("roi_aligned", True),
        dtype=jnp.dtype(config.train.compute_dtype),
        axis_name=axis_name if m.sync_batch_norm else None,
    )
    return FasterRCNN(
        module, anchors, num_classes, cls_loss, loc_loss, conf_loss, common.loss_weights(config.loss),
        m.rpn_fg_iou, m.rpn_bg_iou, m.rpn_per_image, m.rpn_positive_fraction, config.data.image_size,
        common.detect_kwargs(m),
    )  # fmt: skip
