"""JAX functions as ONNX models, from their jaxprs (convert.py), with a rule per primitive."""

from jaxdet.export.onnx import compute, control, elementwise, indexing, nms, shape_ops  # noqa: F401  (the rules)
from jaxdet.export.onnx.convert import Unsupported, to_onnx

__all__ = ["Unsupported", "to_onnx"]
