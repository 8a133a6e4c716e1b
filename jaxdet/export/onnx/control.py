"""Control flow as ONNX Loop and If: `while` (e.g. the fixed point of greedy NMS) as a Loop
whose body also computes the next condition, `scan` as a counted Loop with its stacked
outputs, `cond` as If. Bodies read the enclosing graph's values by name."""

from __future__ import annotations

import numpy as np

from jaxdet.export.onnx.convert import Unsupported, emit, rule
from jaxdet.export.onnx.graph import Graph, elem_type, value_info, where
from jaxdet.export.onnx.shape_ops import reshape

INT32, BOOL = elem_type(np.int32), elem_type(np.bool_)


@rule("while")
def _while(g, eqn, ins):
    p = eqn.params
    cond, body = p["cond_jaxpr"], p["body_jaxpr"]
    nc, nb = p["cond_nconsts"], p["body_nconsts"]
    cond_consts, body_consts, init = ins[:nc], ins[nc : nc + nb], ins[nc + nb :]
    avals = [v.aval for v in eqn.outvars]
    # A vmapped loop's condition is batched: it runs while any is true, and an element
    # whose condition is false keeps its carry (as jax lowers it to XLA).
    batched = cond.out_avals[0].shape != ()

    def any_of(graph: Graph, pred: str) -> str:
        if not batched:
            return pred
        as_int = graph.op("Cast", [pred], to=INT32)
        return graph.op("Cast", [graph.op("ReduceMax", [as_int], keepdims=0)], to=BOOL)

    (pred0,) = _call(g, cond, cond_consts, init)
    first = any_of(g, pred0)
    sub = Graph(g)
    it, cin = g.fresh("iter"), g.fresh("cond_in")
    carried = [g.fresh("carry") for _ in avals]
    new = _call(sub, body, body_consts, carried)
    if batched:
        (pred,) = _call(sub, cond, cond_consts, carried)
        rank = len(cond.out_avals[0].shape)
        new = [where(sub, reshape(sub, pred, [*a.shape[:rank], *[1] * (len(a.shape) - rank)]), n, c, a.dtype)
               for n, c, a in zip(new, carried, avals, strict=True)]  # fmt: skip
    (again,) = _call(sub, cond, cond_consts, new)
    again = any_of(sub, again)
    outs = [sub.op("Identity", [again])] + [sub.op("Identity", [v]) for v in new]
    graph = sub.make(
        g.fresh("while_body"),
        [value_info(it, np.int64, ()), value_info(cin, np.bool_, None)]
        + [value_info(c, a.dtype, a.shape) for c, a in zip(carried, avals, strict=True)],
        [value_info(outs[0], np.bool_, ())]
        + [value_info(o, a.dtype, a.shape) for o, a in zip(outs[1:], avals, strict=True)],
    )
    result = g.op("Loop", ["", first, *init], outputs=len(avals), body=graph)
    return result if isinstance(result, list) else [result]


def _call(g: Graph, closed, consts: list[str], args: list[str]) -> list[str]:
    """Emits a ClosedJaxpr whose invars are (consts..., args...)."""
    return emit(g, closed.jaxpr, closed.consts, [*consts, *args])


@rule("scan")
def _scan(g, eqn, ins):
    p = eqn.params
    n_consts, n_carry, length = p["num_consts"], p["num_carry"], int(p["length"])
    consts, init, xs = ins[:n_consts], ins[n_consts : n_consts + n_carry], ins[n_consts + n_carry :]
    carry_avals = [v.aval for v in eqn.outvars[:n_carry]]
    y_avals = [v.aval for v in eqn.outvars[n_carry:]]
    sub = Graph(g)
    it, cin = g.fresh("iter"), g.fresh("cond_in")
    carried = [g.fresh("carry") for _ in carry_avals]
    step = it if not p["reverse"] else sub.op("Sub", [g.const(np.asarray(length - 1, np.int64)), it])
    x_t = [sub.op("Gather", [x, step], axis=0) for x in xs]  # a scalar index drops the axis
    outs = _call(sub, p["jaxpr"], consts, [*carried, *x_t])
    outs = [sub.op("Identity", [o]) for o in outs]
    cout = sub.op("Identity", [cin])
    graph = sub.make(
        g.fresh("scan_body"),
        [value_info(it, np.int64, ()), value_info(cin, np.bool_, None)]
        + [value_info(c, a.dtype, a.shape) for c, a in zip(carried, carry_avals, strict=True)],
        [value_info(cout, np.bool_, ())]
        + [value_info(o, a.dtype, a.shape) for o, a in zip(outs[:n_carry], carry_avals, strict=True)]
        + [value_info(o, a.dtype, a.shape[1:]) for o, a in zip(outs[n_carry:], y_avals, strict=True)],
    )
    trip = g.const(np.asarray(length, np.int64))
    result = g.op("Loop", [trip, g.const(np.asarray(True)), *init], outputs=n_carry + len(y_avals), body=graph)
    result = result if isinstance(result, list) else [result]
    if p["reverse"]:  # the stacked outputs in the scan's order
        result[n_carry:] = [g.op("Slice", [y, g.ints([-1]), g.ints([-(2**62)]), g.ints([0]), g.ints([-1])])
                            for y in result[n_carry:]]  # fmt: skip
    return result


@rule("cond")
def _cond(g, eqn, ins):
    index, *args = ins
    branches = eqn.params["branches"]
    if len(branches) != 2:
        raise Unsupported(f"a cond with {len(branches)} branches has no ONNX rule yet (two: If)")
    avals = [v.aval for v in eqn.outvars]
    graphs = []
    for closed in branches:
        sub = Graph(g)
        outs = [sub.op("Identity", [o]) for o in _call(sub, closed, [], args)]
        graphs.append(
            sub.make(g.fresh("branch"), [], [value_info(o, a.dtype, a.shape) for o, a in zip(outs, avals, strict=True)])
        )  # noqa: E501
    pick = g.op("Cast", [index], to=BOOL)  # branch 1 when the index is 1
    result = g.op("If", [pick], outputs=len(avals), then_branch=graphs[1], else_branch=graphs[0])
    return result if isinstance(result, list) else [result]
