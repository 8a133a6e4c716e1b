"""jaxdet.export.onnx's rules, one form at a time: each small function's ONNX model in
onnxruntime against the same function jitted, on whatever backend runs the suite."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

onnxruntime = pytest.importorskip("onnxruntime")

from jaxdet.export.onnx import Unsupported, to_onnx  # noqa: E402


def _check(fn, x, atol=0.0, rtol=0.0):
    model = to_onnx(fn, jax.ShapeDtypeStruct(x.shape, x.dtype))
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = session.run(None, {"images": x})
    want = [np.asarray(w) for w in jax.tree_util.tree_leaves(jax.jit(fn)(x))]
    assert len(got) == len(want)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, w.shape, g.dtype, w.dtype)
        if atol or rtol:  # float sums in another order: a rounding apart
            np.testing.assert_allclose(g, w, atol=atol, rtol=rtol)
        else:
            np.testing.assert_array_equal(g, w)


_rng = np.random.default_rng(0)
_ints = np.arange(-7, 17, dtype=np.int32).reshape(4, 6)
_floats = _rng.normal(size=(2, 6, 5)).astype(np.float32)


@pytest.mark.parametrize(
    "name, fn, x",
    [
        ("integer div and rem round toward zero", lambda a: (a // 3, a % 3, lax.div(a, 3), lax.rem(a, 3)), _ints),
        ("select_n over an int and clamp", lambda a: (lax.select_n(a % 3, a, -a, 2 * a), jnp.clip(a, -2, 5)), _ints),
        (
            "iota, cumsum both ways, argmax, argmin",
            lambda a: (
                a + lax.broadcasted_iota(jnp.int32, a.shape, 1),
                jnp.cumsum(a, 1),
                lax.cumsum(a, 0, reverse=True),
                jnp.argmax(a % 5, 1),
                jnp.argmin(a % 5, 0),
            ),
            _ints,
        ),  # fmt: skip
        (
            "reductions and boolean logic",
            lambda a: (jnp.all(a > -3, 1), jnp.any(a > 10, 0), jnp.max(a, 1), a.sum(0), (a > 0) ^ (a < 5), ~a, a & 6),
            _ints,
        ),  # fmt: skip
        ("pad with negative edges", lambda a: lax.pad(a, jnp.int32(9), [(1, -2, 0), (-1, 3, 0)]), _ints),
        (
            "transpose, reshape, broadcast, stack",
            lambda a: (a.T.reshape(3, 8), jnp.broadcast_to(a[:, None, :], (4, 2, 6)), jnp.stack([a, -a], 1)),
            _ints,
        ),  # fmt: skip
        (
            "is_finite and friends",
            lambda a: (jnp.isfinite(jnp.log(a)), jnp.sqrt(jnp.abs(a)), jax.nn.sigmoid(a)),
            _floats,
        ),  # fmt: skip
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_elementwise_and_shape_rules(name, fn, x):
    _check(fn, x, atol=1e-6 if x.dtype == np.float32 else 0.0)


def test_take_with_fill_and_clip_and_along_an_axis():
    table = jnp.asarray(_rng.normal(size=(2, 7, 3)).astype(np.float32))
    idx = np.asarray([[0, 6, 7, -1, 3], [2, 2, 9, 5, 0]], np.int32)
    _check(lambda i: (jnp.take_along_axis(table, i[..., None], axis=1, mode="fill", fill_value=0.0),
                      jnp.take(table[0], i, axis=0, mode="clip"),
                      jnp.take_along_axis(table, jnp.clip(i, 0, 6)[..., None], axis=1)), idx)  # fmt: skip


def test_scatters_set_add_and_drop_out_of_range_updates():
    base = jnp.zeros((2, 5), jnp.int32)
    idx = np.asarray([[0, 4, 5, 1, 4], [3, -1, 2, 2, 0]], np.int32)

    def fn(i):
        rows = jnp.arange(2)[:, None]
        added = base.at[rows, i].add(1, mode="drop")
        put = base.at[rows, i].set(7, mode="drop")
        column = base.at[:, i[0, 1]].set(jnp.asarray([5, 6]), mode="drop")
        window = lax.dynamic_update_slice(base, jnp.ones((2, 2), jnp.int32), (0, i[0, 3]))
        return added, jnp.sort(put, 1), column, window, lax.dynamic_slice(i, (1, i[1, 2]), (1, 3))

    _check(fn, idx)


def test_sort_is_stable_and_top_k_puts_the_lower_index_first():
    keys = np.asarray([[3.0, 1.0, 3.0, 2.0, 1.0, 3.0], [0.0, 0.0, 5.0, -1.0, 5.0, 0.0]], np.float32)
    _check(lambda k: (*lax.sort((k, lax.broadcasted_iota(jnp.int32, k.shape, 1)), dimension=1, num_keys=1),
                      *lax.top_k(k, 4)), keys)  # fmt: skip


def test_a_vmapped_while_runs_until_every_element_stops_and_scan_runs_both_ways():
    limits = np.asarray([1, 5, 3, 0], np.int32)

    def count(limit):
        return lax.while_loop(lambda c: c[0] < limit, lambda c: (c[0] + 1, c[1] * 2), (jnp.int32(0), jnp.int32(1)))

    def scan(x):
        step = lambda c, v: (c + v, c * v)  # noqa: E731
        return lax.scan(step, jnp.int32(1), x), lax.scan(step, jnp.int32(1), x, reverse=True)

    _check(lambda n: (jax.vmap(count)(n), scan(n), lax.cond(n[1] > 2, lambda: n * 2, lambda: n - 1)), limits)


def test_convolutions_pooling_and_dot_products():
    x = _rng.normal(size=(2, 9, 8, 4)).astype(np.float32)
    w = jnp.asarray(_rng.normal(size=(3, 3, 2, 6)).astype(np.float32))  # HWIO, 2 groups
    m = jnp.asarray(_rng.normal(size=(2, 4, 5)).astype(np.float32))

    def fn(a):
        conv = lax.conv_general_dilated(a, w, (2, 1), [(1, 2), (0, 1)], rhs_dilation=(1, 2),
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=2)  # fmt: skip
        pool = lax.reduce_window(a, -jnp.inf, lax.max, (1, 3, 3, 1), (1, 2, 2, 1), ((0, 0), (1, 1), (1, 1), (0, 0)))
        return conv, pool, jnp.einsum("bhwc,bcd->bhwd", a, m), a.reshape(2, -1) @ a.reshape(2, -1).T

    _check(fn, x, atol=2e-5, rtol=1e-5)


def test_a_primitive_without_a_rule_is_named():
    with pytest.raises(Unsupported, match="'atan2'"):
        to_onnx(lambda a: jnp.arctan2(a, a + 1), jax.ShapeDtypeStruct((3,), jnp.float32))


def test_greedy_nms_becomes_onnx_non_max_suppression_with_the_same_kept_set():
    """jaxdet_greedy_nms (vmapped over images, invalid boxes among them, both forms) as
    ONNX's NonMaxSuppression keeps exactly the boxes the JAX forms keep."""
    from jaxdet.ops import nms

    rng = np.random.default_rng(3)
    xy = rng.uniform(0, 40, (3, 300, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(2, 20, (3, 300, 2))], -1).astype(np.float32)
    valid = jnp.asarray(rng.uniform(size=(3, 300)) > 0.1)
    for form in ("plain", "cpu"):
        fn = lambda b: jax.vmap(lambda bb, v: nms.greedy_keep(bb, v, 0.5, form))(b, valid)  # noqa: E731
        model = to_onnx(fn, jax.ShapeDtypeStruct(boxes.shape, jnp.float32))
        assert "NonMaxSuppression" in {n.op_type for n in model.graph.node}
        _check(fn, boxes)
    assert 20 < int(np.asarray(fn(boxes)).sum()) < 800  # boxes both kept and suppressed
