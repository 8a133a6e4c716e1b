"""Primitives that move data without arithmetic: reshapes, broadcasts, transposes, static
and dynamic slices, concatenation, padding and iota. Shapes are static (the exported batch
is fixed), so every shape is a constant."""

from __future__ import annotations

import numpy as np

from jaxdet.export.onnx.convert import Unsupported, rule


def _out_shape(eqn) -> tuple[int, ...]:
    return tuple(eqn.outvars[0].aval.shape)


def reshape(g, x: str, shape) -> str:
    return g.op("Reshape", [x, g.ints(shape)])


@rule("reshape", "squeeze", "expand_dims")
def _reshape(g, eqn, ins):
    if eqn.primitive.name == "reshape" and eqn.params.get("dimensions") is not None:
        raise Unsupported("reshape with a dimension order (dimensions=...) has no ONNX rule yet")
    return [reshape(g, ins[0], _out_shape(eqn))]


@rule("broadcast_in_dim")
def _broadcast_in_dim(g, eqn, ins):
    shape, dims = eqn.params["shape"], eqn.params["broadcast_dimensions"]
    in_shape = eqn.invars[0].aval.shape
    ranked = [1] * len(shape)
    for d, n in zip(dims, in_shape, strict=True):
        ranked[d] = n
    x = reshape(g, ins[0], ranked) if tuple(ranked) != tuple(in_shape) else ins[0]
    return [g.op("Expand", [x, g.ints(shape)]) if tuple(ranked) != tuple(shape) else g.op("Identity", [x])]


@rule("transpose")
def _transpose(g, eqn, ins):
    return [g.op("Transpose", ins, perm=list(eqn.params["permutation"]))]


@rule("slice")
def _slice(g, eqn, ins):
    starts, limits = eqn.params["start_indices"], eqn.params["limit_indices"]
    strides = eqn.params["strides"] or (1,) * len(starts)
    axes = list(range(len(starts)))
    return [g.op("Slice", [ins[0], g.ints(starts), g.ints(limits), g.ints(axes), g.ints(strides)])]


def clamped_starts(g, starts: list[str], dims, sizes) -> str:
    """int64 [n] starts, each clamped to [0, dim - size] (XLA's dynamic-slice rule)."""
    parts = [g.op("Cast", [s], to=7) for s in starts]  # INT64
    vec = g.op("Concat", [reshape(g, p, [1]) for p in parts], axis=0)
    hi = [d - s for d, s in zip(dims, sizes, strict=True)]
    return g.op("Min", [g.op("Max", [vec, g.ints([0] * len(hi))]), g.ints(hi)])


@rule("dynamic_slice")
def _dynamic_slice(g, eqn, ins):
    x, *starts = ins
    dims, sizes = eqn.invars[0].aval.shape, eqn.params["slice_sizes"]
    begin = clamped_starts(g, starts, dims, sizes)
    end = g.op("Add", [begin, g.ints(sizes)])
    return [g.op("Slice", [x, begin, end, g.ints(range(len(dims)))])]


@rule("dynamic_update_slice")
def _dynamic_update_slice(g, eqn, ins):
    x, update, *starts = ins
    dims, sizes = eqn.invars[0].aval.shape, eqn.invars[1].aval.shape
    begin = clamped_starts(g, starts, dims, sizes)
    # Every position of the update, as indices into x: begin + a static grid.
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in sizes], indexing="ij"), axis=-1).astype(np.int64)
    where = g.op("Add", [g.const(grid), begin])
    return [g.op("ScatterND", [x, where, update])]


@rule("concatenate")
def _concatenate(g, eqn, ins):
    return [g.op("Concat", ins, axis=int(eqn.params["dimension"]))]


@rule("stack")
def _stack(g, eqn, ins):
    axis = int(eqn.params["axis"])
    shape = list(eqn.invars[0].aval.shape)
    shape.insert(axis, 1)
    return [g.op("Concat", [reshape(g, x, shape) for x in ins], axis=axis)]


@rule("pad")
def _pad(g, eqn, ins):
    x, value = ins
    config = eqn.params["padding_config"]
    if any(interior for _, _, interior in config):
        raise Unsupported("pad with interior padding has no ONNX rule yet")
    lo, hi = [max(c[0], 0) for c in config], [max(c[1], 0) for c in config]
    out = g.op("Pad", [x, g.ints(lo + hi), value], mode="constant")
    if any(c[0] < 0 or c[1] < 0 for c in config):  # negative padding crops
        shape = [n + a + b for n, a, b in zip(eqn.invars[0].aval.shape, lo, hi, strict=True)]
        starts = [-min(c[0], 0) for c in config]
        ends = [n + min(c[1], 0) for n, c in zip(shape, config, strict=True)]
        out = g.op("Slice", [out, g.ints(starts), g.ints(ends), g.ints(range(len(shape)))])
    return [out]


@rule("iota")
def _iota(g, eqn, ins):
    shape, dim = eqn.params["shape"], eqn.params["dimension"]
    ranked = [1] * len(shape)
    ranked[dim] = shape[dim]
    values = np.arange(shape[dim], dtype=eqn.params["dtype"]).reshape(ranked)
    return [g.const(np.broadcast_to(values, shape).copy())]


@rule("unstack")
def _unstack(g, eqn, ins):
    axis = int(eqn.params["axis"])
    n = eqn.invars[0].aval.shape[axis]
    out_shape = list(eqn.outvars[0].aval.shape)
    parts = g.op("Split", [ins[0]], outputs=n, axis=axis, num_outputs=n) if n > 1 else [ins[0]]
    return [reshape(g, p, out_shape) for p in parts]
