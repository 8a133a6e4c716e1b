"""A JAX function as an ONNX model, from its jaxpr: every equation becomes ONNX nodes by the
rule registered for its primitive (elementwise.py, shape_ops.py, indexing.py, control.py);
calls (jit, custom_jvp/vjp) are inlined, equations whose results nothing reads are left
out, and a primitive without a rule fails naming it and where it came from."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import numpy as np
import onnx
from jax.extend import core
from onnx import helper

from jaxdet.export.onnx.graph import OPSET, Graph, value_info

Rule = Callable[[Graph, core.JaxprEqn, list[str]], list[str]]
RULES: dict[str, Rule] = {}
NAMED: dict[str, Rule] = {}  # jit-named functions converted whole (e.g. greedy NMS), not inlined
_INLINED = {"jit": "jaxpr", "pjit": "jaxpr", "closed_call": "call_jaxpr", "core_call": "call_jaxpr",
            "custom_jvp_call": "call_jaxpr", "custom_vjp_call": "call_jaxpr", "remat": "jaxpr",
            "checkpoint": "jaxpr"}  # fmt: skip


class Unsupported(ValueError):
    """A primitive (or a form of one) with no ONNX rule; the message names it."""


def rule(*names: str) -> Callable[[Rule], Rule]:
    def register(fn: Rule) -> Rule:
        for name in names:
            RULES[name] = fn
        return fn

    return register


def named_rule(name: str) -> Callable[[Rule], Rule]:
    """Registers the ONNX form of the jitted function called `name` (its jit equation's name)."""

    def register(fn: Rule) -> Rule:
        NAMED[name] = fn
        return fn

    return register


def _live(jaxpr: core.Jaxpr) -> list[core.JaxprEqn]:
    """The equations whose outputs reach the jaxpr's outputs (dead code dropped: e.g. the
    unused random key of an inference forward pass)."""
    needed = {v for v in jaxpr.outvars if isinstance(v, core.Var)}
    keep = []
    for eqn in reversed(jaxpr.eqns):
        if any(v in needed for v in eqn.outvars) or eqn.effects:
            keep.append(eqn)
            needed.update(v for v in eqn.invars if isinstance(v, core.Var))
    return keep[::-1]


def emit(g: Graph, jaxpr: core.Jaxpr, consts: Sequence, inputs: Sequence[str]) -> list[str]:
    """Adds `jaxpr` to `g` with its constvars bound to `consts` (arrays or value names) and
    its invars to `inputs`; returns the names of its outputs."""
    env: dict[core.Var, str] = {}

    def read(v) -> str:
        if isinstance(v, core.Literal):
            return g.const(np.asarray(v.val, v.aval.dtype))
        return env[v]

    for v, c in zip(jaxpr.constvars, consts, strict=True):
        env[v] = c if isinstance(c, str) else g.const(np.asarray(c))
    for v, name in zip(jaxpr.invars, inputs, strict=True):
        env[v] = name
    for eqn in _live(jaxpr):
        ins = [read(v) for v in eqn.invars]
        name = eqn.primitive.name
        if name in ("jit", "pjit") and eqn.params.get("name") in NAMED:  # a call with an ONNX form of its own
            outs = NAMED[eqn.params["name"]](g, eqn, ins)
        elif name in _INLINED:
            sub = eqn.params[_INLINED[name]]
            closed = sub if hasattr(sub, "consts") else core.ClosedJaxpr(sub, ())
            outs = emit(g, closed.jaxpr, closed.consts, ins)
        elif name in RULES:
            outs = RULES[name](g, eqn, ins)
        else:
            raise Unsupported(f"no ONNX form for the primitive {name!r} ({_where(eqn)})")
        for v, out in zip(eqn.outvars, outs, strict=True):
            env[v] = out
    return [read(v) for v in jaxpr.outvars]


def _where(eqn: core.JaxprEqn) -> str:
    frames = getattr(eqn.source_info, "traceback", None)
    text = str(jax._src.source_info_util.summarize(eqn.source_info)) if frames else "source unknown"
    return f"{text}; inputs {[str(v.aval) for v in eqn.invars]}"


def to_onnx(fn: Callable, example: jax.ShapeDtypeStruct, input_name: str = "images",
            output_names: Sequence[str] | None = None, doc: str = "") -> onnx.ModelProto:  # fmt: skip
    """The ONNX model of `fn(x)` for inputs shaped as `example`; `fn` returns a flat dict
    (its keys name the outputs, in sorted order) or arrays (named by `output_names`, else
    output_<i> in flattening order)."""
    closed = jax.make_jaxpr(fn)(example)
    out_tree = jax.eval_shape(fn, example)
    n = len(jax.tree_util.tree_leaves(out_tree))
    if isinstance(out_tree, dict) and len(out_tree) == n:
        names = sorted(out_tree)
    else:
        names = list(output_names or [f"output_{i}" for i in range(n)])
    g = Graph()
    outs = emit(g, closed.jaxpr, closed.consts, [input_name])
    outputs = []
    for name, out, aval in zip(names, outs, closed.out_avals, strict=True):
        g.nodes.append(helper.make_node("Identity", [out], [name]))
        outputs.append(value_info(name, aval.dtype, aval.shape))
    graph = g.make("jaxdet", [value_info(input_name, example.dtype, example.shape)], outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], doc_string=doc,
                              producer_name="jaxdet")  # fmt: skip
    model.ir_version = 10  # what onnxruntime 1.31 reads
    onnx.checker.check_model(model)
    return model
