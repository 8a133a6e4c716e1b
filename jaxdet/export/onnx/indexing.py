"""XLA's gather and scatter as ONNX GatherND / Slice / ScatterND, for the forms JAX's
indexing produces: a take along axes (batched or not, scalar slices of the indexed dims,
whole slices of the others), and a dynamic slice with one index vector. Other forms fail
naming their dimension numbers.

Out-of-range indices follow the jaxpr's mode: CLIP and PROMISE_IN_BOUNDS clamp (ONNX would
wrap negatives); FILL_OR_DROP gathers fill (0) and scatters drop, by routing those updates
to a scratch row that is cut off afterwards."""

from __future__ import annotations

import numpy as np
from jax import lax

from jaxdet.export.onnx.convert import Unsupported, rule
from jaxdet.export.onnx.graph import elem_type, where
from jaxdet.export.onnx.shape_ops import clamped_starts, reshape

INT64 = 7


def _index_vector(g, idx: str, dims: list[int], sizes: list[int], clip: bool) -> tuple[str, str | None]:
    """(int64 indices, in-range mask or None): each component k clamped to [0, dims[k] -
    sizes[k]] when `clip`, else its in-range mask returned."""
    idx = g.op("Cast", [idx], to=INT64)
    hi = g.ints([d - s for d, s in zip(dims, sizes, strict=True)])
    if clip:
        return g.op("Min", [g.op("Max", [idx, g.ints([0] * len(dims))]), hi]), None
    ok = g.op("And", [g.op("GreaterOrEqual", [idx, g.ints([0] * len(dims))]), g.op("LessOrEqual", [idx, hi])])
    as_int = g.op("Cast", [ok], to=elem_type(np.int32))
    inside = g.op("Cast", [g.op("ReduceMin", [as_int, g.ints([-1])], keepdims=0)], to=elem_type(np.bool_))
    safe = g.op("Where", [ok, idx, g.ints([0] * len(dims))])
    return safe, inside


@rule("gather")
def _gather(g, eqn, ins):
    x, idx = ins
    dn, sizes, mode = eqn.params["dimension_numbers"], eqn.params["slice_sizes"], eqn.params["mode"]
    shape, ishape = eqn.invars[0].aval.shape, eqn.invars[1].aval.shape
    out_shape = eqn.outvars[0].aval.shape
    smap, collapsed = list(dn.start_index_map), set(dn.collapsed_slice_dims)
    obatch, ibatch = list(dn.operand_batching_dims), list(dn.start_indices_batching_dims)
    clip = mode != lax.GatherScatterMode.FILL_OR_DROP
    if len(ishape) == 1 and not obatch:  # one index vector: a dynamic slice
        begin = clamped_starts(g, [g.op("Gather", [idx, g.ints([k])], axis=0) for k in range(len(smap))],
                               [shape[d] for d in smap], [sizes[d] for d in smap])  # fmt: skip
        if not clip:
            raise Unsupported("gather as a dynamic slice with mode FILL_OR_DROP has no ONNX rule yet")
        y = g.op("Slice", [x, begin, g.op("Add", [begin, g.ints([sizes[d] for d in smap])]), g.ints(smap)])
        rest = [d for d in range(len(shape)) if d not in smap and sizes[d] != shape[d]]
        if rest:
            y = g.op("Slice", [y, g.ints([0] * len(rest)), g.ints([sizes[d] for d in rest]), g.ints(rest)])
        return [reshape(g, y, out_shape)]
    free = [d for d in range(len(shape)) if d not in smap and d not in obatch]
    if any(sizes[d] != 1 or d not in collapsed for d in smap) or any(sizes[d] != shape[d] for d in free):
        raise Unsupported(f"gather with dimension numbers {dn} and slice sizes {sizes} has no ONNX rule yet")
    # GatherND's form: the data as [batching..., indexed (in start_index_map order)..., free...],
    # the indices as [the paired batching dims..., the other batch dims..., index vector].
    x = g.op("Transpose", [x], perm=obatch + smap + free)
    others = [d for d in range(len(ishape) - 1) if d not in ibatch]
    iperm = ibatch + others + [len(ishape) - 1]
    idx = g.op("Transpose", [idx], perm=iperm)
    safe, inside = _index_vector(g, idx, [shape[d] for d in smap], [1] * len(smap), clip)
    y = g.op("GatherND", [x, safe], batch_dims=len(obatch))
    # Its dims: the indices' batch dims (as iperm), then the free dims; XLA's: offset_dims
    # hold the free dims in order, the rest the indices' batch dims in their own order.
    have = [("i", d) for d in iperm[:-1]] + [("o", d) for d in free]
    frees, batches = iter(free), iter(range(len(ishape) - 1))
    want = [("o", next(frees)) if pos in dn.offset_dims else ("i", next(batches)) for pos in range(len(out_shape))]
    perm = [have.index(w) for w in want]
    if inside is not None:  # FILL_OR_DROP: out-of-range gathers give 0
        mask_shape = [ishape[d] for d in iperm[:-1]] + [1] * len(free)
        zero = g.const(np.zeros((), eqn.outvars[0].aval.dtype))
        y = where(g, reshape(g, inside, mask_shape), y, zero, eqn.outvars[0].aval.dtype)
    return [g.op("Transpose", [y], perm=perm) if perm != list(range(len(perm))) else y]


@rule("scatter", "scatter-add", "scatter_add", "scatter-mul", "scatter-min", "scatter-max")
def _scatter(g, eqn, ins):
    x, idx, updates = ins
    dn, mode = eqn.params["dimension_numbers"], eqn.params["mode"]
    shape, ishape = eqn.invars[0].aval.shape, eqn.invars[1].aval.shape
    ushape = eqn.invars[2].aval.shape
    reduction = {"scatter": "none", "scatter-add": "add", "scatter_add": "add", "scatter-mul": "mul",
                 "scatter-min": "min", "scatter-max": "max"}[eqn.primitive.name]  # fmt: skip
    sdims, obatch, ibatch = (
        list(dn.scatter_dims_to_operand_dims),
        list(dn.operand_batching_dims),
        list(dn.scatter_indices_batching_dims),
    )
    clip = mode != lax.GatherScatterMode.FILL_OR_DROP
    if len(ishape) == 1 and not obatch:  # one index vector: a dynamic update slice
        if reduction != "none":
            raise Unsupported(f"{eqn.primitive.name} of a window (update_window_dims) has no ONNX rule yet")
        window = list(ushape)
        for d in sorted(dn.inserted_window_dims):
            window.insert(d, 1)
        starts = [g.op("Gather", [idx, g.ints([k])], axis=0) for k in range(len(sdims))]
        vec = g.op("Concat", starts, axis=0)
        begin, inside = _index_vector(g, vec, [shape[d] for d in sdims], [window[d] for d in sdims], clip)
        full = g.op("ScatterElements", [g.ints([0] * len(shape)), g.ints(sdims), begin], axis=0)
        grid = np.stack(np.meshgrid(*[np.arange(n) for n in window], indexing="ij"), axis=-1).astype(np.int64)
        y = g.op("ScatterND", [x, g.op("Add", [g.const(grid), full]), reshape(g, updates, window)])
        return [where(g, inside, y, x, eqn.outvars[0].aval.dtype) if inside is not None else y]
    if dn.update_window_dims or set(obatch) | set(sdims) != set(range(len(shape))):
        raise Unsupported(f"scatter with dimension numbers {dn} has no ONNX rule yet")
    # Every update is one element: its full index is (its batching position..., its index vector).
    bshape = ishape[:-1]
    safe, inside = _index_vector(g, idx, [shape[d] for d in sdims], [1] * len(sdims), clip)
    columns = {}
    for od, idim in zip(obatch, ibatch, strict=True):
        ranked = [1] * len(bshape)
        ranked[idim] = bshape[idim]
        pos = np.broadcast_to(np.arange(bshape[idim], dtype=np.int64).reshape(ranked + [1]), (*bshape, 1))
        columns[od] = g.const(pos.copy())
    for k, od in enumerate(sdims):
        columns[od] = g.op("Slice", [safe, g.ints([k]), g.ints([k + 1]), g.ints([len(bshape)])])
    if inside is not None:  # FILL_OR_DROP: out-of-range updates go to a scratch row, cut off below
        d0 = sdims[0]
        pad = [0] * len(shape) * 2
        pad[len(shape) + d0] = 1
        x = g.op("Pad", [x, g.ints(pad), g.const(np.zeros((), eqn.invars[0].aval.dtype))], mode="constant")
        scratch = g.const(np.full((1,), shape[d0], np.int64))
        columns[d0] = g.op("Where", [reshape(g, inside, [*bshape, 1]), columns[d0], scratch])
    positions = g.op("Concat", [columns[d] for d in range(len(shape))], axis=-1)
    y = g.op("ScatterND", [x, positions, updates], reduction=reduction)
    if inside is not None:
        y = g.op("Slice", [y, g.ints([0]), g.ints([shape[sdims[0]]]), g.ints([sdims[0]])])
    return [y]
