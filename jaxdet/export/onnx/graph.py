"""An ONNX graph under construction: nodes, constants and typed values, with nested graphs
(a Loop's body) that read the enclosing graph's values by name, as ONNX allows."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
from onnx import helper, numpy_helper

OPSET = 21  # onnxruntime 1.31 runs opsets up to 23; 21 has every operator used here


def elem_type(dtype) -> int:
    """The ONNX element type of a NumPy / JAX dtype."""
    return helper.np_dtype_to_tensor_dtype(np.dtype(dtype))


def value_info(name: str, dtype, shape: tuple[int, ...] | None) -> onnx.ValueInfoProto:
    """A typed value; shape None leaves the rank open (a Loop's counter and condition, which
    runtimes infer as [] or [1])."""
    return helper.make_tensor_value_info(name, elem_type(dtype), None if shape is None else list(shape))


class Graph:
    """One ONNX graph. `op` adds a node and returns its output names; `const` a constant
    (an initializer of the outermost graph, so a body graph reuses it); `fresh` a new
    unique value name."""

    def __init__(self, parent: Graph | None = None):
        self.parent = parent
        self.nodes: list[onnx.NodeProto] = []
        self._root = parent._root if parent else self
        if parent is None:
            self._names = itertools.count()
            self.initializers: list[onnx.TensorProto] = []
            self._consts: dict[tuple, str] = {}

    def fresh(self, hint: str = "v") -> str:
        return f"{hint}_{next(self._root._names)}"

    def op(self, op_type: str, inputs: list[str], outputs: int = 1, **attrs) -> str | list[str]:
        """Adds `op_type(inputs, **attrs)`; returns its output name (a list if `outputs` > 1)."""
        names = [self.fresh(op_type.lower()) for _ in range(outputs)]
        attrs = {k: v for k, v in attrs.items() if v is not None}
        self.nodes.append(helper.make_node(op_type, inputs, names, **attrs))
        return names if outputs > 1 else names[0]

    def const(self, value, dtype=None) -> str:
        """A constant tensor (deduplicated by value, so repeated literals are one initializer)."""
        array = np.asarray(value, dtype)
        root = self._root
        key = (array.dtype.str, array.shape, array.tobytes()) if array.size <= 64 else None
        if key is not None and key in root._consts:
            return root._consts[key]
        name = self.fresh("c")
        root.initializers.append(numpy_helper.from_array(array, name))
        if key is not None:
            root._consts[key] = name
        return name

    def ints(self, values) -> str:
        """An int64 constant vector (shapes, axes, starts: what ONNX takes as inputs)."""
        return self.const(np.asarray(list(values), np.int64).reshape(-1))

    def make(self, name: str, inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto]):
        initializers = self.initializers if self.parent is None else []
        return helper.make_graph(self.nodes, name, inputs, outputs, initializer=initializers)


def where(g: Graph, cond: str, a: str, b: str, dtype) -> str:
    """`cond ? a : b` elementwise (broadcasting); onnxruntime's Where has no bool kernel,
    so booleans select by logic."""
    if np.dtype(dtype) == np.bool_:
        return g.op("Or", [g.op("And", [cond, a]), g.op("And", [g.op("Not", [cond]), b])])
    return g.op("Where", [cond, a, b])
