"""YOLOv8 (ultralytics, 2023): anchor-free points on P3-P5 of a C2f backbone and PAN,
a decoupled head predicting per side a distribution over `reg_max` distance bins (DFL),
no objectness, task-aligned assignment (TOOD) with static shapes.

Terms as ultralytics' v8DetectionLoss: classification = BCE towards TAL's soft targets
on every point; localization = CIoU + 0.2 x DFL on the positives (loss.localization
"ciou+0.2*distribution_focal" with weight 7.5: ultralytics' gains 7.5 and 1.5), each
positive weighted by its soft target and everything divided by the soft targets' sum
(classification weight 0.5). Any loss
of the table swaps in: the "encoded" family (L1, smooth L1) regresses the expected
distances in strides, the IoU family the decoded boxes, and a confidence loss adds an
objectness / IoU / centre-ness branch whose prediction multiplies into the scores.
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
from jaxdet import box_coder, postprocess
from jaxdet.assigners import registry as assigner_registry
from jaxdet.detectors import base
from jaxdet.errors import ConfigError
from jaxdet.losses import assigned
from jaxdet.losses import terms as loss_terms
from jaxdet.models.backbones import get_backbone_spec
from jaxdet.models.csp import CSPSpec
from jaxdet.models.heads.yolov8 import YOLOv8Head
from jaxdet.models.layers import make_norm


def section() -> dict:
    """config.model.yolov8's fields and defaults."""
    return dict(
        reg_max=16,  # distance bins per side: 0 .. reg_max - 1 strides
        point_offset=0.5,
        # Positives (jaxdet/assigners/registry.py): "task_aligned" (ultralytics': the tal_topk points
        # of highest score^tal_alpha x CIoU^tal_beta inside the box, soft targets), "simota",
        # "atss" or "max_iou" (on prior squares of prior_scale strides), and their fields.
        **assigner_registry.section_fields("task_aligned", tal_topk=10, tal_alpha=0.5),
        prior_scale=8.0,
    )


@dataclasses.dataclass(frozen=True)
class YOLOv8(base.OneLossSet):
    """Head outputs "cls_logits" [B, P, K], "box_dist" [B, P, 4, R] (and "obj_logits" [B, P]
    with a confidence loss) over `points` [P, 2] with `strides` [P]."""

    module: nn.Module
    points: np.ndarray
    strides: np.ndarray
    losses: loss_terms.LossSet
    reg_max: int
    assigner: assigner_registry.Assigner
    detect_kwargs: dict[str, Any]

    def distances(self, box_dist: Array) -> Array:
        """[B, P, 4, R] bin logits -> expected distances [B, P, 4] in strides."""
        bins = jnp.arange(self.reg_max, dtype=jnp.float32)
        return jnp.sum(jax.nn.softmax(box_dist, axis=-1) * bins, axis=-1)

    def decode(self, dist: Array) -> Array:
        return box_coder.decode_ltrb(jnp.asarray(self.points), dist, jnp.asarray(self.strides))

    def encode(self, boxes: Array) -> Array:
        """xyxy -> distances in strides, clipped to the bins' range (ultralytics' bbox2dist)."""
        ltrb = box_coder.encode_ltrb(jnp.asarray(self.points), boxes, jnp.asarray(self.strides))
        return jnp.clip(ltrb, 0.0, self.reg_max - 1.01)

    def scores(self, outputs: dict[str, Array]) -> Array:
        """[B, P, C]: class probability (with a confidence branch, the geometric mean with it)."""
        return base.class_scores(self.losses, outputs["cls_logits"], outputs.get("obj_logits"))

    def assign(self, batch: dict[str, Array], outputs: dict[str, Array]) -> assigned.Targets:
        """Targets [B, P] from the assigner (TAL's alignment from the current predictions)."""

        def predictions():
            boxes = self.decode(self.distances(outputs["box_dist"]))
            return boxes, self.losses.class_probabilities(outputs["cls_logits"])

        return base.assigned_targets(self.assigner, batch, self.num_classes, predictions)

    def loss_fn(
        self, outputs: dict[str, Array], batch: dict[str, Array], rng: Array, axis_name: str | None = None
    ) -> tuple[Array, dict[str, Array]]:
        """Weighted total and the three named terms, divided by the sum of TAL's soft targets."""
        del rng
        terms = assigned.term_losses(
            self.losses,
            self.assign(batch, outputs),
            self.distances(outputs["box_dist"]),
            self.decode,
            self.encode,
            cls_logits=outputs["cls_logits"],
            conf_logits=outputs.get("obj_logits"),
            axis_name=axis_name,
            cls_region="assigned",
            conf_region="assigned",
            # ultralytics divides by the sum of TAL's soft targets; hard assigners by the positives.
            normalize_by="quality" if self.assigner.soft else "positives",
            centers=jnp.asarray(self.points),
            distribution=outputs["box_dist"],
        )
        return self.losses.total(terms), terms

    def predict(self, outputs: dict[str, Array]) -> postprocess.Detections:
        boxes = self.decode(self.distances(outputs["box_dist"]))
        return base.detect(self.detect_kwargs, self.scores(outputs), boxes)


def build(config, ctx: base.BuildContext) -> YOLOv8:
    """YOLOv8 from `config.model` (+ `.yolov8`), `config.loss` and `config.data`."""
    m, y = config.model, config.model.yolov8
    losses = loss_terms.build_loss_set(config.loss, ctx.num_classes)
    if y.reg_max < 2:
        raise ConfigError(f"config.model.yolov8.reg_max={y.reg_max}; need at least 2 bins")
    levels = list(range(m.min_level, m.max_level + 1))
    points, strides = anchor_ops.point_grid(config.data.image_size, levels, y.point_offset)
    dtype = jnp.dtype(config.train.compute_dtype)
    spec = get_backbone_spec(m.backbone)
    neck = base.neck_spec(config, ctx, "c2f_pan")
    # The C2f neck takes the backbone's depth (ultralytics scales both by one multiplier).
    neck = dataclasses.replace(neck, depth=spec.blocks(3) if isinstance(spec, CSPSpec) else 1)

    def head(pyramid, train):
        norm = make_norm(m.backbone_norm, train, dtype, ctx.axis_name, kernels=ctx.kernels)
        return YOLOv8Head(
            losses.num_logits, y.reg_max, config.data.image_size, norm, losses.has_confidence, dtype, ctx.kernels
        )(pyramid)

    module = base.dense_model(config, ctx, "c2f_pan", head, neck=neck, head_takes_train=True)
    level_sizes = anchor_ops.anchors_per_level(config.data.image_size, levels, 1)
    priors = assigner_registry.point_priors(points, strides, level_sizes, y.prior_scale)
    assigner = assigner_registry.build(y, "config.model.yolov8", "yolov8", priors)
    return YOLOv8(module, points, strides, losses, y.reg_max, assigner, base.detect_kwargs(m, ctx.kernels))


DEFINITION = base.register(
    base.DetectorDef(
        "yolov8",
        section,
        "c2f_pan",
        build,
        base.loss_implies,
        "YOLOv8: anchor-free, C2f + PAN, DFL box head, task-aligned assignment",
    )
)
