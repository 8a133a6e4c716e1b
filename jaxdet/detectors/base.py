"""What every detector shares: the protocol, the registry entry, the backbone -> neck ->
head module of the dense detectors, and batched post-processing.

A detector is a frozen dataclass holding a Flax `module` (images [B, S, S, 3] -> dict of
raw head outputs) and pure methods `loss_fn(outputs, batch, rng, axis_name) -> (total,
terms)` with the named terms its registry entry declares (each in a family; see
losses/terms.py), `term_weights` (term -> weight: total = the weighted sum of those
terms; other entries of `terms` are reports, e.g. DETR's per-layer parts), and
`predict(outputs) -> postprocess.Detections` [B, D] with static shapes. One trainer
drives them all.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, Protocol

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from jaxdet import anchors as anchor_ops
from jaxdet import boxes as box_ops
from jaxdet import postprocess
from jaxdet.assigners import registry as assigner_registry
from jaxdet.errors import ConfigError
from jaxdet.losses import assigned
from jaxdet.losses import terms as loss_terms
from jaxdet.models.backbones import make_backbone
from jaxdet.models.necks import NeckSpec, apply_neck


class Detector(Protocol):
    module: nn.Module
    num_classes: int
    term_weights: dict[str, float]

    def loss_fn(
        self, outputs: dict[str, Array], batch: dict[str, Array], rng: Array, axis_name: str | None = None
    ) -> tuple[Array, dict[str, Array]]: ...

    def predict(self, outputs: dict[str, Array]) -> postprocess.Detections: ...


@dataclasses.dataclass(frozen=True)
class BuildContext:
    """What a detector's builder needs besides the config: the class count, the mesh axis
    BatchNorm synchronises over (None: per device) and the resolved kernel form."""

    num_classes: int
    axis_name: str | None
    kernels: str


@dataclasses.dataclass(frozen=True)
class DetectorDef:
    """A registry entry: config.model.<name>'s default fields, the neck it uses unless
    config.model.neck says otherwise, the builder, the architecture fields its losses imply
    (recorded in its section, so that a resume across them is refused; `implied` gets
    config.loss and `terms`), and its named loss terms (term -> family, in report order)."""

    name: str
    section: Callable[[], dict[str, Any]]
    neck: str
    build: Callable[[Any, BuildContext], Detector]
    implied: Callable[[Any, dict[str, str]], dict[str, bool]]
    summary: str
    terms: dict[str, str] = dataclasses.field(default_factory=lambda: dict(loss_terms.FAMILY_TERMS))
    # (state_dict, variables, backbone name) -> (variables, report): a torchvision detector's
    # weights into this detector's variables (config.model.detector_weights); None: none.
    convert: Callable[..., tuple[dict, Any]] | None = None


# config.model.name -> its definition; filled by `register` as the detector modules are
# imported (jaxdet/detectors/__init__.py imports every module of the package).
DETECTORS: dict[str, DetectorDef] = {}


def register(definition: DetectorDef) -> DetectorDef:
    """Adds `definition` to DETECTORS (a name registered twice is a programming error)."""
    if definition.name in DETECTORS:
        raise ValueError(f"detector {definition.name!r} is registered twice")
    DETECTORS[definition.name] = definition
    return definition


def get_definition(name: str) -> DetectorDef:
    if name not in DETECTORS:
        raise ConfigError(f"unknown detector {name!r} (config.model.name); valid names: {sorted(DETECTORS)}")
    return DETECTORS[name]


class OneLossSet:
    """For a detector whose terms are those of one LossSet, `self.losses`."""

    losses: loss_terms.LossSet

    @property
    def num_classes(self) -> int:
        return self.losses.num_classes

    @property
    def term_weights(self) -> dict[str, float]:
        return self.losses.weights


class DenseModel(nn.Module):
    """Backbone -> neck -> head: images [B, S, S, 3] -> the head's outputs.

    The three parts are built in this module's scope, so their parameters sit under their
    class names ("ResNet_0", "FPN_0", "RetinaNetHead_0"; SSD's inline head under its own
    names), as in the per-detector modules this replaces: checkpoints carry over.
    """

    backbone: str
    backbone_norm: str
    neck: NeckSpec
    # Called in this scope: head(pyramid), head(pyramid, train), or head(pyramid, train, targets).
    head: Callable[..., dict[str, Array]]
    dtype: Any = jnp.float32
    axis_name: str | None = None
    kernels: str = "plain"
    head_takes_train: bool = False  # a head with BatchNorm needs to know
    head_takes_targets: bool = False  # a head that trains on ground truth (DETR's denoising queries)

    @nn.compact
    def __call__(self, images: Array, train: bool = False, targets: dict | None = None) -> dict[str, Array]:
        backbone = make_backbone(self.backbone, self.backbone_norm, self.dtype, self.axis_name, self.kernels)
        pyramid = apply_neck(self.neck, backbone(images, train), train)
        if self.head_takes_targets:
            return self.head(pyramid, train, targets)
        # (one-stage: the targets only enter the loss)
        return self.head(pyramid, train) if self.head_takes_train else self.head(pyramid)


def neck_spec(config, ctx: BuildContext, default: str) -> NeckSpec:
    """The neck `config.model` describes ("" = the detector's own)."""
    m = config.model
    return NeckSpec(
        name=m.neck or default,
        channels=m.neck_channels,
        min_level=m.min_level,
        max_level=m.max_level,
        extra=m.neck_extra,
        norm=m.backbone_norm,
        dtype=jnp.dtype(config.train.compute_dtype),
        axis_name=ctx.axis_name,
        kernels=ctx.kernels,
    )


def dense_model(
    config, ctx: BuildContext, default_neck: str, head: Callable, neck: NeckSpec | None = None,
    head_takes_train: bool = False, head_takes_targets: bool = False,
) -> DenseModel:  # fmt: skip
    """Backbone -> neck (`neck`, or the one config.model describes) -> `head`."""
    m = config.model
    return DenseModel(
        backbone=m.backbone,
        backbone_norm=m.backbone_norm,
        neck=neck or neck_spec(config, ctx, default_neck),
        head=head,
        dtype=jnp.dtype(config.train.compute_dtype),
        axis_name=ctx.axis_name,
        kernels=ctx.kernels,
        head_takes_train=head_takes_train,
        head_takes_targets=head_takes_targets,
    )


def section_anchors(config, name: str, scales: tuple[float, ...]) -> np.ndarray:
    """The anchor grid [A, 4] that config.model.<name> describes (anchor_size, aspect_ratios,
    anchor_offset, anchor_style) over the pyramid levels of `config.model`."""
    m, d = config.model, config.model[name]
    field = f"config.model.{name}."
    anchor_ops.check_style(d.anchor_style, d.anchor_offset, field + "anchor_style", field + "anchor_offset")
    levels = list(range(m.min_level, m.max_level + 1))
    return anchor_ops.anchor_grid(
        config.data.image_size, levels, d.anchor_size, scales, tuple(d.aspect_ratios), d.anchor_offset, d.anchor_style
    )


def detect_kwargs(model_config, kernels: str) -> dict[str, Any]:
    """The shared post-processing fields of `config.model`, and the NMS's kernel form."""
    return dict(
        nms_form=kernels,
        pre_nms_topk=model_config.pre_nms_topk,
        score_threshold=model_config.score_threshold,
        iou_threshold=model_config.nms_iou_threshold,
        max_detections=model_config.max_detections,
    )


def detect(
    kwargs: dict[str, Any],
    scores: Array,
    boxes: Array,
    level_sizes: tuple[int, ...] | None = None,
    clip_size: int | None = None,
) -> postprocess.Detections:
    """Batched `select_detections`: scores [B, A, C], boxes [B, A, 4] or [B, A, C, 4] -> Detections [B, D]
    (`level_sizes`: anchors per level, for a top-k per level; `clip_size`: boxes clipped to
    the [0, clip_size]^2 image before NMS)."""
    if clip_size is not None:
        boxes = box_ops.clip_boxes(boxes, clip_size, clip_size)
    fn = lambda s, b: postprocess.select_detections(s, b, level_sizes=level_sizes, **kwargs)  # noqa: E731
    return jax.vmap(fn)(scores, boxes)


def class_scores(losses, cls_logits: Array, quality_logits: Array | None = None) -> Array:
    """Scores [B, A, C]: class probabilities, or with a quality / confidence logit [B, A]
    their geometric mean with its sigmoid (IoU-aware RetinaNet, FCOS's centre-ness)."""
    probs = losses.class_probabilities(cls_logits)
    if quality_logits is not None:
        probs = jnp.sqrt(probs * jax.nn.sigmoid(quality_logits)[..., None])
    return probs


def assigned_targets(
    assigner: assigner_registry.Assigner,
    batch: dict[str, Array],
    num_classes: int,
    predictions: Callable[[], tuple[Array, Array]],
) -> assigned.Targets:
    """Targets [B, A] from a dense detector's assigner; `predictions` () -> (decoded boxes
    [B, A, 4], class scores [B, A, C]) is evaluated only for assigners that match on them."""
    asg = assigner(batch, predictions)
    return assigned.targets_from_assignment(asg, batch, num_classes, soft=assigner.soft)


def refuse_distributions(losses, detector: str) -> None:
    """A "distribution" localization loss needs a head that predicts distributions."""
    if losses.localization is not None and "distribution" in losses.localization.spaces:
        term = losses.names["localization"]
        where = "config.loss.localization" if term == "localization" else f"config.loss.terms.{term}"
        raise ConfigError(
            f"{where}: a distribution loss (distribution_focal) needs a head that predicts a "
            f"distribution over each box side, and {detector}'s head predicts one value per side; use "
            "config.model.name='yolov8' or another localization loss"
        )


def loss_implies(loss_config, terms: dict[str, str], quality_branch: bool = True) -> dict[str, bool]:
    """Architecture the terms' losses imply: a softmax classification loss adds a background
    logit; a confidence loss adds a quality branch (for detectors where it is optional)."""
    implied = loss_terms.implied_by(loss_config, terms)
    if not quality_branch:
        del implied["quality_branch"]
    return implied
