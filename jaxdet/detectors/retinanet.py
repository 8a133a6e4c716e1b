"""RetinaNet (Lin et al. 2017): anchors on P3-P7, shared conv towers, max-IoU targets,
focal loss; `confidence` is 0 unless a confidence loss adds a quality branch."""

from __future__ import annotations

import functools

import jax.numpy as jnp

from jaxdet import anchors as anchor_ops
from jaxdet.detectors import base
from jaxdet.detectors.anchor_based import AnchorDetector
from jaxdet.errors import ConfigError
from jaxdet.losses import terms as loss_terms
from jaxdet.models import convert
from jaxdet.models.heads.retinanet import RetinaNetHead

ASSIGNERS = ("max_iou", "task_aligned", "atss")


def section() -> dict:
    """config.model.retinanet's fields and defaults."""
    return dict(
        head_convs=2,
        head_norm="group",  # "group" or "none" (torchvision's v1 head)
        anchor_size=2.0,  # anchor side = anchor_size * stride (the paper's 4; small objects here)
        num_scales=3,  # octave scales 2^(i / num_scales)
        aspect_ratios=(1.0,),
        anchor_offset=0.5,  # anchor centres at (i + offset) * stride
        anchor_style="centred",  # or "torchvision": its rounded anchors at offset 0 (jaxdet.anchors)
        # "max_iou" (fg_iou / bg_iou below), "task_aligned" (TOOD: the tal_topk anchors of
        # highest score^tal_alpha x CIoU^tal_beta whose centres lie in the box, soft targets) or
        # "atss" (ATSS: the atss_topk nearest anchors per level, IoU >= their mean + std).
        assigner="max_iou",
        fg_iou=0.5,
        bg_iou=0.4,
        tal_topk=13,
        tal_alpha=1.0,
        tal_beta=6.0,
        atss_topk=9,
        box_weights=(1.0, 1.0, 1.0, 1.0),
        # Post-processing as torchvision's and detectron2's RetinaNet: model.pre_nms_topk
        # candidates per level (False: over all levels), boxes clipped to the image before NMS.
        topk_per_level=False,
        clip_boxes=False,
    )


def build(config, ctx: base.BuildContext) -> AnchorDetector:
    """RetinaNet from `config.model` (+ `.retinanet`), `config.loss` and `config.data`."""
    m, r = config.model, config.model.retinanet
    losses = loss_terms.build_loss_set(config.loss, ctx.num_classes)
    base.refuse_distributions(losses, "retinanet")
    if r.assigner not in ASSIGNERS:
        raise ConfigError(f"config.model.retinanet.assigner={r.assigner!r}; valid: {ASSIGNERS}")
    for name, field in (("task_aligned", "tal_topk"), ("atss", "atss_topk")):
        if r.assigner == name and r[field] < 1:
            raise ConfigError(f"config.model.retinanet.{field}={r[field]}; need at least 1 anchor per box")
    scales = anchor_ops.octave_scales(r.num_scales)
    anchors = base.section_anchors(config, "retinanet", scales)
    per_location = anchor_ops.anchors_per_location(scales, r.aspect_ratios)
    head = functools.partial(
        RetinaNetHead,
        losses.num_logits,
        per_location,
        r.head_convs,
        m.neck_channels,
        r.head_norm,
        quality_branch=losses.has_confidence,
        dtype=jnp.dtype(config.train.compute_dtype),
        kernels=ctx.kernels,
    )
    module = base.dense_model(config, ctx, "fpn", lambda pyramid: head()(pyramid))
    levels = range(m.min_level, m.max_level + 1)
    level_sizes = anchor_ops.anchors_per_level(config.data.image_size, levels, per_location)
    return AnchorDetector(
        module,
        anchors,
        losses,
        r.fg_iou,
        r.bg_iou,
        tuple(r.box_weights),
        base.detect_kwargs(m, ctx.kernels),
        level_sizes=level_sizes if r.topk_per_level else None,
        clip_size=config.data.image_size if r.clip_boxes else None,
        tal=(r.tal_topk, r.tal_alpha, r.tal_beta) if r.assigner == "task_aligned" else None,
        atss=(tuple(anchor_ops.anchors_per_level(config.data.image_size, levels, per_location)), r.atss_topk)
        if r.assigner == "atss"
        else None,
    )


DEFINITION = base.register(
    base.DetectorDef(
        "retinanet",
        section,
        "fpn",
        build,
        base.loss_implies,
        "RetinaNet: anchors, max-IoU, focal loss",
        convert=convert.retinanet_from_torchvision,
    )
)
