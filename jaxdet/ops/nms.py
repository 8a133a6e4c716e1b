"""Greedy non-maximum suppression with static shapes, in two forms of the same result.

Greedy NMS over boxes sorted by descending score keeps box j iff it is valid and no
earlier kept box overlaps it by IoU > threshold (strictly greater, as torchvision). Its
forms (chosen by the kernel policy, `jaxdet.kernels`):

- "cpu", sequential: one loop step per box, O(N) vector work each. XLA:CPU runs a loop
  step in microseconds, so this is the cheapest form there.
- "plain", blocked: the sorted boxes in blocks of `BLOCK`; a block is first suppressed by
  the kept boxes of the earlier blocks (one masked IoU reduction), then resolved inside by
  iterating keep = candidates & ~any(earlier kept in the block that overlaps) to its fixed
  point. That system is triangular (box j depends on boxes i < j only), so after t sweeps
  the first t boxes of the block are final and its one fixed point is the greedy answer:
  the result is the sequential form's, in N / BLOCK loop steps of a few sweeps each
  instead of N steps. On a GPU a loop step costs kernel launches and, for XLA's while
  loops, a read of the loop condition by the host (microseconds each; thousands of them
  for 5000 RPN proposals), which is what this form removes (not yet timed on a GPU);
  TF's `non_max_suppression_padded` is built the same way.

`grouped_nms` runs NMS independently per group (pyramid level for RPN proposals, which
torchvision's `batched_nms` over levels also treats as separate problems): G problems of
K boxes cost G K^2 IoUs in K sequential steps, against (G K)^2 in G K steps for the
class-offset trick of `batched_nms`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

from jaxdet import boxes as box_ops
from jaxdet.kernels import check_form

BLOCK = 256  # boxes per block of the blocked form: ~N / 256 loop steps


def _keep_sequential(sorted_boxes: Array, sorted_valid: Array, iou_threshold: float) -> Array:
    """[N, 4], bool [N] sorted by descending score -> bool [N] kept, one loop step per box."""
    n = sorted_boxes.shape[0]
    iou = box_ops.box_iou(sorted_boxes, sorted_boxes)
    later = jnp.arange(n)[None, :] > jnp.arange(n)[:, None]
    suppress = (iou > iou_threshold) & later  # [N, N]: i suppresses j > i

    def body(i, state):
        keep, suppressed = state
        keep_i = sorted_valid[i] & ~suppressed[i]
        suppressed = suppressed | (suppress[i] & keep_i)
        return keep.at[i].set(keep_i), suppressed

    keep, _ = jax.lax.fori_loop(0, n, body, (jnp.zeros((n,), bool), jnp.zeros((n,), bool)))
    return keep


def _keep_blocked(sorted_boxes: Array, sorted_valid: Array, iou_threshold: float, block: int = BLOCK) -> Array:
    """The sequential form's result, block by block (see the module docstring)."""
    n = sorted_boxes.shape[0]
    block = min(block, n)
    num_blocks = -(-n // block)
    pad = num_blocks * block - n
    boxes = jnp.pad(sorted_boxes, ((0, pad), (0, 0)))
    valid = jnp.pad(sorted_valid, (0, pad))
    earlier = jnp.arange(block)[:, None] < jnp.arange(block)[None, :]  # [b, b]: i < j

    def one_block(k, keep):
        start = k * block
        own = jax.lax.dynamic_slice_in_dim(boxes, start, block)
        # `keep` is still False from this block on, so the whole row can be tested.
        hit = (box_ops.box_iou(own, boxes) > iou_threshold) & keep[None, :]
        candidates = jax.lax.dynamic_slice_in_dim(valid, start, block) & ~jnp.any(hit, axis=1)
        inner = (box_ops.box_iou(own, own) > iou_threshold) & earlier

        def sweep(state):
            x, _ = state
            new = candidates & ~jnp.any(inner & x[:, None], axis=0)
            return new, jnp.any(new != x)

        x, _ = jax.lax.while_loop(lambda s: s[1], sweep, (candidates, jnp.array(True)))
        return jax.lax.dynamic_update_slice_in_dim(keep, x, start, 0)

    return jax.lax.fori_loop(0, num_blocks, one_block, jnp.zeros((n + pad,), bool))[:n]


def greedy_keep(sorted_boxes: Array, sorted_valid: Array, iou_threshold: float, form: str = "plain") -> Array:
    """Greedy NMS over boxes sorted by descending score: bool [N] kept.

    Args: sorted_boxes [N, 4] xyxy; sorted_valid bool [N] (invalid boxes are neither kept
    nor suppress); form "cpu" (sequential) or "plain" (blocked): the same result.
    """
    return jaxdet_greedy_nms(sorted_boxes, sorted_valid, jnp.float32(iou_threshold), check_form(form))


@functools.partial(jax.jit, static_argnames="form")
def jaxdet_greedy_nms(sorted_boxes: Array, sorted_valid: Array, iou_threshold: Array, form: str) -> Array:
    """greedy_keep's computation as a named call: jaxprs show it as one `jit` equation named
    jaxdet_greedy_nms (vmapped or not), which the ONNX export replaces with ONNX's own
    NonMaxSuppression (jaxdet/export/onnx/nms.py); traced inside a program it compiles inline."""
    if form == "cpu":
        return _keep_sequential(sorted_boxes, sorted_valid, iou_threshold)
    return _keep_blocked(sorted_boxes, sorted_valid, iou_threshold)


def _kept_indices(keep_sorted: Array, order: Array, max_output_size: int) -> Array:
    """Kept positions of a sorted order -> int32 [max_output_size] original indices, -1 padded."""
    (pos,) = jnp.nonzero(keep_sorted, size=max_output_size, fill_value=-1)
    return jnp.where(pos >= 0, order[jnp.maximum(pos, 0)], -1).astype(jnp.int32)


def nms(boxes: ArrayLike, scores: ArrayLike, iou_threshold: float, max_output_size: int, form: str = "plain") -> Array:
    """Non-maximum suppression with a static output size.

    Args:
      boxes: [N, 4] xyxy. scores: [N]. iou_threshold: suppress IoU > this.
      max_output_size: the fixed output length. form: see `greedy_keep`.
    Returns:
      int32 [max_output_size]: kept indices into `boxes` in descending score order,
      padded with -1; the same kept set as torchvision.ops.nms truncated to the size.
    """
    boxes = jnp.asarray(boxes, jnp.float32)
    scores = jnp.asarray(scores, jnp.float32)
    order = jnp.argsort(-scores, stable=True)
    keep = greedy_keep(boxes[order], jnp.ones(order.shape, bool), iou_threshold, form)
    return _kept_indices(keep, order, max_output_size)


def batched_nms(
    boxes: Array,
    scores: Array,
    classes: Array,
    valid: Array,
    iou_threshold: float,
    max_output_size: int,
    form: str = "plain",
) -> Array:
    """Class-aware NMS (boxes of different classes never suppress each other).

    Args: boxes [N, 4], scores [N], classes int [N], valid bool [N]; form: see `greedy_keep`.
    Returns: int32 [max_output_size] kept indices by descending score, -1 padded.
    """
    boxes, scores = jnp.asarray(boxes, jnp.float32), jnp.asarray(scores, jnp.float32)
    classes, valid = jnp.asarray(classes), jnp.asarray(valid, bool)
    # torchvision's trick: shift each class into its own disjoint region of the plane.
    span = jnp.max(jnp.where(valid[:, None], jnp.abs(boxes), 0.0)) + 1.0
    shifted = boxes + (classes.astype(jnp.float32) * span)[:, None]
    order = jnp.argsort(-jnp.where(valid, scores, -jnp.inf), stable=True)
    keep = greedy_keep(shifted[order], valid[order], iou_threshold, form)
    return _kept_indices(keep, order, max_output_size)


def grouped_nms(
    boxes: Array, scores: Array, valid: Array, iou_threshold: float, max_output_size: int, form: str = "plain"
) -> Array:
    """NMS within each of G groups of K boxes, then the kept boxes of all groups by score.

    Args: boxes [G, K, 4] xyxy; scores [G, K]; valid bool [G, K] (padding: False; a
      non-finite score counts as invalid); max_output_size > 0; form: see `greedy_keep`.
    Returns: int32 [max_output_size] kept indices into the flattened [G K] boxes, by
      descending score (ties: lower index first), -1 padded: `batched_nms` with the group
      as the class, without its coordinate shift (which rounds large coordinates).
    """
    g, k = scores.shape
    if max_output_size < 1:
        raise ValueError(f"max_output_size {max_output_size}: it must be positive")
    boxes, scores = jnp.asarray(boxes, jnp.float32), jnp.asarray(scores, jnp.float32)
    valid = jnp.asarray(valid, bool) & jnp.isfinite(scores)
    order = jnp.argsort(-jnp.where(valid, scores, -jnp.inf), axis=1, stable=True)  # [G, K]
    sorted_boxes = jnp.take_along_axis(boxes, order[..., None], axis=1)
    keep_sorted = jax.vmap(lambda b, v: greedy_keep(b, v, iou_threshold, form))(
        sorted_boxes, jnp.take_along_axis(valid, order, axis=1)
    )
    keep = jnp.zeros((g, k), bool).at[jnp.arange(g)[:, None], order].set(keep_sorted).reshape(-1)
    # top_k puts equal scores lower index first: the order of batched_nms's stable sort.
    _, best = jax.lax.top_k(jnp.where(keep, scores.reshape(-1), -jnp.inf), min(max_output_size, g * k))
    best = jnp.where(keep[best], best, -1).astype(jnp.int32)
    return jnp.pad(best, (0, max_output_size - best.shape[0]), constant_values=-1)
