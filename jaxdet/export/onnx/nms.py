"""Greedy NMS (`jaxdet.ops.nms.jaxdet_greedy_nms`) as ONNX's NonMaxSuppression: onnxruntime
runs its own greedy loop natively, where the converted jaxpr (a blocked fixed point over
IoU matrices) runs unfused, op by op, ~10x slower (BENCHMARKS.md, export).

The call takes boxes already sorted by descending score and a validity mask, and keeps
box j iff it is valid and no earlier kept box overlaps it by IoU > threshold. ONNX's NMS
is handed scores that encode that order (N - position; invalid boxes 0, under its score
threshold of 0.5, so they neither survive nor suppress), one class, and room for every
box; its selected indices become the bool [.., N] keep mask."""

from __future__ import annotations

import numpy as np

from jaxdet.export.onnx.convert import named_rule
from jaxdet.export.onnx.graph import elem_type, where
from jaxdet.export.onnx.shape_ops import reshape

INT64 = 7


@named_rule("jaxdet_greedy_nms")
def _greedy_nms(g, eqn, ins):
    boxes, valid, threshold = ins
    shape = eqn.invars[0].aval.shape  # [..., N, 4]
    *lead, n, _ = shape
    m = int(np.prod(lead)) if lead else 1
    boxes = reshape(g, boxes, [m, n, 4])
    rank = g.const(np.arange(n, 0, -1, dtype=np.float32).reshape(1, 1, n))
    scores = where(g, reshape(g, valid, [m, 1, n]), rank, g.const(np.zeros((), np.float32)), np.float32)
    threshold = reshape(g, g.op("Cast", [threshold], to=elem_type(np.float32)), [1])
    floor = g.const(np.asarray([0.5], np.float32))
    selected = g.op("NonMaxSuppression", [boxes, scores, g.ints([n]), threshold, floor], center_point_box=0)
    # selected [K, 3] = (batch, class, box): mark (batch, box) kept.
    at = g.op("Gather", [selected, g.ints([0, 2])], axis=1)
    count = g.op("Gather", [g.op("Shape", [selected]), g.ints([0])], axis=0)
    ones = g.op("Expand", [g.const(np.ones((1,), np.bool_)), count])
    keep = g.op("ScatterND", [g.const(np.zeros((m, n), np.bool_)), at, ones])
    return [reshape(g, keep, [*lead, n])]
