"""`--format=safetensors`: a run's weights alone, under jaxdet's names with its classes in
the file's metadata, beside metadata.json. Any run fine-tunes from it with
`--config.model.init_from=DIR/model.safetensors` (no torch, no workdir needed); other
tools read it with the `safetensors` package."""

from __future__ import annotations

import os

from jaxdet.export.common import check_out, prepare, write_metadata
from jaxdet.training.init_from import save_safetensors

WEIGHTS = "model.safetensors"


def export(workdir: str, which: str = "latest", out: str | None = None, overwrite: bool = False) -> str:
    """Writes `workdir`'s checkpoint `which` to `out`/model.safetensors (default
    <workdir>/export/safetensors-step<N>; one that holds an artifact is refused unless
    `overwrite`); returns `out`."""
    prepared = prepare(workdir, which)
    out = out or os.path.join(workdir, "export", f"safetensors-step{prepared.step}")
    check_out(out, overwrite)
    os.makedirs(out, exist_ok=True)
    save_safetensors(prepared.variables, os.path.join(out, WEIGHTS + ".tmp"), prepared.classes.names)
    os.replace(os.path.join(out, WEIGHTS + ".tmp"), os.path.join(out, WEIGHTS))
    write_metadata(out, prepared, "safetensors", None, workdir)
    return out
