"""The training loop: resume, steps, progress lines, evaluation, best checkpoint and early
stop, checkpoints, preemption.

`train_and_evaluate(config, workdir)` is the whole run; re-running it with the same
workdir resumes from the latest checkpoint (the data stream resumes at the same step).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from collections.abc import Callable, Sequence
from typing import Protocol

import jax
import ml_collections
import numpy as np

from jaxdet import config_fields, configs, kernels
from jaxdet.checkpoints import Checkpoints, DiskFull
from jaxdet.console import log as _log
from jaxdet.errors import ConfigError
from jaxdet.training import ema, preemption, progress
from jaxdet.training import workdir as workdir_lib
from jaxdet.training.best import BestCheckpoint
from jaxdet.training.run import Run
from jaxdet.training.step import TrainState


class Evaluation(Protocol):
    """What the loop calls to evaluate (evaluation.evaluator.Evaluation; jaxdet/experiment.py
    builds one for the run): metrics at a step (None when `interrupt()` abandoned it),
    prediction pictures, and the lines it logs."""

    def evaluate(self, variables: dict, step: int, interrupt: Callable[[], bool] = ...) -> dict | None: ...

    def draw_predictions(self, variables: dict, step: int) -> list[str]: ...

    def log_eval(self, step: int, metrics: dict, seconds: float) -> None: ...

    def log_analysis(self) -> None: ...


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    devices: Sequence[jax.Device] | None,
    evaluation: Callable[[Run], Evaluation],
) -> dict[str, float]:
    """Trains `config` in `workdir` (resuming if it holds checkpoints), evaluating with
    `evaluation(run)` every train.eval_every steps; returns the final eval metrics.

    The run owns the workdir while it trains (a second run on it is refused, see
    `training.workdir`). Raises `preemption.Preempted` after SIGTERM/SIGINT (a checkpoint at
    that step is on disk) and `NonFiniteError` after `train.max_nonfinite_steps` non-finite
    steps in a row. Whatever ends it, saves in flight are waited for: the checkpoints stay.
    """
    t_start = time.time()
    workdir_lib.prepare(workdir)
    with workdir_lib.Owner(workdir, _log):
        run = Run(config, workdir, devices)
        ev = evaluation(run)
        cfg = run.config  # resolved: the chosen detector's section only
        ckpts = Checkpoints(
            os.path.join(workdir, "checkpoints"),
            cfg.train.keep_checkpoints,
            cfg.train.checkpoint_every,
            clean_partial=True,
            log=_log,
        )
        best = BestCheckpoint(workdir, cfg.train.best_metric)
        try:
            metrics = _train(run, ev, ckpts, best, t_start)
        except BaseException as e:
            _finish(run, ckpts, best, ending=e)  # the error that ended the run is the one reported
            raise
        _finish(run, ckpts, best)
        return metrics


def _resume(run: Run, ckpts: Checkpoints):
    """The state to start from: the newest checkpoint that restores (unreadable ones are
    moved aside and logged), else a fresh one. config.json is written only after that."""
    cfg, workdir = run.config, run.workdir
    steps = ckpts.all_steps()
    for line in configs.check_resume(cfg, workdir, resuming=bool(steps)):
        _log(line)
    state = None
    if steps:
        items, step = ckpts.restore_newest(run.initial_state().items(), steps, log=_log, move_aside=True)
        state = None if items is None else TrainState.from_items(items)
        if state is None:
            _log(f"no checkpoint in {ckpts.directory} restores (see above): starting from step 0")
        else:
            _log(f"resumed from {workdir}/checkpoints at step {step}")
    if state is None:
        state = run.initial_state(pretrained=True)
    configs.record(cfg, workdir)
    if jax.process_index() == 0:  # what `experiments.predict` and `eval` need besides config.json
        run.classes.write(workdir)
    return state


def _train(run: Run, ev: Evaluation, ckpts: Checkpoints, best: BestCheckpoint, t_start: float):
    cfg = run.config
    state = _resume(run, ckpts)
    start = int(jax.device_get(state.step))
    stream = _train_stream(run, start)
    n_params = sum(x.size for x in jax.tree_util.tree_leaves(state.params))
    _log(
        f"{cfg.model.name}/{cfg.model.backbone}: {n_params / 1e6:.2f}M params, {len(run.class_names)} classes, "
        f"{len(run.train_source)} train images, {run.mesh.size} device(s), "
        f"global batch {cfg.train.batch_size}, steps {start}->{cfg.train.steps}"
    )
    platform = kernels.platform(run.mesh.devices.flat)
    _log(kernels.describe(kernels.resolve(cfg.model.kernels, platform), platform))
    for line in run.group_lines:
        _log(line)
    if ema.describe(cfg.optim):
        _log(ema.describe(cfg.optim))
    metrics: dict[str, float] = {}
    paths: list[str] = []
    guard = progress.NonFiniteGuard(cfg.train.max_nonfinite_steps, list(run.detector.term_weights))
    reporter = progress.Progress(run)
    owed = best.owes(start, cfg.train.eval_every, cfg.train.steps)
    # The stream's worker processes end with the loop, however it ends.
    with preemption.StopRequests(_log) as stop, contextlib.closing(stream):
        if owed:  # stopped during this step's evaluation last time: it still counts (best, early stop)
            _log(f"step {start}: its evaluation was interrupted; evaluating before training on")
            evaluated, paths, early_stop = _evaluate(run, ev, state, start, best, stop)
            metrics = evaluated or metrics
            _maybe_stop(stop, start, run, ckpts, best, guard)
            if early_stop:
                start = cfg.train.steps  # (no more steps)
        for step in range(start, cfg.train.steps):
            batch = reporter.batch(next(stream))
            train_step, term_grad_step, compiles = run.steps_for(batch["image"].shape[1])
            every = cfg.train.term_grad_norms_every
            if every and step % every == 0:
                # On the state before this step's update: the gradients this step applies.
                run.writer.write(step, "diagnostics", jax.device_get(term_grad_step(state, batch, run.base_rng)))
            state, step_metrics = train_step(state, batch, run.base_rng)
            done = step + 1
            guard.push(done, step_metrics)
            if step == start:
                jax.block_until_ready(state)
                _log(f"step {done}: first step (compilation included) took {time.time() - t_start:.1f}s since start")
            reporter.add(done, step_metrics, timed=not compiles)  # a step that compiled is not timed
            ckpts.save(done, state.items(), force=done == cfg.train.steps)
            early_stop = False
            if done % cfg.train.eval_every == 0 or done == cfg.train.steps:
                t_eval = time.time()
                evaluated, new_paths, early_stop = _evaluate(run, ev, state, done, best, stop)
                if evaluated is not None:
                    metrics, paths = evaluated, new_paths
                reporter.exclude(time.time() - t_eval)  # evaluation time is not training time
            if early_stop:
                ckpts.save(done, state.items(), force=True)  # a no-op when this step is saved already
                break
            _maybe_stop(stop, done, run, ckpts, best, guard, state)
    guard.flush()
    ckpts.wait()
    best.wait()
    if start >= cfg.train.steps and not owed:
        _log(f"training already complete at step {start} (config.train.steps={cfg.train.steps}); evaluating")
        t_eval = time.time()
        metrics = ev.evaluate(state.weights, start)
        ev.log_eval(start, metrics, time.time() - t_eval)
        paths = ev.draw_predictions(state.weights, start)
    ev.log_analysis()
    if paths:
        _log(f"wrote {len(paths)} prediction images to {os.path.dirname(paths[0])}")
    _log(f"done in {time.time() - t_start:.1f}s")
    return metrics


def _evaluate(run: Run, ev: Evaluation, state, step: int, best: BestCheckpoint, stop) -> tuple[dict | None, list, bool]:
    """Evaluates at `step`: (metrics, or None when a stop request abandoned it; prediction
    picture paths; whether early stopping says stop)."""
    t_eval = time.time()
    _log(f"evaluating at step {step}")
    metrics = ev.evaluate(state.weights, step, interrupt=stop.interrupts_evaluation)
    if metrics is None:
        return None, [], False
    ev.log_eval(step, metrics, time.time() - t_eval)
    paths = ev.draw_predictions(state.weights, step)  # PNGs and TensorBoard images at every evaluation
    return metrics, paths, _track_best(best, step, metrics, state, run.config)


def _maybe_stop(stop, done: int, run: Run, ckpts, best, guard, state=None) -> None:
    """After step `done`: on a stop request (every process calls this at every step), saves
    that step and raises Preempted once it is on disk."""
    if not stop.should_stop(done):
        return
    if state is not None:
        ckpts.save(done, state.items(), force=True)  # a no-op when this step is saved already
    guard.flush()
    ckpts.wait()
    best.wait()
    cfg = run.config
    message = (
        f"stopped at step {done}/{cfg.train.steps} on {stop.reason()}: checkpoint {done} is saved in "
        f"{ckpts.directory}; run the same command again to resume"
    )
    _log(message)
    raise preemption.Preempted(message, done, stop.signum or signal.SIGTERM)


def _finish(run: Run, ckpts: Checkpoints, best: BestCheckpoint, ending: BaseException | None = None) -> None:
    """Waits for pending checkpoint writes and closes the writers, all of them whatever fails.
    The first failure is raised after; when an error is `ending` the run already, failures
    are logged instead, so that error is the one reported, and a full disk's echoes (a
    writer's last flush hitting the same full disk) are not logged at all."""
    failure = None
    for close in (ckpts.wait, best.wait, ckpts.close, best.close, run.writer.close):
        try:
            close()
        except Exception as e:
            failure = failure or e
            full = isinstance(e, DiskFull) or getattr(e, "errno", None) == errno.ENOSPC
            echo = isinstance(ending, DiskFull) and full
            if ending is not None and not echo:
                _log(f"while stopping: {type(e).__name__}: {str(e)[:300]}")
    if failure is not None and ending is None:
        raise failure


def _train_stream(run: Run, start: int):
    """This process's batches from step `start` on (the same batches whatever the start)."""
    cfg = run.config
    return run.pipeline(run.train_source).train(
        cfg.train.batch_size // jax.process_count(),
        config_fields.seed_of(cfg, "data"),
        start,
        cfg.data.hflip,
        (cfg.data.scale_min, cfg.data.scale_max),
        cfg.data.mosaic_prob,
        jax.process_index(),
        jax.process_count(),
        crop_prob=cfg.data.crop_prob,
        crop_min=cfg.data.crop_min,
        color_jitter=tuple(cfg.data.color_jitter),
        # (.get: a config built before these fields existed, e.g. a sweep's across an update, runs without them)
        affine=tuple(cfg.data.get(f"affine_{k}", 0.0) for k in ("degrees", "translate", "scale", "shear")),
        mixup_prob=cfg.data.get("mixup_prob", 0.0),
        mosaic_until_step=cfg.train.steps - close if (close := cfg.data.get("close_mosaic_steps", 0)) else None,
        sizes=tuple(cfg.data.get("train_sizes", ())),
    )


def _track_best(best: BestCheckpoint, step: int, metrics: dict, state, cfg) -> bool:
    """Keeps the best checkpoint; returns True when early stopping says stop."""
    value = metrics.get(best.metric)
    if jax.process_count() > 1:  # only process 0 computed COCO metrics: share its value
        from jax.experimental import multihost_utils

        value = float(multihost_utils.broadcast_one_to_all(np.float64(-1.0 if value is None else value)))
    if value is None:
        raise ConfigError(
            f"config.train.best_metric={best.metric!r} is not an evaluation metric; "
            f"valid: {sorted(k for k in metrics if k.split('/')[0] != 'AP' or k == 'AP')}"
        )
    if best.update(step, value, state.items()):
        _log(f"new best {best.metric} {value:.4f} at step {step} (kept in {best.checkpoints.directory})")
    patience = cfg.train.early_stop_patience
    if patience and best.evals_since_best >= patience:
        _log(
            f"early stopping at step {step}: {best.metric} has not improved for {patience} evaluations "
            f"(best {best.record['value']:.4f} at step {best.record['step']})"
        )
        return True
    return False
