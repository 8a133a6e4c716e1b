"""Anchor-based one-stage detectors (RetinaNet, SSD): targets over a fixed set of anchors
from any assigner of jaxdet/assigners/registry.py (max-IoU by default), R-CNN delta
encoding, the shared dense loss path and batched NMS.

RetinaNet and SSD differ only in their anchors, heads and which anchors the
classification term covers (all assigned ones vs. positives plus hard negatives); both
are this class with different fields.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from jax import Array

from jaxdet import anchors as anchor_ops
from jaxdet import box_coder, postprocess
from jaxdet.assigners import registry as assigner_registry
from jaxdet.detectors import base
from jaxdet.losses import assigned
from jaxdet.losses import terms as loss_terms


@dataclasses.dataclass(frozen=True)
class AnchorDetector(base.OneLossSet):
    """Head outputs "cls_logits" [B, A, K], "box_deltas" [B, A, 4] (and "quality_logits"
    [B, A] with a confidence loss) over `anchors` [A, 4] xyxy pixels."""

    module: nn.Module
    anchors: np.ndarray
    losses: loss_terms.LossSet
    assigner: assigner_registry.Assigner  # max-IoU (RetinaNet's, SSD's), ATSS, task-aligned, SimOTA
    box_weights: tuple[float, float, float, float]
    detect_kwargs: dict[str, Any]
    cls_region: str = "assigned"  # assigned.REGIONS
    neg_pos_ratio: int = 3  # for cls_region="hard_negatives"
    level_sizes: tuple[int, ...] | None = None  # anchors per level: the pre-NMS top-k per level
    clip_size: int | None = None  # clip decoded boxes to [0, clip_size]^2 before NMS

    def assign(self, batch: dict[str, Array], outputs: dict[str, Array] | None = None) -> assigned.Targets:
        """Targets [B, A] from the assigner (those that match on predictions read `outputs`)."""

        def predictions():
            boxes = self.decode(outputs["box_deltas"])
            return boxes, self.losses.class_probabilities(outputs["cls_logits"])

        return base.assigned_targets(self.assigner, batch, self.num_classes, predictions)

    def decode(self, deltas: Array) -> Array:
        """[B, A, 4] deltas -> xyxy boxes in input pixels."""
        return box_coder.decode_deltas(jnp.asarray(self.anchors), deltas, self.box_weights)

    def encode(self, boxes: Array) -> Array:
        anchors = jnp.broadcast_to(jnp.asarray(self.anchors), boxes.shape)
        return box_coder.encode_deltas(anchors, boxes, self.box_weights)

    def loss_fn(
        self, outputs: dict[str, Array], batch: dict[str, Array], rng: Array, axis_name: str | None = None
    ) -> tuple[Array, dict[str, Array]]:
        """Weighted total and the three named terms, each normalised by the positives."""
        del rng  # the targets are deterministic
        terms = assigned.term_losses(
            self.losses,
            self.assign(batch, outputs),
            outputs["box_deltas"],
            self.decode,
            self.encode,
            cls_logits=outputs["cls_logits"],
            conf_logits=outputs.get("quality_logits"),
            axis_name=axis_name,
            cls_region=self.cls_region,
            neg_pos_ratio=self.neg_pos_ratio,
            centers=jnp.asarray(anchor_ops.centers(self.anchors)),
        )
        return self.losses.total(terms), terms

    def scores(self, outputs: dict[str, Array]) -> Array:
        """Per-class scores [B, A, C]; with a quality branch the geometric mean of class
        probability and predicted quality (IoU-aware RetinaNet, Wu et al. 2020)."""
        return base.class_scores(self.losses, outputs["cls_logits"], outputs.get("quality_logits"))

    def predict(self, outputs: dict[str, Array]) -> postprocess.Detections:
        """Head outputs -> `Detections` [B, D] in input pixels."""
        boxes = self.decode(outputs["box_deltas"])
        return base.detect(self.detect_kwargs, self.scores(outputs), boxes, self.level_sizes, self.clip_size)
