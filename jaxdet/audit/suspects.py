"""Where the model and the annotations disagree, per box and per detection, as scores in
[0, 1] for four kinds of annotation error (computed on the device, batched):

- wrong class: a box the model finds (IoU >= match_iou) with another class, more sure of
  it than of the annotated class: other-class score - same-class score;
- poor box: the model finds the object with the annotated class but only at a low IoU
  (near_iou <= IoU < match_iou): its score there - the score at a good IoU;
- spurious box: nothing detected on the box (any class, IoU >= near_iou): 1 - the best
  score there;
- missing box: a confident detection (score >= `confident`) that no annotated box explains
  (IoU < near_iou with every box, any class): its score.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdet.boxes import box_iou
from jaxdet.postprocess import Detections

KINDS = ("wrong_class", "poor_box", "spurious_box")  # per annotated box; "missing_box" per detection


def box_suspicions(
    boxes: jax.Array,
    labels: jax.Array,
    mask: jax.Array,
    detections: Detections,
    match_iou: float = 0.5,
    near_iou: float = 0.1,
    confident: float = 0.3,
) -> dict[str, jax.Array]:
    """Annotated boxes [B, G, 4] xyxy, labels [B, G], mask [B, G] against `detections`
    ([B, D]) in the same pixels -> {kind: [B, G]} for KINDS, "best_iou" [B, G] (same class),
    "score" [B, G] (same class, IoU >= match_iou), "other_class" [B, G] (the class the
    model prefers there, -1 if none) and "missing_box" [B, D] (per detection). Padding
    rows score 0."""
    iou = jax.vmap(box_iou)(boxes, detections.boxes)  # [B, G, D]
    pair = mask[:, :, None] & detections.valid[:, None, :]
    same = pair & (labels[:, :, None] == detections.classes[:, None, :])
    other = pair & ~same
    score = jnp.broadcast_to(detections.scores[:, None, :], iou.shape)

    def best(where):
        return jnp.max(jnp.where(where, score, 0.0), axis=-1)

    same_good = best(same & (iou >= match_iou))
    other_good = jnp.where(other & (iou >= match_iou), score, 0.0)
    other_score = jnp.max(other_good, axis=-1)
    poor = best(same & (iou >= near_iou) & (iou < match_iou))
    near_any = best(pair & (iou >= near_iou))
    explained = jnp.any(mask[:, :, None] & (iou >= near_iou), axis=1)  # [B, D]
    zero = lambda x: jnp.where(mask, x, 0.0)  # noqa: E731
    return {
        "wrong_class": zero(jnp.maximum(other_score - same_good, 0.0)),
        "poor_box": zero(jnp.maximum(poor - same_good, 0.0)),
        "spurious_box": zero(1.0 - near_any),
        "best_iou": zero(jnp.max(jnp.where(same, iou, 0.0), axis=-1)),
        "score": zero(same_good),
        "other_class": jnp.where(
            mask & (other_score > 0),
            jnp.take_along_axis(detections.classes, jnp.argmax(other_good, axis=-1), axis=-1),
            -1,
        ),  # fmt: skip
        "missing_box": jnp.where(
            detections.valid & ~explained & (detections.scores >= confident), detections.scores, 0.0
        ),
    }
