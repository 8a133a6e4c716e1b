"""CenterNet ("Objects as Points", Zhou et al. 2019): an object is the peak of its class
heatmap at its centre, with its size and sub-stride offset regressed there.

Output stride 4: the head (models/heads/centernet.py) reads the finest pyramid level,
config.model.min_level (the recipe's 2: FPN P2, fed by P3-P5 top-down). Targets, as the
reference: each box puts a Gaussian of radius `gaussian_radius(h, w, min_overlap)` (in
output cells) around the cell holding its centre; that cell is its peak (target 1) and
holds its regression targets. Terms: classification over every location against those soft
targets (`penalty_reduced_focal` in the recipe: any classification loss of the table
works), divided by the number of objects; localization at the peaks on (offset x, offset
y, size_scale x width, size_scale x height) in strides, so that L1 weighs sizes 0.1 as the
paper (IoU-family losses take the decoded boxes); confidence, when a loss is set, on a
quality branch. Detections: 3x3 max-pool peaks of the class scores, top-k, no NMS.

Where two objects' Gaussians overlap, a location keeps the class of the larger value
(the reference keeps a value per class); two centres in one cell keep the later box. As
the reference, boxes are clipped to the last cell's corner before their targets are made.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from jaxdet import anchors as anchor_ops
from jaxdet import postprocess
from jaxdet.detectors import base
from jaxdet.errors import ConfigError
from jaxdet.losses import assigned
from jaxdet.losses import terms as loss_terms
from jaxdet.models.heads.centernet import CenterNetHead


def section() -> dict:
    """config.model.centernet's fields and defaults."""
    return dict(
        head_channels=64,  # each branch's 3x3 conv (the paper's 256 on DLA / Hourglass)
        # The encoded size is size_scale x (width, height) in strides: an L1 localization loss
        # then weighs sizes size_scale against offsets 1 (the paper's lambda_size = 0.1).
        size_scale=0.1,
        min_overlap=0.7,  # gaussian_radius: a box shifted by the radius keeps this IoU
    )


def gaussian_radius(height: Array, width: Array, min_overlap: float) -> Array:
    """The reference's Gaussian radius (CornerNet's three cases, its third root included as
    written there) for boxes of `height` x `width` output cells, elementwise."""
    b1, c1 = height + width, width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + jnp.sqrt(jnp.maximum(b1**2 - 4 * c1, 0.0))) / 2
    b2, c2 = 2 * (height + width), (1 - min_overlap) * width * height
    r2 = (b2 + jnp.sqrt(jnp.maximum(b2**2 - 16 * c2, 0.0))) / 2
    a3, b3, c3 = 4 * min_overlap, -2 * min_overlap * (height + width), (min_overlap - 1) * width * height
    r3 = (b3 + jnp.sqrt(jnp.maximum(b3**2 - 4 * a3 * c3, 0.0))) / 2
    return jnp.minimum(jnp.minimum(r1, r2), r3)


@dataclasses.dataclass(frozen=True)
class CenterNet(base.OneLossSet):
    """Head outputs "cls_logits" [B, A, K], "box_raw" [B, A, 4] (and "quality_logits" [B, A]
    with a confidence loss) over the A = H x W cells of stride `stride`, whose top-left
    corners are `points` [A, 2] (pixels)."""

    module: nn.Module
    points: np.ndarray
    stride: int
    grid: tuple[int, int]  # (H, W)
    losses: loss_terms.LossSet
    size_scale: float
    min_overlap: float
    image_size: int
    max_detections: int
    score_threshold: float

    def encode(self, boxes: Array) -> Array:
        """xyxy pixels [..., A, 4] -> (centre - cell corner, size_scale x size) in strides."""
        s = float(self.stride)
        centre = 0.5 * (boxes[..., :2] + boxes[..., 2:]) - jnp.asarray(self.points)
        return jnp.concatenate([centre / s, self.size_scale * (boxes[..., 2:] - boxes[..., :2]) / s], -1)

    def decode(self, raw: Array) -> Array:
        """[..., A, 4] -> xyxy pixels (a negative size decodes to an empty box)."""
        s = float(self.stride)
        centre = jnp.asarray(self.points) + raw[..., :2] * s
        half = 0.5 * jnp.maximum(raw[..., 2:], 0.0) / self.size_scale * s
        return jnp.concatenate([centre - half, centre + half], -1)

    def _assign_one(self, boxes: Array, labels: Array, mask: Array) -> tuple[Array, ...]:
        """One image's boxes [M, 4], labels [M], mask [M] -> per cell (label, matched box
        index, peak, Gaussian value) [A]."""
        s, (h, w) = float(self.stride), self.grid
        cells = jnp.asarray(self.points) / s  # [A, 2] integer (x, y)
        centre = 0.5 * (boxes[:, :2] + boxes[:, 2:]) / s
        peak_cell = jnp.clip(jnp.floor(centre), 0, jnp.asarray([w - 1, h - 1], jnp.float32))  # [M, 2]
        size = (boxes[:, 2:] - boxes[:, :2]) / s
        drawn = mask & jnp.all(size > 0, axis=-1)
        radius = jnp.floor(
            jnp.maximum(gaussian_radius(jnp.ceil(size[:, 1]), jnp.ceil(size[:, 0]), self.min_overlap), 0)
        )
        sigma = (2 * radius + 1) / 6
        d = cells[:, None, :] - peak_cell[None]  # [A, M, 2]
        inside = jnp.all(jnp.abs(d) <= radius[None, :, None], axis=-1) & drawn[None]
        g = jnp.exp(-jnp.sum(d**2, -1) / (2 * sigma[None] ** 2))
        g = jnp.where(inside & (g >= np.finfo(np.float32).eps), g, 0.0)  # the reference's cut-off
        peak = jnp.all(d == 0, axis=-1) & drawn[None]  # [A, M]
        positive = jnp.any(peak, axis=1)
        index = jnp.arange(boxes.shape[0])
        matched = jnp.where(positive, jnp.argmax(jnp.where(peak, index, -1), axis=1), jnp.argmax(g, axis=1))
        value = jnp.where(positive, 1.0, jnp.max(g, axis=1))
        return labels[matched], matched, positive, value

    def assign(self, batch: dict[str, Array]) -> assigned.Targets:
        """Targets [B, A]: every cell's soft class target (quality) and, at peaks, its box
        (clipped, as the reference clips boxes, to the last cell's corner)."""
        h, w = self.grid
        limit = jnp.asarray([w - 1, h - 1, w - 1, h - 1], jnp.float32) * self.stride
        gt = jnp.clip(batch["boxes"], 0.0, limit)
        label, matched, positive, value = jax.vmap(self._assign_one)(gt, batch["labels"], batch["box_mask"])
        valid = jnp.broadcast_to(assigned.image_mask(batch, label.shape[0]), label.shape)
        positive = positive & valid
        boxes = jnp.take_along_axis(gt, matched[..., None], axis=1)
        labels = jnp.where(valid & (value > 0), label, self.num_classes)
        return assigned.Targets(labels, boxes, positive, valid & ~positive, valid, jnp.where(valid, value, 0.0))

    def loss_fn(
        self, outputs: dict[str, Array], batch: dict[str, Array], rng: Array, axis_name: str | None = None
    ) -> tuple[Array, dict[str, Array]]:
        """Weighted total and the three named terms, each divided by the batch's objects."""
        del rng
        terms = assigned.term_losses(
            self.losses, self.assign(batch), outputs["box_raw"], self.decode, self.encode,
            cls_logits=outputs["cls_logits"], conf_logits=outputs.get("quality_logits"), axis_name=axis_name,
            cls_region="everywhere", conf_region="assigned", centers=jnp.asarray(self.points),
        )  # fmt: skip
        return self.losses.total(terms), terms

    def predict(self, outputs: dict[str, Array]) -> postprocess.Detections:
        """The `max_detections` best (cell, class) peaks: a score that is the maximum of its
        3x3 neighbourhood (the paper's max-pool in place of NMS), top-k over cells x classes."""
        scores = base.class_scores(self.losses, outputs["cls_logits"], outputs.get("quality_logits"))  # [B, A, C]
        b, a, c = scores.shape
        heat = scores.reshape(b, *self.grid, c)
        pooled = nn.max_pool(heat, (3, 3), strides=(1, 1), padding="SAME")
        peaks = jnp.where(heat == pooled, heat, 0.0).reshape(b, a, c)
        boxes = self.decode(outputs["box_raw"])
        return postprocess.top_pairs(peaks, boxes, self.max_detections, self.score_threshold, self.image_size)


def build(config, ctx: base.BuildContext) -> CenterNet:
    """CenterNet from `config.model` (+ `.centernet`), `config.loss` and `config.data`."""
    m, c = config.model, config.model.centernet
    losses = loss_terms.build_loss_set(config.loss, ctx.num_classes)
    base.refuse_distributions(losses, "centernet")
    if c.size_scale <= 0 or not 0 < c.min_overlap < 1 or c.head_channels < 1:
        raise ConfigError(
            f"config.model.centernet: size_scale={c.size_scale} (> 0), min_overlap={c.min_overlap} (in (0, 1)), "
            f"head_channels={c.head_channels} (>= 1)"
        )
    size, level = config.data.image_size, m.min_level
    points, _ = anchor_ops.point_grid(size, [level], 0.0)  # cell corners: centres are corner + offset
    head = functools.partial(
        CenterNetHead, losses.num_logits, c.head_channels, size_bias=4 * c.size_scale,
        quality_branch=losses.has_confidence, dtype=jnp.dtype(config.train.compute_dtype), kernels=ctx.kernels,
    )  # fmt: skip
    module = base.dense_model(config, ctx, "fpn", lambda pyramid: head()(pyramid))
    return CenterNet(
        module, points, 2**level, anchor_ops.level_shapes(size, [level])[0], losses, c.size_scale, c.min_overlap,
        size, m.max_detections, m.score_threshold,
    )  # fmt: skip


DEFINITION = base.register(
    base.DetectorDef(
        "centernet", section, "fpn", build, base.loss_implies, "CenterNet: objects as points, heatmap peaks, no NMS"
    )
)
