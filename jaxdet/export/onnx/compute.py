"""Primitives that compute over many elements: reductions, cumulative sums, convolutions,
dot products (as Einsum), max pooling, top-k and sorting."""

from __future__ import annotations

import string

import numpy as np

from jaxdet.export.onnx.convert import Unsupported, rule
from jaxdet.export.onnx.graph import elem_type

INT64 = 7


@rule("reduce_sum", "reduce_max", "reduce_min", "reduce_prod", "reduce_and", "reduce_or")
def _reduce(g, eqn, ins):
    name, axes = eqn.primitive.name, list(eqn.params["axes"])
    if not axes:
        return [g.op("Identity", ins)]
    if name in ("reduce_and", "reduce_or"):  # as the min / max of 0/1
        as_int = g.op("Cast", ins, to=elem_type(np.int32))
        op = "ReduceMin" if name == "reduce_and" else "ReduceMax"
        return [g.op("Cast", [g.op(op, [as_int, g.ints(axes)], keepdims=0)], to=elem_type(np.bool_))]
    op = {"reduce_sum": "ReduceSum", "reduce_max": "ReduceMax", "reduce_min": "ReduceMin",
          "reduce_prod": "ReduceProd"}[name]  # fmt: skip
    return [g.op(op, [ins[0], g.ints(axes)], keepdims=0)]


@rule("argmax", "argmin")
def _argmax(g, eqn, ins):
    (axis,) = eqn.params["axes"]
    op = "ArgMax" if eqn.primitive.name == "argmax" else "ArgMin"
    index = g.op(op, ins, axis=int(axis), keepdims=0, select_last_index=0)  # the first, as XLA
    return [g.op("Cast", [index], to=elem_type(eqn.params["index_dtype"]))]


@rule("cumsum")
def _cumsum(g, eqn, ins):
    axis = g.const(np.asarray(eqn.params["axis"], np.int64))
    return [g.op("CumSum", [ins[0], axis], reverse=int(eqn.params["reverse"]))]


def _inverse(perm) -> list[int]:
    out = [0] * len(perm)
    for i, p in enumerate(perm):
        out[p] = i
    return out


@rule("conv_general_dilated")
def _conv(g, eqn, ins):
    p = eqn.params
    lhs_spec, rhs_spec, out_spec = p["dimension_numbers"]
    if any(d != 1 for d in p["lhs_dilation"]) or p["batch_group_count"] != 1:
        raise Unsupported("a transposed (lhs-dilated) or batch-grouped convolution has no ONNX rule yet")
    padding = p["padding"]
    if any(lo < 0 or hi < 0 for lo, hi in padding):
        raise Unsupported("a convolution with negative padding has no ONNX rule")
    x = g.op("Transpose", [ins[0]], perm=list(lhs_spec))  # N, C, spatial...
    w = g.op("Transpose", [ins[1]], perm=list(rhs_spec))  # O, I, spatial...
    pads = [lo for lo, _ in padding] + [hi for _, hi in padding]
    y = g.op("Conv", [x, w], strides=list(p["window_strides"]), pads=pads, dilations=list(p["rhs_dilation"]),
             group=int(p["feature_group_count"]))  # fmt: skip
    return [g.op("Transpose", [y], perm=_inverse(out_spec))]


@rule("dot_general")
def _dot_general(g, eqn, ins):
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    ln, rn = len(eqn.invars[0].aval.shape), len(eqn.invars[1].aval.shape)
    letters = iter(string.ascii_letters)
    lhs = [next(letters) for _ in range(ln)]
    rhs = [None] * rn
    for a, b in zip(lc, rc, strict=True):
        rhs[b] = lhs[a]
    for a, b in zip(lb, rb, strict=True):
        rhs[b] = lhs[a]
    rhs = [r or next(letters) for r in rhs]
    # XLA's order: batch dims, then the lhs free dims, then the rhs free dims.
    out = [lhs[a] for a in lb]
    out += [lhs[i] for i in range(ln) if i not in lc and i not in lb]
    out += [rhs[i] for i in range(rn) if i not in rc and i not in rb]
    equation = f"{''.join(lhs)},{''.join(rhs)}->{''.join(out)}"
    a, b = ins
    want = eqn.outvars[0].aval.dtype
    if eqn.invars[0].aval.dtype != want:  # preferred_element_type: accumulate in the output's type
        a, b = (g.op("Cast", [x], to=elem_type(want)) for x in (a, b))
    return [g.op("Einsum", [a, b], equation=equation)]


@rule("reduce_window_max")
def _max_pool(g, eqn, ins):
    p = eqn.params
    window, strides, padding = p["window_dimensions"], p["window_strides"], p["padding"]
    if any(d != 1 for d in (*p["base_dilation"], *p["window_dilation"])):
        raise Unsupported("a dilated max pool has no ONNX rule yet")
    pooled = [i for i, w in enumerate(window) if w != 1 or strides[i] != 1 or padding[i] != (0, 0)]
    rest = [i for i in range(len(window)) if i not in pooled]
    if len(rest) < 2:
        raise Unsupported(f"max pooling over {len(pooled)} of {len(window)} dimensions has no ONNX MaxPool form")
    # MaxPool pools the trailing dims of [N, C, ...]: fold the other dims into N and C.
    perm = rest + pooled
    x = g.op("Transpose", ins, perm=perm)
    shape = [eqn.invars[0].aval.shape[i] for i in perm]
    folded = [int(np.prod(shape[: len(rest) - 1])), shape[len(rest) - 1], *shape[len(rest) :]]
    x = g.op("Reshape", [x, g.ints(folded)])
    pads = [padding[i][0] for i in pooled] + [padding[i][1] for i in pooled]
    y = g.op("MaxPool", [x], kernel_shape=[window[i] for i in pooled], strides=[strides[i] for i in pooled],
             pads=pads)  # fmt: skip
    out_shape = eqn.outvars[0].aval.shape
    y = g.op("Reshape", [y, g.ints([out_shape[i] for i in perm])])
    return [g.op("Transpose", [y], perm=_inverse(perm))]


@rule("top_k")
def _top_k(g, eqn, ins):
    shape = eqn.invars[0].aval.shape
    axis = int(eqn.params.get("axis", len(shape) - 1)) % len(shape)
    k = g.ints([eqn.params["k"]])
    # ONNX TopK puts the lower index first among equal values, as XLA's top_k.
    values, index = g.op("TopK", [ins[0], k], outputs=2, axis=axis, largest=1, sorted=1)
    return [values, g.op("Cast", [index], to=elem_type(eqn.outvars[1].aval.dtype))]


@rule("sort")
def _sort(g, eqn, ins):
    p = eqn.params
    if p["num_keys"] != 1:
        raise Unsupported(f"a sort over {p['num_keys']} keys has no ONNX rule (ONNX TopK sorts by one)")
    axis = int(p["dimension"])
    n = eqn.invars[0].aval.shape[axis]
    # Ascending TopK of all n: equal keys keep their order (lower index first), a stable sort.
    keys, index = g.op("TopK", [ins[0], g.ints([n])], outputs=2, axis=axis, largest=0, sorted=1)
    return [keys] + [g.op("GatherElements", [x, index], axis=axis) for x in ins[1:]]
