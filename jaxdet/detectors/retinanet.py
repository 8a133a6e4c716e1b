"""RetinaNet (Lin et al. 2017): anchors on P3-P7, shared conv towers, max-IoU targets,
focal loss; `confidence` is 0 unless a confidence loss adds a quality branch."""

from __future__ import annotations

import functools

import jax.numpy as jnp

from jaxdet import anchors as anchor_ops
from jaxdet.assigners import registry as assigner_registry
from jaxdet.detectors import base
from jaxdet.detectors.anchor_based import AnchorDetector
from jaxdet.losses import terms as loss_terms
from jaxdet.models import convert
from jaxdet.models.heads.retinanet import RetinaNetHead


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
        # Positives and negatives (jaxdet/assigners/registry.py): "atss", "max_iou" (fg_iou / bg_iou,
        # the paper's and torchvision's), "task_aligned" (TOOD, soft targets) or "simota", and
        # their fields. ATSS beats max-IoU by 0.0125 AP on jaxdet_shapes (seeds 0-2, p = 0.017;
        # docs/ablations/retinanet_assigner); retinanet_r50.py sets max_iou, as its references.
        **assigner_registry.section_fields("atss"),
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
    priors = assigner_registry.anchor_priors(anchors, level_sizes, levels)
    return AnchorDetector(
        module,
        anchors,
        losses,
        assigner_registry.build(r, "config.model.retinanet", "retinanet", priors),
        tuple(r.box_weights),
        base.detect_kwargs(m, ctx.kernels),
        level_sizes=level_sizes if r.topk_per_level else None,
        clip_size=config.data.image_size if r.clip_boxes else None,
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
