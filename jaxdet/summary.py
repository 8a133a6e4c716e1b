"""Run outputs: `metrics.jsonl` (one JSON object per line) and TensorBoard events
(written with tensorboardX: no TensorFlow; `pip install tensorboard` to view them).

Only process 0 writes; other processes get a writer that does nothing, so callers
never branch on the process index.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import numpy as np


class MetricWriter:
    """Appends `{"step", "split", ...}` rows to workdir/metrics.jsonl and TensorBoard scalars."""

    def __init__(self, workdir: str, enabled: bool | None = None):
        self.enabled = jax.process_index() == 0 if enabled is None else enabled
        self._tb = None
        self.path = os.path.join(workdir, "metrics.jsonl")
        if self.enabled:
            from tensorboardX import SummaryWriter

            os.makedirs(workdir, exist_ok=True)
            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"), flush_secs=30)

    def write(self, step: int, split: str, values: dict[str, Any]) -> None:
        if not self.enabled:
            return
        row = {"step": int(step), "split": split}
        row.update({k: float(np.asarray(v)) for k, v in values.items()})
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
        for k, v in row.items():
            if k not in ("step", "split"):
                self._tb.add_scalar(f"{split}/{k}", v, int(step))

    def write_images(self, step: int, name: str, images: np.ndarray) -> None:
        """uint8 images [N, H, W, 3] to TensorBoard."""
        if not self.enabled:
            return
        self._tb.add_images(name, np.asarray(images, np.uint8), int(step), dataformats="NHWC")
        self._tb.flush()

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()
