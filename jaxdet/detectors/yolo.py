"""YOLO (YOLOX-style, Ge et al. 2021): anchor-free decoupled head with objectness and
SimOTA targets with static shapes.

Each grid point of a stride 8/16/32 PAN predicts class logits, log ltrb distances (in
strides) and an objectness logit. Terms: classification on positives (on every point
when there is no confidence term), localization on positives, confidence = objectness
on every point. Scores at inference: class probability x objectness.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from jaxdet import anchors as anchor_ops
from jaxdet import box_coder, postprocess
from jaxdet.assigners import registry as assigner_registry
from jaxdet.detectors import base
from jaxdet.losses import assigned
from jaxdet.losses import terms as loss_terms
from jaxdet.models.heads.yolo import YOLOHead

# exp() of a larger log-distance overflows; no box is 1000/16 strides from its point.
_MAX_LOG_DISTANCE = math.log(1000.0 / 16)


def section() -> dict:
    """config.model.yolo's fields and defaults."""
    return dict(
        head_convs=2,
        head_norm="group",
        point_offset=0.5,  # grid points at (i + offset) * stride
        # Positives (jaxdet/assigners/registry.py): "simota" (YOLOX's: candidates within
        # center_radius strides, dynamic k up to simota_k), "task_aligned", "atss" or "max_iou"
        # (on prior squares of prior_scale strides), and their fields.
        **assigner_registry.section_fields("simota"),
        prior_scale=8.0,
    )


def decode_ltrb(points: Array, strides: Array, raw: Array) -> Array:
    """Head output (log of distances in strides) [..., P, 4] -> xyxy boxes [..., P, 4]."""
    return box_coder.decode_ltrb(points, jnp.exp(jnp.minimum(raw, _MAX_LOG_DISTANCE)), strides)


def encode_ltrb(points: Array, strides: Array, boxes: Array) -> Array:
    """xyxy boxes -> the head's encoding (log of distances in strides); points outside a box
    (SimOTA's centre region admits them) get a tiny distance instead of a negative one."""
    return jnp.log(jnp.maximum(box_coder.encode_ltrb(points, boxes, strides), 1e-3))


@dataclasses.dataclass(frozen=True)
class YOLO(base.OneLossSet):
    """Head outputs "cls_logits" [B, P, K], "box_ltrb" [B, P, 4], "obj_logits" [B, P] over
    `points` [P, 2] with `strides` [P]."""

    module: nn.Module
    points: np.ndarray
    strides: np.ndarray
    losses: loss_terms.LossSet
    assigner: assigner_registry.Assigner
    detect_kwargs: dict[str, Any]

    def decode(self, raw: Array) -> Array:
        return decode_ltrb(jnp.asarray(self.points), jnp.asarray(self.strides), raw)

    def encode(self, boxes: Array) -> Array:
        return encode_ltrb(jnp.asarray(self.points), jnp.asarray(self.strides), boxes)

    def scores(self, outputs: dict[str, Array]) -> Array:
        """[B, P, C]: class probability x objectness (class probability alone without a confidence term)."""
        probs = self.losses.class_probabilities(outputs["cls_logits"])
        if self.losses.has_confidence:
            probs = probs * jax.nn.sigmoid(outputs["obj_logits"])[..., None]
        return probs

    def assign(self, batch: dict[str, Array], outputs: dict[str, Array]) -> assigned.Targets:
        """Targets [B, P] from the assigner (SimOTA's costs from the current predictions)."""
        predictions = lambda: (self.decode(outputs["box_ltrb"]), self.scores(outputs))  # noqa: E731
        return base.assigned_targets(self.assigner, batch, self.num_classes, predictions)

    def loss_fn(
        self, outputs: dict[str, Array], batch: dict[str, Array], rng: Array, axis_name: str | None = None
    ) -> tuple[Array, dict[str, Array]]:
        """Weighted total and the three named terms, each normalised by the positives."""
        del rng
        terms = assigned.term_losses(
            self.losses,
            self.assign(batch, outputs),
            outputs["box_ltrb"],
            self.decode,
            self.encode,
            cls_logits=outputs["cls_logits"],
            conf_logits=outputs["obj_logits"],
            axis_name=axis_name,
            # With objectness, background is the confidence term's job (YOLOX); without it,
            # classification must also learn background at every point.
            cls_region="positives" if self.losses.has_confidence else "assigned",
            conf_region="assigned",
            centers=jnp.asarray(self.points),
        )
        return self.losses.total(terms), terms

    def predict(self, outputs: dict[str, Array]) -> postprocess.Detections:
        """Head outputs -> `Detections` [B, D] in input pixels."""
        return base.detect(self.detect_kwargs, self.scores(outputs), self.decode(outputs["box_ltrb"]))


def build(config, ctx: base.BuildContext) -> YOLO:
    """YOLO from `config.model` (+ `.yolo`), `config.loss` and `config.data`."""
    m, y = config.model, config.model.yolo
    losses = loss_terms.build_loss_set(config.loss, ctx.num_classes)
    base.refuse_distributions(losses, "yolo")
    levels = list(range(m.min_level, m.max_level + 1))
    points, strides = anchor_ops.point_grid(config.data.image_size, levels, y.point_offset)
    head = functools.partial(
        YOLOHead,
        losses.num_logits,
        m.neck_channels,
        y.head_convs,
        y.head_norm,
        dtype=jnp.dtype(config.train.compute_dtype),
        kernels=ctx.kernels,
    )
    module = base.dense_model(config, ctx, "pan", lambda pyramid: head()(pyramid))
    level_sizes = anchor_ops.anchors_per_level(config.data.image_size, levels, 1)
    priors = assigner_registry.point_priors(points, strides, level_sizes, y.prior_scale)
    assigner = assigner_registry.build(y, "config.model.yolo", "yolo", priors)
    return YOLO(module, points, strides, losses, assigner, base.detect_kwargs(m, ctx.kernels))


DEFINITION = base.register(
    base.DetectorDef(
        "yolo",
        section,
        "pan",
        build,
        functools.partial(base.loss_implies, quality_branch=False),  # objectness is always there
        "YOLOX-style: anchor-free, objectness, SimOTA",
    )
)
