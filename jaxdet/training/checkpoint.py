"""Checkpoints with orbax: save every N steps, keep the last K, resume from the workdir.

Orbax writes each step to a temporary directory and renames it when complete, so a
run killed mid-save leaves only complete checkpoints behind. Every process calls
`save` (orbax coordinates the hosts); only complete steps are listed for restore.
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import orbax.checkpoint as ocp

from jaxdet.errors import ConfigError


class Checkpoints:
    """A thin wrapper over `ocp.CheckpointManager` for one pytree (the TrainState)."""

    def __init__(self, directory: str, keep: int, save_every: int):
        self.directory = os.path.abspath(directory)
        self.save_every = save_every
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
        self._manager = ocp.CheckpointManager(self.directory, options=options)
        self._last_saved: int | None = None

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, state: Any, force: bool = False) -> bool:
        """Saves `state` at `step` if it is a multiple of `save_every` (or `force`); async, see `wait`."""
        # Our own interval test: orbax would also save the first step it is shown.
        if not force and step % self.save_every:
            return False
        if step == self._last_saved or step in self._manager.all_steps():
            return False  # saved already (orbax would raise StepAlreadyExistsError)
        self._last_saved = step
        return self._manager.save(step, args=ocp.args.StandardSave(state), force=True)

    def restore(self, step: int, target: Any) -> Any:
        """Restores `step` into the structure, shapes and shardings of `target`.

        Raises ValueError naming the checkpoint when its structure does not match (for
        example a different model), instead of orbax's deep error.
        """
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
        try:
            return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
        except (ValueError, KeyError, TypeError) as e:
            raise ConfigError(
                f"the checkpoint at step {step} in {self.directory} does not match this model "
                f"(different detector, backbone or number of classes?). Use a new --workdir, or the "
                f"config that wrote it. Orbax said: {str(e)[:500]}"
            ) from e

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.close()


def find(workdir: str, which: str = "latest") -> tuple[Checkpoints, int]:
    """The checkpoints a finished or running run wrote, for evaluation and prediction:
    `which` is "latest", "best" (workdir/checkpoints_best) or a step number.

    Returns the opened Checkpoints (close it after restoring) and the step.
    """
    if not (which in ("latest", "best") or which.isdigit()):
        raise ConfigError(f"--checkpoint={which!r}: use latest, best or a step number")
    directory = os.path.join(workdir, "checkpoints_best" if which == "best" else "checkpoints")
    if not os.path.isdir(directory):
        raise ConfigError(f"no checkpoint directory {directory} (train first, or check --workdir)")
    ckpts = Checkpoints(directory, keep=1000, save_every=1)
    step = ckpts.latest_step() if which in ("latest", "best") else int(which)
    if step is None:
        ckpts.close()
        raise ConfigError(f"no checkpoint in {directory} (train first, or check --workdir)")
    if step not in ckpts.all_steps():
        steps = ckpts.all_steps()
        ckpts.close()
        raise ConfigError(f"no checkpoint at step {step} in {directory}; have {steps}")
    return ckpts, step


def higher_is_better(metric: str) -> bool:
    """AP/AR-like metrics improve upwards; validation losses (loss_*) downwards."""
    return not metric.startswith("loss")


class BestCheckpoint:
    """Keeps the checkpoint with the best `metric` in workdir/checkpoints_best (one step),
    besides the latest ones, and counts evaluations since the best (early stopping).

    The record (workdir/best.json: metric, value, step, evals_since_best) survives a resume.
    Every process calls `update` with the same value (see `loop`), since all take part in saves.
    """

    def __init__(self, workdir: str, metric: str):
        self.metric, self.higher = metric, higher_is_better(metric)
        self.path = os.path.join(workdir, "best.json")
        self.checkpoints = Checkpoints(os.path.join(workdir, "checkpoints_best"), keep=1, save_every=1)
        self.record = {"metric": metric, "value": None, "step": None, "evals_since_best": 0}
        if os.path.exists(self.path):
            with open(self.path) as f:
                saved = json.load(f)
            if saved.get("metric") == metric:
                self.record = saved

    def update(self, step: int, value: float, state: Any) -> bool:
        """Saves `state` if `value` beats the best so far; returns whether it did."""
        best = self.record["value"]
        improved = best is None or (value > best if self.higher else value < best)
        if improved:
            self.checkpoints.save(step, state, force=True)
            self.record.update(value=float(value), step=int(step), evals_since_best=0)
        else:
            self.record["evals_since_best"] += 1
        if jax.process_index() == 0:
            tmp = self.path + ".tmp"
            with open(tmp, "w") as f:
                json.dump(self.record, f)
            os.replace(tmp, self.path)
        return improved

    @property
    def evals_since_best(self) -> int:
        return int(self.record["evals_since_best"])

    def wait(self) -> None:
        self.checkpoints.wait()

    def close(self) -> None:
        self.checkpoints.close()
