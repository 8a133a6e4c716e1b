"""A run's detector, decoding and post-processing included, as one serialized StableHLO
program (`jax.export`) with its weights inside, and metadata.json beside it.

The program maps float32 pixels 0..255 [B, S, S, 3] (the canvas `jaxdet.data.canvas`
makes) to the fixed-size detections `predict` gives: boxes [B, D, 4] xyxy canvas pixels,
scores [B, D], classes [B, D] (labels 0..C-1), valid [B, D]. B is fixed, or symbolic
("dynamic") where every operation of the detector allows it.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp

from jaxdet.errors import ConfigError
from jaxdet.export.common import METADATA, check_out, prepare, write_metadata

PROGRAM = "model.stablehlo"
__all__ = ["METADATA", "PROGRAM", "export"]


def export(
    workdir: str, which: str = "latest", batch: int | str = 1, out: str | None = None, overwrite: bool = False
) -> str:
    """Writes the artifact of `workdir`'s checkpoint `which` to `out` (default
    <workdir>/export/stablehlo-step<N>; one that holds an artifact is refused unless
    `overwrite`); `batch` an int or "dynamic". Returns `out`."""
    prepared = prepare(workdir, which)
    out = out or os.path.join(workdir, "export", f"stablehlo-step{prepared.step}")
    check_out(out, overwrite)
    size, config = prepared.size, prepared.config
    if batch == "dynamic":
        (b,) = jax.export.symbolic_shape("b")
    elif isinstance(batch, int) and batch >= 1:
        b = batch
    else:
        raise ConfigError(f"--batch={batch!r}: a number of images >= 1, or 'dynamic'")
    try:
        exported = jax.export.export(jax.jit(prepared.run))(jax.ShapeDtypeStruct((b, size, size, 3), jnp.float32))
    except Exception as e:  # jax names the operation that has no symbolic form
        if batch != "dynamic":
            raise
        raise ConfigError(
            f"{config.model.name} does not export with a symbolic batch ({type(e).__name__}: {str(e)[:300]}); "
            "export a fixed batch (--batch=N)"
        ) from None
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, PROGRAM + ".tmp"), "wb") as f:
        f.write(exported.serialize())
    os.replace(os.path.join(out, PROGRAM + ".tmp"), os.path.join(out, PROGRAM))
    write_metadata(out, prepared, "stablehlo", batch, workdir)
    return out
