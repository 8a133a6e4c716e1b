"""The dense loss path, written once: targets -> masks and normaliser -> named terms.

RetinaNet, SSD, YOLO, the RPN and the R-CNN box head differ in how they assign targets
(max-IoU, SimOTA, sampling), in their box encoding and in which anchors each term covers;
given those, the sequence is the same and lives here: gather the matched ground truth,
decode the predicted boxes, take the IoU under stop_gradient (a target, not something to
push the boxes towards), then the classification, localization and confidence terms of a
`LossSet` (losses/terms.py), each summed over its region and divided by one normaliser
averaged over devices.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import Array

from jaxdet import assigners
from jaxdet import boxes as box_ops
from jaxdet.losses import functions as loss_functions
from jaxdet.losses.terms import LossSet

# Which anchors a term sums over: "positives"; "assigned" (positives and negatives, not the
# ignored); "everywhere" (every anchor of a real image); "hard_negatives" (positives and
# the neg_pos_ratio hardest negatives per positive, by classification loss, as SSD).
REGIONS = ("positives", "assigned", "everywhere", "hard_negatives")


class Targets(NamedTuple):
    """Per-anchor training targets; ignored anchors are neither positive nor negative.

    labels int [B, A] (num_classes = background), boxes [B, A, 4] xyxy, positive and
    negative bool [B, A], valid bool [B, A] (False on images padded into an eval batch).
    """

    labels: Array
    boxes: Array
    positive: Array
    negative: Array
    valid: Array
    # float [B, A] soft classification targets from the assigner (TAL's normalised
    # alignment), or None: 1, or the IoU for IoU-aware losses.
    quality: Array | None = None


class Record(NamedTuple):
    """What one `term_losses` call saw, for the gradient anatomy (jaxdet/anatomy): its term
    names, its targets [B, A], the IoU [B, A] of each decoded box with its target, the
    predicted score [B, A] (the most probable class, or the confidence where there are no
    class logits) and the locations' centres [A, 2] (None where not given)."""

    terms: tuple[str, ...]
    targets: Targets
    iou: Array
    score: Array
    centers: Array | None


_RECORDS: list[list[Record]] = []  # a stack: `recording` pushes a list, term_losses appends


@contextlib.contextmanager
def recording() -> Iterator[list[Record]]:
    """Within this block every `term_losses` call appends its Record to the yielded list
    (values of the trace being built: return them from the traced function). Off, as in
    training, nothing is kept."""
    _RECORDS.append([])
    try:
        yield _RECORDS[-1]
    finally:
        _RECORDS.pop()


def image_mask(batch: dict[str, Array], batch_size: int) -> Array:
    """bool [B, 1]: False for images padded in to fill the last evaluation batch."""
    return batch.get("image_mask", jnp.ones((batch_size,), bool))[:, None]


def targets_from_assignment(
    asg: assigners.Assignment, batch: dict[str, Array], num_classes: int, soft: bool = False
) -> Targets:
    """An assignment [B, A] over the batch's padded ground truth -> Targets (padded images
    masked); `soft`: the assignment's `iou` field is a soft classification target (TAL)."""
    valid = jnp.broadcast_to(image_mask(batch, asg.label.shape[0]), asg.label.shape)
    pos = (asg.label == assigners.POSITIVE) & valid
    neg = (asg.label == assigners.NEGATIVE) & valid
    labels = jnp.take_along_axis(batch["labels"], asg.matched, axis=1)
    boxes = jnp.take_along_axis(batch["boxes"], asg.matched[..., None], axis=1)
    quality = jnp.where(pos, asg.iou, 0.0) if soft else None
    return Targets(jnp.where(pos, labels, num_classes), boxes, pos, neg, valid, quality)


def normalizer(mask: Array, axis_name: str | None) -> Array:
    """max(1, count of `mask`), averaged over `axis_name` and without gradient.

    Averaging over devices makes the mean of per-device gradients equal the gradient of
    the whole global batch normalised by its total count.
    """
    count = jnp.sum(mask).astype(jnp.float32)
    if axis_name is not None:
        count = jax.lax.pmean(count, axis_name)
    return jax.lax.stop_gradient(jnp.maximum(count, 1.0))


def _region(name: str, t: Targets, per_anchor: Array | None, neg_pos_ratio: int) -> Array:
    if name == "positives":
        return t.positive
    if name == "assigned":
        return t.positive | t.negative
    if name == "everywhere":
        return t.valid
    if name == "hard_negatives":
        # Per image; an image without objects still keeps neg_pos_ratio negatives, so empty
        # images teach background too.
        keep = neg_pos_ratio * jnp.maximum(jnp.sum(t.positive, axis=1), 1)
        hard = jax.vmap(assigners.hard_negative_mask)(jax.lax.stop_gradient(per_anchor), t.negative, keep)
        return t.positive | hard
    raise ValueError(f"unknown loss region {name!r}; valid: {REGIONS}")


def term_losses(
    losses: LossSet,
    targets: Targets,
    raw_boxes: Array,
    decode: Callable[[Array], Array],
    encode: Callable[[Array], Array],
    cls_logits: Array | None = None,
    conf_logits: Array | None = None,
    axis_name: str | None = None,
    cls_region: str = "assigned",
    conf_region: str = "assigned",
    normalize_by: str = "positives",
    neg_pos_ratio: int = 3,
    centers: Array | None = None,
    distribution: Array | None = None,
) -> dict[str, Array]:
    """`losses`' terms (one per family, named by `losses.names`), each summed over its
    region and divided by one normaliser.

    raw_boxes: the head's box output [B, A, 4]; decode: raw -> xyxy boxes [B, A, 4];
    encode: xyxy ground truth -> the encoding of `raw_boxes` (for losses in "encoded"
    space); cls_logits [B, A, K] and conf_logits [B, A] (None: that term is 0).
    normalize_by: "positives" (one-stage), "assigned" (sampled anchors / RoIs, as
    torchvision's RPN and box head) or "quality" (TAL, as ultralytics: the sum of the
    positives' soft targets, which also weight each positive's box losses).
    centers [A, 2]: the anchors' or points' centres (for a "centerness" confidence);
    distribution [B, A, 4, R]: logits over each side's distance in strides (for a
    "distribution" localization loss, whose target is `encode` of the ground truth).
    """
    pos = targets.positive
    if normalize_by == "quality":
        norm = normalizer(jnp.where(pos, targets.quality, 0.0), axis_name)
        box_weight = jnp.where(pos, targets.quality, 0.0)
    else:
        norm = normalizer(pos if normalize_by == "positives" else pos | targets.negative, axis_name)
        box_weight = pos.astype(jnp.float32)
    pred_boxes = decode(raw_boxes)
    iou = jax.lax.stop_gradient(box_ops.elementwise_iou(pred_boxes, targets.boxes))
    zero = jnp.zeros((), jnp.float32)

    out: dict[str, Array] = {"classification": zero}
    if cls_logits is not None and "classification" in losses.names:
        if targets.quality is not None:
            quality = targets.quality
        else:
            quality = iou if losses.classification.iou_aware else jnp.ones_like(iou)
        per_anchor = losses.classification.fn(cls_logits, targets.labels, quality)
        region = _region(cls_region, targets, per_anchor, neg_pos_ratio)
        out["classification"] = jnp.sum(jnp.where(region, per_anchor, 0.0)) / norm

    loc_loss = zero
    for loc, weight in losses.localization.components if "localization" in losses.names else ():
        if loc.space == "encoded":
            per_anchor = loc.fn(raw_boxes, encode(targets.boxes))
        elif loc.space == "distribution":
            per_anchor = loc.fn(distribution, jax.lax.stop_gradient(encode(targets.boxes)))
        else:
            per_anchor = loc.fn(pred_boxes, targets.boxes)
        loc_loss = loc_loss + weight * jnp.sum(jnp.where(pos, per_anchor * box_weight, 0.0)) / norm
    out["localization"] = loc_loss

    conf_loss = zero
    if conf_logits is not None and losses.has_confidence:
        kind = losses.confidence.target
        if kind == "centerness":
            # Centre-ness is defined inside a ground-truth box: trained at positives only (FCOS).
            target = jnp.where(pos, loss_functions.centerness_target(centers, targets.boxes), 0.0)
            region = pos
        else:
            # Objectness regresses 1 at positives, IoU-aware confidence the IoU; 0 elsewhere.
            target = jnp.where(pos, iou if kind == "iou" else 1.0, 0.0)
            region = _region(conf_region, targets, None, neg_pos_ratio)
        conf_loss = jnp.sum(jnp.where(region, losses.confidence.fn(conf_logits, target), 0.0)) / norm

    out["confidence"] = conf_loss
    if _RECORDS:
        if cls_logits is not None:
            score = jnp.max(losses.class_probabilities(cls_logits), axis=-1)
        else:
            score = jax.nn.sigmoid(conf_logits) if conf_logits is not None else jnp.zeros_like(iou)
        held = Record(tuple(losses.names.values()), targets, iou, jax.lax.stop_gradient(score), centers)
        _RECORDS[-1].append(held)
    return {term: out[family] for family, term in losses.names.items()}
