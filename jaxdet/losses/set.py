"""Set prediction's targets (DETR family): each image's Q predictions matched one-to-one
to its padded ground truth by a minimum-cost bipartite matching, then the dense loss
path on the matched pairs (matched queries learn their box's class and box, every other
query learns "no object").

The matching cost uses the loss table's own losses, so it swaps with them: the class
cost of query q for a box of class c is what the classification loss charges q for
class c beyond what it charges q for no object, and the box cost is the localization
loss (with its weighted parts, e.g. "5*l1+2*giou") between q's box and the box.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import Array

from jaxdet import assigners
from jaxdet.losses.assigned import Targets, targets_from_assignment
from jaxdet.losses.terms import LossSet
from jaxdet.ops.matching import linear_sum_assignment


def class_cost(losses: LossSet, logits: Array, labels: Array) -> Array:
    """logits [Q, K], labels int [M] -> [Q, M]: loss(q as labels[m]) - loss(q as no object)."""
    q, m = logits.shape[0], labels.shape[0]
    fn = losses.classification.fn
    tiled = jnp.broadcast_to(logits[:, None, :], (q, m, logits.shape[-1])).reshape(q * m, -1)
    as_label = fn(tiled, jnp.tile(labels, q), jnp.ones((q * m,))).reshape(q, m)
    as_background = fn(logits, jnp.full((q,), losses.num_classes), jnp.ones((q,)))
    return as_label - as_background[:, None]


def box_cost(losses: LossSet, raw: Array, boxes: Array, encode: Callable[[Array], Array],
             decode: Callable[[Array], Array]) -> Array:  # fmt: skip
    """raw [Q, 4] box outputs, ground truth boxes [M, 4] xyxy -> [Q, M]: the localization
    loss (every weighted part, in its own space) of each (query, box) pair."""
    total = jnp.zeros((raw.shape[0], boxes.shape[0]), jnp.float32)
    for loss, weight in losses.localization.components:
        if loss.space == "encoded":
            pred, target = raw, encode(boxes)
        elif loss.space == "boxes":
            pred, target = decode(raw), boxes
        else:
            raise ValueError(f"set matching has no cost for {loss.space!r} localization losses")
        total = total + weight * loss.fn(pred[:, None, :], target[None, :, :])
    return total


def match(
    losses: LossSet,
    cls_logits: Array,
    raw_boxes: Array,
    batch: dict[str, Array],
    encode: Callable[[Array], Array],
    decode: Callable[[Array], Array],
    class_weight: float = 2.0,
    form: str = "plain",
) -> Targets:
    """Hungarian targets [B, Q] for predictions cls_logits [B, Q, K], raw_boxes [B, Q, 4]
    (`encode` / `decode` map xyxy boxes to and from raw_boxes' encoding, per image [Q or M, 4]).

    cost = class_weight x class_cost + box_cost, on predictions under stop_gradient.
    Matched queries are positives; all others negatives (no ignore band); padded ground
    truth is never matched. `form`: the matcher's kernel form (jaxdet.ops.matching).
    """
    cls_logits, raw_boxes = jax.lax.stop_gradient(cls_logits), jax.lax.stop_gradient(raw_boxes)

    def one(logits, raw, gt_boxes, gt_labels, gt_mask):
        cost = class_weight * class_cost(losses, logits, gt_labels) + box_cost(losses, raw, gt_boxes, encode, decode)
        m = linear_sum_assignment(jnp.nan_to_num(cost, nan=1e8, posinf=1e8, neginf=-1e8), gt_mask, form)
        label = jnp.where(m.matched, assigners.POSITIVE, assigners.NEGATIVE).astype(jnp.int32)
        return assigners.Assignment(jnp.maximum(m.gt_of_query, 0), label, m.matched.astype(jnp.float32))

    asg = jax.vmap(one)(cls_logits, raw_boxes, batch["boxes"], batch["labels"], batch["box_mask"])
    return targets_from_assignment(asg, batch, losses.num_classes)
