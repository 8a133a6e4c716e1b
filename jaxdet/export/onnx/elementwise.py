"""Elementwise primitives: arithmetic, comparisons, logic, casts and selection. jaxprs give
both operands of a binary primitive one dtype (a scalar literal broadcasts, as ONNX does)."""

from __future__ import annotations

import numpy as np

from jaxdet.export.onnx.convert import Unsupported, rule
from jaxdet.export.onnx.graph import elem_type, where

# (div: lax.div rounds integers toward zero, as ONNX's integer Div does.)
_SAME = {"add": "Add", "sub": "Sub", "mul": "Mul", "div": "Div", "max": "Max", "min": "Min", "neg": "Neg",
         "abs": "Abs", "sign": "Sign", "exp": "Exp", "log": "Log", "sqrt": "Sqrt", "logistic": "Sigmoid",
         "floor": "Floor", "ceil": "Ceil", "tanh": "Tanh", "erf": "Erf", "pow": "Pow", "round": "Round",
         "eq": "Equal", "lt": "Less", "le": "LessOrEqual", "gt": "Greater", "ge": "GreaterOrEqual",
         "stop_gradient": "Identity", "copy": "Identity", "copy_p": "Identity",
         "optimization_barrier": "Identity", "sin": "Sin", "cos": "Cos", "tan": "Tan", "atan": "Atan",
         "asin": "Asin", "acos": "Acos", "sinh": "Sinh", "cosh": "Cosh"}  # fmt: skip
_LOGIC = {"and": ("And", "BitwiseAnd"), "or": ("Or", "BitwiseOr"), "xor": ("Xor", "BitwiseXor")}


for _name, _op in _SAME.items():

    @rule(_name)
    def _same(g, eqn, ins, op=_op):
        if op == "Round" and eqn.params.get("rounding_method", 1) != 1:  # ONNX Round: half to even
            raise Unsupported("round away from zero has no ONNX form (ONNX Round rounds half to even)")
        if op == "Identity" and len(ins) > 1:
            return [g.op("Identity", [x]) for x in ins]
        return [g.op(op, ins)]


@rule("rem")
def _rem(g, eqn, ins):
    return [g.op("Mod", ins, fmod=1)]  # the dividend's sign, as C's fmod and lax.rem


@rule("ne")
def _ne(g, eqn, ins):
    return [g.op("Not", [g.op("Equal", ins)])]


@rule("not")
def _not(g, eqn, ins):
    return [g.op("Not" if eqn.invars[0].aval.dtype == np.bool_ else "BitwiseNot", ins)]


for _name, (_bool_op, _int_op) in _LOGIC.items():

    @rule(_name)
    def _logic(g, eqn, ins, ops=(_bool_op, _int_op)):
        return [g.op(ops[0] if eqn.invars[0].aval.dtype == np.bool_ else ops[1], ins)]


@rule("rsqrt")
def _rsqrt(g, eqn, ins):
    return [g.op("Reciprocal", [g.op("Sqrt", ins)])]


@rule("square")
def _square(g, eqn, ins):
    return [g.op("Mul", [ins[0], ins[0]])]


@rule("integer_pow")
def _integer_pow(g, eqn, ins):
    y = eqn.params["y"]
    if y == 2:
        return [g.op("Mul", [ins[0], ins[0]])]
    return [g.op("Pow", [ins[0], g.const(np.asarray(y, eqn.invars[0].aval.dtype))])]


@rule("exp2")
def _exp2(g, eqn, ins):
    return [g.op("Pow", [g.const(np.asarray(2, eqn.invars[0].aval.dtype)), ins[0]])]


@rule("log1p")
def _log1p(g, eqn, ins):
    return [g.op("Log", [g.op("Add", [ins[0], g.const(np.asarray(1, eqn.invars[0].aval.dtype))])])]


@rule("expm1")
def _expm1(g, eqn, ins):
    return [g.op("Sub", [g.op("Exp", ins), g.const(np.asarray(1, eqn.invars[0].aval.dtype))])]


@rule("is_finite")
def _is_finite(g, eqn, ins):
    return [g.op("Not", [g.op("Or", [g.op("IsInf", ins), g.op("IsNaN", ins)])])]


@rule("convert_element_type")
def _convert(g, eqn, ins):
    return [g.op("Cast", ins, to=elem_type(eqn.params["new_dtype"]))]


@rule("select_n")
def _select_n(g, eqn, ins):
    which, *cases = ins
    dtype = eqn.outvars[0].aval.dtype
    if eqn.invars[0].aval.dtype == np.bool_:
        return [where(g, which, cases[1], cases[0], dtype)]
    out = cases[0]
    for i, case in enumerate(cases[1:], 1):
        out = where(g, g.op("Equal", [which, g.const(np.asarray(i, eqn.invars[0].aval.dtype))]), case, out, dtype)
    return [out]


@rule("clamp")
def _clamp(g, eqn, ins):
    lo, x, hi = ins
    return [g.op("Min", [g.op("Max", [x, lo]), hi])]
