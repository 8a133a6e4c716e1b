"""Where a loss term's gradient comes from, location by location: the gradient of each
weighted term with respect to the head outputs, split by the role the detector's own
target assignment gave each location.

Every detector's terms go through `losses.assigned.term_losses`, which, inside
`assigned.recording()`, hands back what it saw (a `Record`: its term names, the targets
[B, A], the IoU of each decoded box with its target, the predicted score). A head output
whose leading axes are [B, A] of a term's record is *aligned* with that record: its
gradient at location a belongs to a's group. What reaches outputs that are not aligned
(DETR's per-layer auxiliary outputs, stacked [B, L, Q, ...]) is counted as "other".

Groups (disjoint, so the squared norms add up to the term's): "positive"; "ignored"
(neither positive nor negative: the assigner's ignore band, anchors the RPN did not
sample, padded images); and the negatives by predicted score, from easy to hard, cut at
`score_edges`.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np
from jax import Array

from jaxdet.losses.assigned import Record

SCORE_EDGES = (0.05, 0.2, 0.5)  # negatives' score bins: [0, .05) easy ... [.5, 1] hard
IOU_EDGES = tuple(np.round(np.linspace(0.0, 1.0, 11), 2).tolist())  # positives' IoU bins


def group_names(score_edges: Sequence[float] = SCORE_EDGES) -> list[str]:
    """["positive", "ignored", "negative <e0", "negative e0-e1", ..., "negative >=eN"]."""
    edges = list(score_edges)
    bins = [f"negative <{edges[0]:g}"] if edges else ["negative"]
    bins += [f"negative {a:g}-{b:g}" for a, b in zip(edges, edges[1:])]
    bins += [f"negative >={edges[-1]:g}"] if edges else []
    return ["positive", "ignored", *bins]


def group_ids(record: Record, score_edges: Sequence[float] = SCORE_EDGES) -> Array:
    """int [B, A]: each location's group (the index into `group_names`)."""
    t = record.targets
    negative_bin = 2 + jnp.searchsorted(jnp.asarray(score_edges, jnp.float32), record.score, side="right")
    return jnp.where(t.positive, 0, jnp.where(t.negative, negative_bin, 1)).astype(jnp.int32)


def record_of(term: str, records: Sequence[Record], outputs: dict[str, Array]) -> tuple[Record | None, list[str]]:
    """The record whose locations split `term`'s gradient, and the output keys aligned with
    it: the one record of `term` (among those naming it) whose [B, A] leads some output's
    shape. (None, []) when no record or several of the same A qualify (then it is "other")."""
    batch = next(iter(outputs.values())).shape[0]
    candidates = [r for r in records if term in r.terms]
    by_size: dict[int, list[Record]] = {}
    for r in candidates:
        by_size.setdefault(r.targets.positive.shape[1], []).append(r)
    for size, same in by_size.items():
        keys = [k for k, v in outputs.items() if v.ndim >= 2 and v.shape[:2] == (batch, size)]
        if keys and len(same) == 1:
            return same[0], keys
    return None, []


def location_energy(grads: dict[str, Array], keys: Sequence[str]) -> Array:
    """[B, A]: the squared norm, over every channel of the aligned outputs `keys`, of one
    term's gradient (`grads`: output key -> d term / d output, each [B, A, ...])."""
    total = 0.0
    for k in keys:
        g = grads[k].astype(jnp.float32)
        total = total + jnp.sum(g.reshape(g.shape[0], g.shape[1], -1) ** 2, axis=-1)
    return total


def total_energy(grads: dict[str, Array]) -> Array:
    """[]: the squared norm of one term's gradient with respect to every head output."""
    return sum(jnp.sum(g.astype(jnp.float32) ** 2) for g in grads.values())


def group_energy(energy: Array, groups: Array, num_groups: int) -> Array:
    """[G]: `energy` [B, A] summed over each group's locations (`groups` int [B, A])."""
    return jnp.zeros((num_groups,), jnp.float32).at[groups.reshape(-1)].add(energy.reshape(-1))


def iou_profile(energy: Array, record: Record, edges: Sequence[float] = IOU_EDGES) -> tuple[Array, Array]:
    """Sum [N] of the gradient magnitude (sqrt of `energy` [B, A]) and count [N] of the
    positives whose decoded box's IoU with its target falls in each of the N bins of `edges`."""
    n = len(edges) - 1
    bins = jnp.clip(jnp.searchsorted(jnp.asarray(edges[1:-1], jnp.float32), record.iou, side="right"), 0, n - 1)
    pos = record.targets.positive.reshape(-1)
    magnitude = jnp.where(pos, jnp.sqrt(energy).reshape(-1), 0.0)
    sums = jnp.zeros((n,), jnp.float32).at[bins.reshape(-1)].add(magnitude)
    counts = jnp.zeros((n,), jnp.float32).at[bins.reshape(-1)].add(pos.astype(jnp.float32))
    return sums, counts
