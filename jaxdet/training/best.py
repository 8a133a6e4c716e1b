"""The best checkpoint (by an evaluation metric) and early stopping: training's own hook."""

from __future__ import annotations

import json
import os
from typing import Any

import jax

from jaxdet import files
from jaxdet.checkpoints import Checkpoints


def higher_is_better(metric: str) -> bool:
    """AP/AR-like metrics improve upwards; validation losses (loss_*) downwards."""
    return not metric.startswith("loss")


class BestCheckpoint:
    """Keeps the checkpoint with the best `metric` in workdir/checkpoints_best (one step),
    besides the latest ones, and counts evaluations since the best (early stopping).

    The record (workdir/best.json: metric, value, step, evals_since_best, and evaluated_step,
    the last step whose evaluation completed) survives a resume.
    Every process calls `update` with the same value (see `loop`), since all take part in saves.
    """

    def __init__(self, workdir: str, metric: str):
        self.metric, self.higher = metric, higher_is_better(metric)
        self.path = os.path.join(workdir, "best.json")
        self.checkpoints = Checkpoints(os.path.join(workdir, "checkpoints_best"), keep=1, save_every=1)
        self.record = {"metric": metric, "value": None, "step": None, "evals_since_best": 0, "evaluated_step": None}
        if os.path.exists(self.path):
            with open(self.path) as f:
                saved = json.load(f)
            if saved.get("metric") == metric:
                self.record = saved

    def update(self, step: int, value: float, items: dict[str, Any]) -> bool:
        """Saves `items` (as `Checkpoints.save`) if `value` beats the best so far; returns whether it did."""
        best = self.record["value"]
        improved = best is None or (value > best if self.higher else value < best)
        if improved:
            self.checkpoints.save(step, items, force=True)
            self.record.update(value=float(value), step=int(step), evals_since_best=0)
        else:
            self.record["evals_since_best"] += 1
        self.record["evaluated_step"] = int(step)
        if jax.process_index() == 0:
            files.write_atomic(self.path, json.dumps(self.record))
        return improved

    def owes(self, step: int, eval_every: int, steps: int) -> bool:
        """True when `step` (a resumed run's first) is an evaluation step whose evaluation never
        completed (stopped during it): the run does it before training on."""
        due = step > 0 and (step % eval_every == 0 or step >= steps)
        return due and self.record.get("evaluated_step") != step

    @property
    def evals_since_best(self) -> int:
        return int(self.record["evals_since_best"])

    def wait(self) -> None:
        self.checkpoints.wait()

    def close(self) -> None:
        self.checkpoints.close()
