"""FCOS (Tian et al. 2019) as torchvision's `fcos_resnet50_fpn`: one point per feature
cell of P3-P7, each regressing its distances to the box sides (in strides); targets from
centre sampling and a size range per level (`assigners.fcos_assign`); focal loss on
every point, GIoU and centre-ness (the confidence term) on the positives; scores
sqrt(class probability x centre-ness).

Any loss of the table swaps in: an encoded-space localization loss (L1, smooth L1)
regresses the distances in strides; a confidence loss other than "centerness" trains the
same branch as objectness or IoU; "none" removes it.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from jax import Array

from jaxdet import anchors as anchor_ops
from jaxdet import box_coder, postprocess
from jaxdet.assigners import registry as assigner_registry
from jaxdet.detectors import base
from jaxdet.errors import ConfigError
from jaxdet.losses import assigned
from jaxdet.losses import terms as loss_terms
from jaxdet.models import convert
from jaxdet.models.heads.fcos import FCOSHead


def section() -> dict:
    """config.model.fcos's fields and defaults."""
    return dict(
        head_convs=4,
        head_norm="group",
        point_offset=0.5,  # points at (i + offset) * stride; torchvision's are at offset 0
        # "centred", or "torchvision": its anchors' centres, i * (image_size // H) (the same
        # where 2^level divides the image size; at 800 px P6/P7 sit 61 and 114 px apart).
        point_style="centred",
        # Positives (jaxdet/assigners/registry.py): "fcos" (centre sampling within center_radius
        # strides, Chebyshev, and the size ranges below), "atss" (ATSS's FCOS: prior squares of
        # prior_scale strides), "max_iou", "simota" or "task_aligned", and their fields.
        **assigner_registry.section_fields("fcos", center_radius=1.5),
        prior_scale=8.0,
        # A level regresses max(l, t, r, b) in (lo, hi) x its stride, the first level from 0,
        # the last to infinity: FCOS's 0-64-128-256-512-inf for P3-P7.
        regress_range=(4.0, 8.0),
        # Post-processing as torchvision's FCOS: model.pre_nms_topk candidates per level,
        # boxes clipped to the image before NMS.
        topk_per_level=True,
        clip_boxes=True,
    )


def regress_bounds(levels: list[int], strides: np.ndarray, regress_range) -> tuple[np.ndarray, np.ndarray]:
    """Per point (lower, upper) bounds [P] of the largest side distance its level regresses."""
    lo, hi = regress_range
    lower, upper = lo * strides, hi * strides
    lower[strides == 2 ** levels[0]] = 0.0
    upper[strides == 2 ** levels[-1]] = np.inf
    return lower.astype(np.float32), upper.astype(np.float32)


@dataclasses.dataclass(frozen=True)
class FCOS(base.OneLossSet):
    """Head outputs "cls_logits" [B, P, K], "box_ltrb" [B, P, 4] (distances in strides) and,
    with a confidence loss, "ctr_logits" [B, P], over `points` [P, 2] with `strides` [P]."""

    module: nn.Module
    points: np.ndarray
    strides: np.ndarray
    losses: loss_terms.LossSet
    assigner: assigner_registry.Assigner
    detect_kwargs: dict[str, Any]
    level_sizes: tuple[int, ...] | None = None
    clip_size: int | None = None

    def decode(self, ltrb: Array) -> Array:
        """[B, P, 4] distances in strides -> xyxy boxes in input pixels."""
        return box_coder.decode_ltrb(jnp.asarray(self.points), ltrb, jnp.asarray(self.strides))

    def encode(self, boxes: Array) -> Array:
        return box_coder.encode_ltrb(jnp.asarray(self.points), boxes, jnp.asarray(self.strides))

    def assign(self, batch: dict[str, Array], outputs: dict[str, Array] | None = None) -> assigned.Targets:
        """Targets [B, P] from the assigner (those that match on predictions read `outputs`)."""

        def predictions():
            return self.decode(outputs["box_ltrb"]), self.scores(outputs)

        return base.assigned_targets(self.assigner, batch, self.num_classes, predictions)

    def loss_fn(
        self, outputs: dict[str, Array], batch: dict[str, Array], rng: Array, axis_name: str | None = None
    ) -> tuple[Array, dict[str, Array]]:
        """Weighted total and the three named terms, each divided by the batch's positives."""
        del rng
        terms = assigned.term_losses(
            self.losses,
            self.assign(batch, outputs),
            outputs["box_ltrb"],
            self.decode,
            self.encode,
            cls_logits=outputs["cls_logits"],
            conf_logits=outputs.get("ctr_logits"),
            axis_name=axis_name,
            # torchvision: every point (its assigner has no ignore band; max_iou's is left out).
            cls_region="assigned",
            conf_region="assigned",
            centers=jnp.asarray(self.points),
        )
        return self.losses.total(terms), terms

    def scores(self, outputs: dict[str, Array]) -> Array:
        """[B, P, C]: sqrt(class probability x sigmoid(confidence)), or the probability alone."""
        return base.class_scores(self.losses, outputs["cls_logits"], outputs.get("ctr_logits"))

    def predict(self, outputs: dict[str, Array]) -> postprocess.Detections:
        boxes = self.decode(outputs["box_ltrb"])
        return base.detect(self.detect_kwargs, self.scores(outputs), boxes, self.level_sizes, self.clip_size)


def build(config, ctx: base.BuildContext) -> FCOS:
    """FCOS from `config.model` (+ `.fcos`), `config.loss` and `config.data`."""
    m, f = config.model, config.model.fcos
    losses = loss_terms.build_loss_set(config.loss, ctx.num_classes)
    base.refuse_distributions(losses, "fcos")
    if len(f.regress_range) != 2 or not 0 <= f.regress_range[0] < f.regress_range[1]:
        raise ConfigError(f"config.model.fcos.regress_range={tuple(f.regress_range)}; need (lo, hi) with 0 <= lo < hi")
    levels = list(range(m.min_level, m.max_level + 1))
    anchor_ops.check_style(
        f.point_style, f.point_offset, "config.model.fcos.point_style", "config.model.fcos.point_offset"
    )
    points, strides = anchor_ops.point_grid(config.data.image_size, levels, f.point_offset, f.point_style)
    lower, upper = regress_bounds(levels, strides, f.regress_range)
    head = functools.partial(
        FCOSHead,
        losses.num_logits,
        m.neck_channels,
        f.head_convs,
        f.head_norm,
        quality_branch=losses.has_confidence,
        dtype=jnp.dtype(config.train.compute_dtype),
        kernels=ctx.kernels,
    )
    module = base.dense_model(config, ctx, "fpn", lambda pyramid: head()(pyramid))
    level_sizes = anchor_ops.anchors_per_level(config.data.image_size, levels, 1)
    priors = assigner_registry.point_priors(points, strides, level_sizes, f.prior_scale, (lower, upper))
    assigner = assigner_registry.build(f, "config.model.fcos", "fcos", priors)
    return FCOS(
        module, points, strides, losses, assigner, base.detect_kwargs(m, ctx.kernels),
        level_sizes=level_sizes if f.topk_per_level else None,
        clip_size=config.data.image_size if f.clip_boxes else None,
    )  # fmt: skip


DEFINITION = base.register(
    base.DetectorDef(
        "fcos",
        section,
        "fpn",
        build,
        base.loss_implies,
        "FCOS: anchor-free points, centre sampling, centre-ness",
        convert=convert.fcos_from_torchvision,
    )
)
