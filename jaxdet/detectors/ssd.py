"""SSD (Liu et al. 2016): multi-scale default boxes, per-level heads, max-IoU targets (or
any assigner of jaxdet/assigners/registry.py) and hard negative mining (the classification
term covers the positives and the 3 hardest negatives per positive, a static shape via
ranking)."""

from __future__ import annotations

import functools

import jax.numpy as jnp

from jaxdet import anchors as anchor_ops
from jaxdet.assigners import registry as assigner_registry
from jaxdet.detectors import base
from jaxdet.detectors.anchor_based import AnchorDetector
from jaxdet.losses import terms as loss_terms
from jaxdet.models.heads.ssd import ssd_head


def section() -> dict:
    """config.model.ssd's fields and defaults."""
    return dict(
        # Default-box scales (fractions of the image) from the finest to the coarsest level.
        min_scale=0.07,
        max_scale=0.6,
        # Aspect ratios (width / height) per level; one list = the same on every level.
        aspect_ratios=((1.0, 2.0, 0.5),),
        box_offset=0.5,  # default-box centres at (i + offset) * stride
        iou_threshold=0.5,  # max_iou: positives at IoU >= this, negatives below (every box keeps its best)
        # Positives and negatives (jaxdet/assigners/registry.py): "max_iou" (at iou_threshold,
        # SSD's), "atss", "task_aligned" or "simota", and their fields.
        **assigner_registry.section_fields("max_iou", fg_iou=None, bg_iou=None),
        neg_pos_ratio=3,
        box_weights=(10.0, 10.0, 5.0, 5.0),  # SSD's "variances" 0.1, 0.2
    )


def build(config, ctx: base.BuildContext) -> AnchorDetector:
    """SSD from `config.model` (+ `.ssd`), `config.loss` and `config.data`."""
    m, s = config.model, config.model.ssd
    losses = loss_terms.build_loss_set(config.loss, ctx.num_classes)
    base.refuse_distributions(losses, "ssd")
    levels = list(range(m.min_level, m.max_level + 1))
    ratios = [tuple(r) for r in s.aspect_ratios]
    if len(ratios) == 1:
        ratios = ratios * len(levels)
    shapes = anchor_ops.ssd_box_shapes(len(levels), s.min_scale, s.max_scale, ratios)
    anchors = anchor_ops.ssd_default_boxes(config.data.image_size, levels, shapes, s.box_offset)
    level_sizes = [h * w * len(x) for (h, w), x in zip(anchor_ops.level_shapes(config.data.image_size, levels), shapes)]
    priors = assigner_registry.anchor_priors(anchors, level_sizes, levels)
    head = functools.partial(
        ssd_head,
        num_logits=losses.num_logits,
        boxes_per_level=tuple(len(x) for x in shapes),
        quality_branch=losses.has_confidence,
        dtype=jnp.dtype(config.train.compute_dtype),
        kernels=ctx.kernels,
    )
    return AnchorDetector(
        base.dense_model(config, ctx, "ssd_extras", head),
        anchors,
        losses,
        # SSD's one threshold is max-IoU's fg_iou and bg_iou.
        assigner_registry.build(s, "config.model.ssd", "ssd", priors, fg_iou=s.iou_threshold, bg_iou=s.iou_threshold),
        tuple(s.box_weights),
        base.detect_kwargs(m, ctx.kernels),
        cls_region="hard_negatives",
        neg_pos_ratio=s.neg_pos_ratio,
    )


DEFINITION = base.register(
    base.DetectorDef("ssd", section, "ssd_extras", build, base.loss_implies, "SSD: default boxes, hard negative mining")
)
