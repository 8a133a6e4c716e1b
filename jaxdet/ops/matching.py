"""Exact bipartite matching (linear sum assignment) in JAX with static shapes, for the
set-prediction loss: ground truth [M] (padded) to queries [Q], M <= Q.

The shortest-augmenting-path Hungarian algorithm with potentials (Kuhn-Munkres as
Jonker-Volgenant state it; O(M^2 Q)): one ground-truth row joins per outer step and an
augmenting path of reduced costs brings it in. Every loop is a `lax` loop over vectors
of length Q + 1, so it compiles once for any cost matrix, vmaps over a batch, and runs
on CPU, GPU and TPU alike. Padded rows get a constant cost, which cannot change the
real rows' optimum (whichever columns a constant row takes, it adds the same), and
their matches are dropped.

The "cpu" kernel form (jaxdet.kernels) calls scipy.optimize.linear_sum_assignment on the
host through `jax.pure_callback` instead: on XLA:CPU it is faster than the loops
(BENCHMARKS.md); any backend can run it, so tests compare the two forms anywhere.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from jaxdet import kernels


class Matching(NamedTuple):
    """query_of_gt int32 [M] (-1 for padded ground truth); gt_of_query int32 [Q] (-1 for
    unmatched queries); matched bool [Q]."""

    query_of_gt: Array
    gt_of_query: Array
    matched: Array


def _solve(cost: Array) -> Array:
    """cost [N, K], N <= K -> int32 [N]: the column of each row in a minimum-cost assignment."""
    n, k = cost.shape
    inf = jnp.asarray(jnp.inf, cost.dtype)
    # 1-based as the textbook: row 0 and column 0 are the virtual start of each path.
    a = jnp.zeros((n + 1, k + 1), cost.dtype).at[1:, 1:].set(cost)

    def add_row(i, state):
        u, v, p = state  # row and column potentials [n + 1], [k + 1]; p[j]: row of column j (0: free)
        p = p.at[0].set(i)

        def grow(s):  # one Dijkstra step of the augmenting-path search
            u, v, p, way, minv, used, j0, _ = s
            used = used.at[j0].set(True)
            i0 = p[j0]
            cur = a[i0] - u[i0] - v
            better = ~used & (cur < minv)
            minv = jnp.where(better, cur, minv)
            way = jnp.where(better, j0, way)
            masked = jnp.where(used, inf, minv)
            j1 = jnp.argmin(masked)
            delta = masked[j1]
            u = u.at[jnp.where(used, p, n + 1)].add(delta, mode="drop")
            v = jnp.where(used, v - delta, v)
            minv = jnp.where(used, minv, minv - delta)
            return u, v, p, way, minv, used, j1, p[j1] != 0

        init = (u, v, p, jnp.zeros(k + 1, jnp.int32), jnp.full(k + 1, inf), jnp.zeros(k + 1, bool), 0, True)
        u, v, p, way, _, _, j0, _ = jax.lax.while_loop(lambda s: s[-1], grow, init)

        def unwind(s):  # flip the path's edges back to its start
            p, j0 = s
            j1 = way[j0]
            return p.at[j0].set(p[j1]), j1

        p, _ = jax.lax.while_loop(lambda s: s[1] != 0, unwind, (p, j0))
        return u, v, p

    init = (jnp.zeros(n + 1, cost.dtype), jnp.zeros(k + 1, cost.dtype), jnp.zeros(k + 1, jnp.int32))
    _, _, p = jax.lax.fori_loop(1, n + 1, add_row, init)
    # Column j (1-based) holds row p[j]; invert to the column of each row.
    cols = jnp.zeros(n + 1, jnp.int32).at[p].set(jnp.arange(k + 1, dtype=jnp.int32))
    return cols[1:] - 1


def _solve_on_host(cost: Array) -> Array:
    """`_solve` by scipy on the host (the "cpu" form): cost [N, K] -> int32 [N]."""

    def solve(c):
        from scipy.optimize import linear_sum_assignment as scipy_lsa

        c = np.asarray(c)
        out = np.empty(c.shape[:-1], np.int32)
        for index in np.ndindex(c.shape[:-2]):  # (a batch dimension when vmapped)
            rows, cols = scipy_lsa(c[index])
            out[index][rows] = cols
        return out

    shape = jax.ShapeDtypeStruct(cost.shape[:-1], jnp.int32)
    return jax.pure_callback(solve, shape, cost, vmap_method="expand_dims")


def linear_sum_assignment(cost: Array, gt_mask: Array | None = None, form: str = "plain") -> Matching:
    """Minimum-cost one-to-one matching of ground truth to queries.

    Args:
      cost: [Q, M] cost of query q for ground-truth box m (M <= Q), finite.
      gt_mask: bool [M], False for padding (never matched); None: all real.
      form: the resolved kernel form: "plain" (the JAX loops) or "cpu" (scipy on the host).
    Returns: `Matching`. Equal in total cost to scipy.optimize.linear_sum_assignment on the
    real columns (the same pairs where the optimum is unique).
    """
    q, m = cost.shape
    if m > q:
        raise ValueError(f"linear_sum_assignment: {m} ground-truth slots but only {q} queries; need M <= Q")
    cost = jnp.asarray(cost, jnp.float32)
    gt_mask = jnp.ones((m,), bool) if gt_mask is None else jnp.asarray(gt_mask, bool)
    if m == 0:
        return Matching(jnp.zeros((0,), jnp.int32), jnp.full((q,), -1, jnp.int32), jnp.zeros((q,), bool))
    rows = jnp.where(gt_mask[:, None], cost.T, 0.0)  # [M, Q]: padded rows cost the same everywhere
    # Centring the real costs keeps the potentials small (float32): a constant shift changes no optimum.
    rows = rows - jnp.where(gt_mask[:, None], jnp.min(rows, axis=1, keepdims=True), 0.0)
    solve = _solve_on_host if kernels.check_form(form) == "cpu" else _solve
    query_of_gt = jnp.where(gt_mask, solve(rows), -1)
    gt_of_query = (
        jnp.full((q,), -1, jnp.int32)
        .at[jnp.where(gt_mask, query_of_gt, q)]
        .set(jnp.arange(m, dtype=jnp.int32), mode="drop")
    )
    return Matching(query_of_gt, gt_of_query, gt_of_query >= 0)
