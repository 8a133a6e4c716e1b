"""A run's detector, post-processing included, as one ONNX model (model.onnx, the weights
inside) with metadata.json beside it and the same metadata in the model's properties.

Inputs and outputs are the StableHLO artifact's: float32 pixels 0..255 [B, S, S, 3] in,
boxes [B, D, 4] (xyxy canvas pixels), scores, classes and valid [B, D] out; B is fixed.
onnxruntime is the reference runtime (tests/test_export_onnx.py)."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
from onnx import helper

from jaxdet.errors import ConfigError
from jaxdet.export.common import check_out, prepare, write_metadata
from jaxdet.export.onnx.convert import Unsupported, to_onnx

MODEL = "model.onnx"


def export(
    workdir: str, which: str = "latest", batch: int | str = 1, out: str | None = None, overwrite: bool = False
) -> str:
    """Writes the ONNX artifact of `workdir`'s checkpoint `which` to `out` (default
    <workdir>/export/onnx-step<N>; one that holds an artifact is refused unless `overwrite`);
    returns `out`."""
    if batch == "dynamic" or not isinstance(batch, int) or batch < 1:
        raise ConfigError(f"--batch={batch!r}: ONNX artifacts have a fixed batch, a number of images >= 1")
    prepared = prepare(workdir, which)
    out = out or os.path.join(workdir, "export", f"onnx-step{prepared.step}")
    check_out(out, overwrite)
    size = prepared.size
    try:
        model = to_onnx(prepared.run, jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32),
                        doc=f"jaxdet {prepared.config.model.name}, step {prepared.step}")  # fmt: skip
    except Unsupported as e:
        raise ConfigError(f"{prepared.config.model.name} does not export to ONNX: {e}") from None
    os.makedirs(out, exist_ok=True)
    meta = write_metadata(out, prepared, "onnx", batch, workdir, opset=model.opset_import[0].version)
    helper.set_model_props(model, {"jaxdet": json.dumps(meta)})
    with open(os.path.join(out, MODEL + ".tmp"), "wb") as f:
        f.write(model.SerializeToString())
    os.replace(os.path.join(out, MODEL + ".tmp"), os.path.join(out, MODEL))
    return out
