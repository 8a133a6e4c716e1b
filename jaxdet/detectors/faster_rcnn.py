"""Faster R-CNN with FPN (Ren et al. 2015; Lin et al. 2017), every shape static.

RPN: a shared conv head over the FPN levels, max-IoU anchor targets (0.7 / 0.3) with
random balanced sampling (256 per image, half positive at most). Second stage: 512 RoIs
per image sampled from the proposals and the ground truth (a quarter positive at most,
IoU >= 0.5), multi-level RoIAlign (7x7), two FC layers, class scores and class-specific
deltas (`rcnn_module.py`). Four terms: `rpn_objectness` (confidence family), `rpn_box`
(localization), `roi_classification` (classification), `roi_box` (localization). Both
stages' terms come from the shared dense loss path; a family flag swaps both stages'
terms of that family, `loss.terms.<term>` one of them.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from jaxdet import anchors as anchor_ops
from jaxdet import assigners, box_coder, postprocess
from jaxdet import boxes as box_ops
from jaxdet.detectors import base
from jaxdet.detectors.rcnn_module import FasterRCNNModule, TwoStageSpec
from jaxdet.errors import ConfigError
from jaxdet.losses import assigned
from jaxdet.losses import terms as loss_terms
from jaxdet.models import convert

HEAD_BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)  # torchvision's / detectron2's second-stage deltas
RPN_TERMS = {"rpn_objectness": "confidence", "rpn_box": "localization"}
ROI_TERMS = {"roi_classification": "classification", "roi_box": "localization"}


def section() -> dict:
    """config.model.faster_rcnn's fields and defaults (the standard recipe's counts)."""
    return dict(
        anchor_size=4.0,  # side = 4 x stride: 16 px on P2 .. 128 px on P5
        num_scales=1,
        aspect_ratios=(0.5, 1.0, 2.0),
        anchor_offset=0.5,
        anchor_style="centred",  # or "torchvision": its rounded anchors at offset 0 (jaxdet.anchors)
        rpn_fg_iou=0.7,
        rpn_bg_iou=0.3,
        rpn_per_image=256,
        rpn_positive_fraction=0.5,
        rpn_pre_nms_topk=1000,  # per level
        rpn_post_nms_topk=1000,
        rpn_nms_iou=0.7,
        roi_per_image=512,
        roi_positive_fraction=0.25,
        roi_fg_iou=0.5,
        fc_dim=1024,
        roi_aligned=True,  # RoIAlign with the half-pixel shift (False: torchvision's pooler)
    )


@dataclasses.dataclass(frozen=True)
class FasterRCNN:
    """A two-stage detector: the Flax module plus the pure RPN / box-head losses and predict."""

    module: nn.Module
    anchors: np.ndarray  # [N, 4]
    rpn_losses: loss_terms.LossSet  # RPN_TERMS
    losses: loss_terms.LossSet  # ROI_TERMS (the box head: its class logits and scores)
    rpn_fg_iou: float
    rpn_bg_iou: float
    rpn_per_image: int
    rpn_positive_fraction: float
    image_size: int
    detect_kwargs: dict[str, Any]

    @property
    def num_classes(self) -> int:
        return self.losses.num_classes

    @property
    def term_weights(self) -> dict[str, float]:
        return {**self.rpn_losses.weights, **self.losses.weights}

    def _rpn_terms(self, outputs, batch, rng, axis_name) -> dict[str, Array]:
        """`rpn_objectness` and `rpn_box` over `rpn_per_image` sampled anchors."""
        anchors = jnp.asarray(self.anchors)
        fg, bg = self.rpn_fg_iou, self.rpn_bg_iou
        asg = jax.vmap(lambda b, m: assigners.max_iou_assign(anchors, b, m, fg, bg, True))(
            batch["boxes"], batch["box_mask"]
        )
        t = assigned.targets_from_assignment(asg, batch, self.num_classes)
        rngs = jax.random.split(rng, t.positive.shape[0])
        sample = lambda r, p, n: assigners.sample_balanced(r, p, n, self.rpn_per_image, self.rpn_positive_fraction)  # noqa: E731
        pos, neg = jax.vmap(sample)(rngs, t.positive, t.negative)
        anchors_b = jnp.broadcast_to(anchors, t.boxes.shape)
        return assigned.term_losses(
            self.rpn_losses,
            t._replace(positive=pos, negative=neg),
            outputs["rpn_deltas"],
            lambda raw: box_coder.decode_deltas(anchors_b, raw),
            lambda gt: box_coder.encode_deltas(anchors_b, gt),
            conf_logits=outputs["rpn_logits"],
            axis_name=axis_name,
            normalize_by="assigned",  # torchvision: / sampled anchors
            centers=jnp.asarray(anchor_ops.centers(self.anchors)),
        )

    def _head_terms(self, outputs, batch, axis_name) -> dict[str, Array]:
        """`roi_classification` and `roi_box` over the sampled RoIs."""
        valid = jnp.broadcast_to(
            assigned.image_mask(batch, outputs["roi_sampled"].shape[0]), outputs["roi_sampled"].shape
        )
        pos = outputs["roi_positive"] & valid
        t = assigned.Targets(
            outputs["roi_labels"], outputs["roi_gt_boxes"], pos, outputs["roi_sampled"] & valid & ~pos, valid
        )
        rois = outputs["roi_boxes"]
        cls_index = jnp.minimum(t.labels, self.num_classes - 1)[..., None, None]
        deltas = jnp.take_along_axis(outputs["roi_deltas"], cls_index, axis=2)[:, :, 0]  # [B, R, 4]
        return assigned.term_losses(
            self.losses,
            t,
            deltas,
            lambda raw: box_coder.decode_deltas(rois, raw, HEAD_BOX_WEIGHTS),
            lambda gt: box_coder.encode_deltas(rois, gt, HEAD_BOX_WEIGHTS),
            cls_logits=outputs["roi_cls_logits"],
            axis_name=axis_name,
            normalize_by="assigned",  # torchvision: / sampled RoIs
        )

    def loss_fn(
        self, outputs: dict[str, Array], batch: dict[str, Array], rng: Array, axis_name: str | None = None
    ) -> tuple[Array, dict[str, Array]]:
        """Weighted total and the four named terms (see the module docstring)."""
        rpn = self._rpn_terms(outputs, batch, rng, axis_name)
        head = self._head_terms(outputs, batch, axis_name)
        return self.rpn_losses.total(rpn) + self.losses.total(head), {**rpn, **head}

    def predict(self, outputs: dict[str, Array]) -> postprocess.Detections:
        """Test-time proposals through the box head -> `Detections` [B, D] in input pixels."""
        props = outputs["proposals"]  # [B, P, 4]
        boxes = box_coder.decode_deltas(props[:, :, None, :], outputs["det_deltas"], HEAD_BOX_WEIGHTS)
        boxes = box_ops.clip_boxes(boxes, self.image_size, self.image_size)  # [B, P, C, 4]
        scores = self.losses.class_probabilities(outputs["det_cls_logits"])
        scores = jnp.where(outputs["proposal_valid"][..., None], scores, 0.0)
        # Boxes thinner than 0.01 px after clipping are dropped, as torchvision's box head does.
        return base.detect({**self.detect_kwargs, "min_size": 1e-2}, scores, boxes)


def build(config, ctx: base.BuildContext) -> FasterRCNN:
    """Faster R-CNN from `config.model` (+ `.faster_rcnn`), `config.loss` and `config.data`."""
    m, f = config.model, config.model.faster_rcnn
    rpn_losses = loss_terms.build_loss_set(config.loss, ctx.num_classes, RPN_TERMS)
    losses = loss_terms.build_loss_set(config.loss, ctx.num_classes, ROI_TERMS)
    base.refuse_distributions(rpn_losses, "faster_rcnn")
    base.refuse_distributions(losses, "faster_rcnn")
    if not rpn_losses.has_confidence:
        raise ConfigError(
            "the rpn_objectness term's loss is 'none' (config.loss.confidence or config.loss.terms.rpn_objectness): "
            "Faster R-CNN's RPN needs an objectness loss; use 'sigmoid_binary_cross_entropy' (standard) or an "
            "IoU-aware one"
        )
    size = config.data.image_size
    levels = list(range(m.min_level, m.max_level + 1))
    scales = anchor_ops.octave_scales(f.num_scales)
    ratios = tuple(f.aspect_ratios)
    anchors = base.section_anchors(config, "faster_rcnn", scales)
    per_loc = anchor_ops.anchors_per_location(scales, ratios)
    spec = TwoStageSpec(
        image_size=size,
        level_sizes=anchor_ops.anchors_per_level(size, levels, per_loc),
        pre_nms_topk=f.rpn_pre_nms_topk,
        post_nms_topk=f.rpn_post_nms_topk,
        nms_iou=f.rpn_nms_iou,
        min_box_size=1e-3,
        roi_per_image=f.roi_per_image,
        roi_positive_fraction=f.roi_positive_fraction,
        roi_fg_iou=f.roi_fg_iou,
        num_classes=ctx.num_classes,
    )
    module = FasterRCNNModule(
        spec=spec,
        anchors=anchors,
        num_anchors=per_loc,
        num_logits=losses.num_logits,
        backbone=m.backbone,
        backbone_norm=m.backbone_norm,
        neck=base.neck_spec(config, ctx, "fpn"),
        fc_dim=f.fc_dim,
        roi_aligned=f.roi_aligned,
        dtype=jnp.dtype(config.train.compute_dtype),
        axis_name=ctx.axis_name,
        kernels=ctx.kernels,
    )
    return FasterRCNN(
        module, anchors, rpn_losses, losses, f.rpn_fg_iou, f.rpn_bg_iou, f.rpn_per_image, f.rpn_positive_fraction, size,
        base.detect_kwargs(m, ctx.kernels),
    )  # fmt: skip


DEFINITION = base.register(
    base.DetectorDef(
        "faster_rcnn",
        section,
        "fpn",
        build,
        functools.partial(base.loss_implies, quality_branch=False),  # the RPN's objectness is always there
        "Faster R-CNN + FPN: RPN, RoIAlign, box head",
        terms={**RPN_TERMS, **ROI_TERMS},
        convert=convert.faster_rcnn_from_torchvision,
    )
)
