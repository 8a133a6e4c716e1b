"""Checkpoints with orbax: save every N steps, keep the last K, resume from the workdir.

Orbax writes each step to a temporary directory and renames it when complete, so a
run killed mid-save leaves only complete checkpoints behind. Every process calls
`save` (orbax coordinates the hosts); only complete steps are listed for restore.
"""

from __future__ import annotations

import json
import os
import shutil
from typing import Any

import jax
import orbax.checkpoint as ocp

from jaxdet import files
from jaxdet.errors import ConfigError
from jaxdet.training import checkpoint_faults as faults


class Checkpoints:
    """A thin wrapper over `ocp.CheckpointManager` for one pytree (the TrainState).

    With `clean_partial` (the training run, which owns the workdir), partial checkpoints
    left by an interrupted save (kill -9, disk full) are removed at start-up.
    """

    def __init__(self, directory: str, keep: int, save_every: int, clean_partial: bool = False, log=print):
        self.directory = os.path.abspath(directory)
        self.save_every, self.keep = save_every, keep
        if clean_partial and jax.process_index() == 0 and os.path.isdir(self.directory):
            for name in sorted(os.listdir(self.directory)):
                if _PARTIAL in name:
                    shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)
                    log(f"removed {os.path.join(self.directory, name)}: a partial checkpoint an interrupted save left")
        self._open()
        self._last_saved: int | None = None
        self._bytes = 0  # the state's size, for the disk-full message

    def _open(self) -> None:
        options = ocp.CheckpointManagerOptions(max_to_keep=self.keep, create=True)
        # The handler is named so that any step's metadata can be read before restoring it.
        self._manager = ocp.CheckpointManager(
            self.directory, options=options, item_handlers=ocp.StandardCheckpointHandler()
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._manager.all_steps())

    def save(self, step: int, state: Any, force: bool = False) -> bool:
        """Saves `state` at `step` if it is a multiple of `save_every` (or `force`); async, see `wait`.

        Raises DiskFull (one message: the path, the free space and what a checkpoint needs)
        when the file system is full; the checkpoints already written stay complete."""
        # Our own interval test: orbax would also save the first step it is shown.
        if not force and step % self.save_every:
            return False
        if step == self._last_saved or step in self._manager.all_steps():
            return False  # saved already (orbax would raise StepAlreadyExistsError)
        pending = self._last_saved
        self._last_saved = step
        self._bytes = sum(x.nbytes for x in jax.tree_util.tree_leaves(state) if hasattr(x, "nbytes"))
        try:
            return self._manager.save(step, args=ocp.args.StandardSave(state), force=True)
        except Exception as e:  # orbax raises the failure of the previous (async) save here too
            raise self._disk_full(e, pending if pending is not None else step) or e

    def restore(self, step: int, target: Any) -> Any:
        """Restores `step` into the structure, shapes and shardings of `target`.

        Raises ConfigError naming the checkpoint when it holds another model (its recorded
        tree differs from `target`'s), and faults.CorruptCheckpoint when its files cannot be read.
        """
        abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
        try:
            metadata = self._manager.item_metadata(step)
            layout = faults.layout(getattr(metadata, "tree", metadata))
        except Exception as e:  # any failure to read the recorded tree: the files are bad
            raise faults.CorruptCheckpoint(step, f"its metadata cannot be read: {faults.short(faults.root(e))}") from e
        want = faults.layout(abstract)
        if layout != want:
            differ = [k for k in sorted(set(layout) | set(want)) if layout.get(k) != want.get(k)]
            shown = "; ".join(f"{k}: checkpoint {layout.get(k, 'absent')}, model {want.get(k, 'absent')}"
                              for k in differ[:3])  # fmt: skip
            raise ConfigError(
                f"the checkpoint at step {step} in {self.directory} does not match this model (different detector, "
                f"backbone or number of classes?): {len(differ)} entries differ, e.g. {shown}. Use a new --workdir, "
                "or the config that wrote it."
            )
        try:
            return self._manager.restore(step, args=ocp.args.StandardRestore(abstract))
        except Exception as e:
            text = faults.chain(e)
            if any(word in text for word in faults.CORRUPT) and "RESOURCE_EXHAUSTED" not in text:
                raise faults.CorruptCheckpoint(step, faults.short(faults.root(e))) from e
            raise

    def restore_newest(self, target: Any, steps: list[int], log=print, move_aside: bool = False):
        """Restores the newest of `steps` that reads back; returns (state, step), or (None,
        None) when none does. Unreadable ones are logged with the reason and, with
        `move_aside` (the training run), renamed to <step>.corrupt: never deleted."""
        for step in sorted(steps, reverse=True):
            try:
                return self.restore(step, target), step
            except faults.CorruptCheckpoint as e:
                where, note = os.path.join(self.directory, str(step)), ""
                if move_aside:
                    aside = _free_name(where + ".corrupt")
                    if jax.process_index() == 0:
                        os.rename(where, aside)
                    _sync("jaxdet-checkpoint-moved")
                    self._manager.close()  # (it still lists the step)
                    self._open()
                    note = f"; moved aside to {aside}"
                log(f"checkpoint {step} in {self.directory} is unreadable ({e.reason}){note}; trying the one before")
        return None, None

    def wait(self) -> None:
        """Blocks until pending asynchronous saves are on disk (DiskFull as `save`)."""
        try:
            self._manager.wait_until_finished()
        except Exception as e:
            raise self._disk_full(e, self._last_saved) or e

    def _disk_full(self, e: BaseException, step: int | None) -> faults.DiskFull | None:
        on_disk = sorted(int(n) for n in os.listdir(self.directory) if n.isdigit())  # (orbax's list may be ahead)
        return faults.disk_full(e, self.directory, step, on_disk, self._bytes)

    def close(self) -> None:
        try:
            self._manager.close()
        except Exception:  # a failed save is reported by `wait` / `save`; closing must not mask it
            pass


_PARTIAL = ".orbax-checkpoint-tmp"


def _free_name(path: str) -> str:
    candidate, k = path, 1
    while os.path.exists(candidate):
        k += 1
        candidate = f"{path}-{k}"
    return candidate


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


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


def candidates(ckpts: Checkpoints, which: str, step: int) -> list[int]:
    """The steps `restore_newest` may try for `which`: for "latest" every step up to the
    latest (an unreadable newest one falls back to the one before); otherwise `step` only."""
    return [s for s in ckpts.all_steps() if s <= step] if which == "latest" else [step]


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

    def update(self, step: int, value: float, state: Any) -> bool:
        """Saves `state` if `value` beats the best so far; returns whether it did."""
        best = self.record["value"]
        improved = best is None or (value > best if self.higher else value < best)
        if improved:
            self.checkpoints.save(step, state, force=True)
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
