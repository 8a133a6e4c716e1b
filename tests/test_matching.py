"""The JAX linear sum assignment against scipy.optimize.linear_sum_assignment, and its
"cpu" form (scipy on the host through pure_callback) against the plain JAX form."""

import jax
import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment as scipy_lsa

from jaxdet.ops.matching import linear_sum_assignment


def _check(cost: np.ndarray, mask: np.ndarray, result) -> None:
    """Same total cost as scipy on the real columns; one query per real box, none for padding."""
    query_of_gt, gt_of_query = np.asarray(result.query_of_gt), np.asarray(result.gt_of_query)
    real = np.flatnonzero(mask)
    sub = cost[:, real]
    rows, cols = scipy_lsa(sub)
    ours = cost[query_of_gt[real], real].sum() if len(real) else 0.0
    np.testing.assert_allclose(ours, sub[rows, cols].sum(), rtol=1e-5, atol=1e-4)
    assert len(set(query_of_gt[real])) == len(real) and (query_of_gt[~mask] == -1).all()
    assert (gt_of_query >= 0).sum() == len(real) and np.array_equal(np.asarray(result.matched), gt_of_query >= 0)
    for m in real:
        assert gt_of_query[query_of_gt[m]] == m


@pytest.mark.parametrize("kind", ["normal", "tied", "wide_range"])
def test_matches_scipy_on_random_rectangular_and_padded_costs(kind):
    rng = np.random.default_rng({"normal": 0, "tied": 1, "wide_range": 2}[kind])
    solve = jax.jit(linear_sum_assignment)
    for trial in range(60):
        q, m = [(1, 1), (5, 3), (16, 16), (23, 9)][trial % 4]  # rectangular and square; few compiles
        if kind == "tied":  # few distinct values: many optimal assignments, the cost must still be optimal
            cost = rng.integers(0, 3, (q, m)).astype(np.float32)
        elif kind == "wide_range":
            cost = (rng.normal(size=(q, m)) * 10.0 ** rng.integers(-2, 4)).astype(np.float32)
        else:
            cost = rng.normal(size=(q, m)).astype(np.float32)
        mask = rng.uniform(size=m) < 0.7
        _check(cost, mask, solve(cost, mask))


def test_unique_optimum_is_scipys_assignment_and_square_case():
    cost = np.random.default_rng(3).normal(size=(12, 12)).astype(np.float32)  # continuous: unique optimum
    result = linear_sum_assignment(cost)
    rows, cols = scipy_lsa(cost)
    np.testing.assert_array_equal(np.asarray(result.query_of_gt)[cols], rows)


def test_fully_padded_and_empty_ground_truth_match_nothing():
    cost = np.random.default_rng(4).normal(size=(10, 5)).astype(np.float32)
    result = linear_sum_assignment(cost, np.zeros(5, bool))
    assert (np.asarray(result.query_of_gt) == -1).all() and not np.asarray(result.matched).any()
    empty = linear_sum_assignment(np.zeros((10, 0), np.float32))
    assert empty.query_of_gt.shape == (0,) and not np.asarray(empty.matched).any()
    with pytest.raises(ValueError, match="need M <= Q"):
        linear_sum_assignment(np.zeros((3, 4), np.float32))


def test_cpu_form_equals_the_plain_form_under_jit_and_vmap():
    """The "cpu" form (scipy through pure_callback) on whatever backend runs the suite
    gives the plain JAX form's matching: continuous costs have one optimum."""
    rng = np.random.default_rng(6)
    cost = rng.normal(size=(5, 30, 8)).astype(np.float32)
    mask = rng.uniform(size=(5, 8)) < 0.7
    solve = {f: jax.jit(jax.vmap(lambda c, m, f=f: linear_sum_assignment(c, m, f))) for f in ("cpu", "plain")}
    forms = {f: fn(cost, mask) for f, fn in solve.items()}
    for field in ("query_of_gt", "gt_of_query", "matched"):
        np.testing.assert_array_equal(getattr(forms["cpu"], field), getattr(forms["plain"], field))
    for i in range(5):
        _check(cost[i], mask[i], jax.tree_util.tree_map(lambda x: x[i], forms["cpu"]))
    with pytest.raises(ValueError, match="resolve the policy first"):
        linear_sum_assignment(cost[0], mask[0], "auto")


def test_vmaps_over_a_batch_and_compiles_once_for_any_mask():
    rng = np.random.default_rng(5)
    cost = rng.normal(size=(6, 40, 9)).astype(np.float32)
    masks = [np.arange(9)[None, :] < rng.integers(0, 10, (6, 1)) for _ in range(3)]
    traces = []

    @jax.jit
    def batched(c, m):
        traces.append(1)
        return jax.vmap(linear_sum_assignment)(c, m)

    for mask in masks:  # 0..9 real boxes per image, one compiled program
        result = batched(cost, mask)
        for i in range(6):
            _check(cost[i], mask[i], jax.tree_util.tree_map(lambda x: x[i], result))
    assert len(traces) == 1
