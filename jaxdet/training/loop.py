"""The training loop: resume, steps, progress lines, evaluation, best checkpoint and early
stop, checkpoints, preemption.

`train_and_evaluate(config, workdir)` is the whole run; re-running it with the same
workdir resumes from the latest checkpoint (the data stream resumes at the same step).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Sequence

import jax
import ml_collections
import numpy as np

from jaxdet import configs
from jaxdet.errors import ConfigError, NonFiniteError
from jaxdet.evaluation import evaluator
from jaxdet.training import checkpoint, preemption, progress
from jaxdet.training.progress import log as _log
from jaxdet.training.run import Run


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, devices: Sequence[jax.Device] | None = None
) -> dict[str, float]:
    """Trains `config` in `workdir` (resuming if it holds checkpoints); returns the final eval metrics.

    Raises `preemption.Preempted` after SIGTERM/SIGINT (a checkpoint at that step is on disk)
    and `NonFiniteError` after `train.max_nonfinite_steps` non-finite steps in a row.
    """
    t_start = time.time()
    run = Run(config, workdir, devices)
    cfg = run.config  # resolved: the chosen detector's section only
    ckpts = checkpoint.Checkpoints(
        os.path.join(workdir, "checkpoints"), cfg.train.keep_checkpoints, cfg.train.checkpoint_every
    )
    latest = ckpts.latest_step()
    for line in configs.check_and_record(cfg, workdir, resuming=latest is not None):
        _log(line)
    best = checkpoint.BestCheckpoint(workdir, cfg.train.best_metric)
    if jax.process_index() == 0:  # what `experiments.predict` needs besides config.json
        with open(os.path.join(workdir, "classes.json"), "w") as f:
            json.dump(run.class_names, f)
    state = run.initial_state(pretrained=latest is None)
    if latest is not None:
        state = ckpts.restore(latest, state)
        _log(f"resumed from {workdir}/checkpoints at step {latest}")
    start = int(jax.device_get(state.step))
    stream = _train_stream(run, start)
    n_params = sum(x.size for x in jax.tree_util.tree_leaves(state.params))
    _log(
        f"{cfg.model.name}/{cfg.model.backbone}: {n_params / 1e6:.2f}M params, {len(run.class_names)} classes, "
        f"{len(run.train_source)} train images, {run.mesh.size} device(s), "
        f"global batch {cfg.train.batch_size}, steps {start}->{cfg.train.steps}"
    )
    metrics: dict[str, float] = {}
    paths: list[str] = []
    guard = progress.NonFiniteGuard(cfg.train.max_nonfinite_steps)
    reporter = progress.Progress(run)
    # The stream's worker processes end with the loop, however it ends.
    with preemption.StopRequests(_log) as stop, contextlib.closing(stream):
        for step in range(start, cfg.train.steps):
            batch = reporter.batch(next(stream))
            every = cfg.train.term_grad_norms_every
            if every and step % every == 0:
                # On the state before this step's update: the gradients this step applies.
                run.writer.write(step, "diagnostics", jax.device_get(run.term_grad_step(state, batch, run.base_rng)))
            state, step_metrics = run.train_step(state, batch, run.base_rng)
            done = step + 1
            try:
                guard.push(done, step_metrics)
            except NonFiniteError:
                ckpts.wait()  # the checkpoints already written stay complete and restorable
                raise
            if step == start:
                jax.block_until_ready(state)
                _log(f"step {done}: first step (compilation included) took {time.time() - t_start:.1f}s since start")
                reporter.restart()
            else:
                reporter.add(done, step_metrics)
            ckpts.save(done, state, force=done == cfg.train.steps)
            early_stop = False
            if done % cfg.train.eval_every == 0 or done == cfg.train.steps:
                t_eval = time.time()
                evaluated = evaluator.evaluate(run, state, done, interrupt=stop.interrupts_evaluation)
                if evaluated is not None:
                    metrics = evaluated
                    evaluator.log_eval(done, metrics, time.time() - t_eval)
                    paths = evaluator.draw_predictions(
                        run, state, done
                    )  # PNGs and TensorBoard images at every evaluation
                    early_stop = _track_best(best, done, metrics, state, cfg)
                reporter.exclude(time.time() - t_eval)  # evaluation time is not training time
            stopping = stop.should_stop(done)  # every process calls it at every step (agreement)
            if early_stop or stopping:
                ckpts.save(done, state, force=True)  # a no-op when this step is saved already
            if early_stop:
                break
            if stopping:
                guard.flush()
                _finish(run, ckpts, best)
                message = (
                    f"stopped at step {done}/{cfg.train.steps} on {stop.reason()}: checkpoint {done} is saved in "
                    f"{ckpts.directory}; run the same command again to resume"
                )
                _log(message)
                raise preemption.Preempted(message, done, stop.signum or signal.SIGTERM)
    guard.flush()
    ckpts.wait()
    best.wait()
    if start >= cfg.train.steps:
        _log(f"training already complete at step {start} (config.train.steps={cfg.train.steps}); evaluating")
        t_eval = time.time()
        metrics = evaluator.evaluate(run, state, start)
        evaluator.log_eval(start, metrics, time.time() - t_eval)
        paths = evaluator.draw_predictions(run, state, start)
    evaluator.log_analysis(run)
    if paths:
        _log(f"wrote {len(paths)} prediction images to {os.path.dirname(paths[0])}")
    _log(f"done in {time.time() - t_start:.1f}s")
    _finish(run, ckpts, best)
    return metrics


def _finish(run: Run, ckpts: checkpoint.Checkpoints, best: checkpoint.BestCheckpoint) -> None:
    """Waits for pending checkpoint writes and closes the writers."""
    ckpts.wait()
    best.wait()
    ckpts.close()
    best.close()
    run.writer.close()


def _train_stream(run: Run, start: int):
    """This process's batches from step `start` on (the same batches whatever the start)."""
    cfg = run.config
    return run.pipeline(run.train_source).train(
        cfg.train.batch_size // jax.process_count(),
        cfg.seed,
        start,
        cfg.data.hflip,
        (cfg.data.scale_min, cfg.data.scale_max),
        cfg.data.mosaic_prob,
        jax.process_index(),
        jax.process_count(),
        crop_prob=cfg.data.crop_prob,
        crop_min=cfg.data.crop_min,
        color_jitter=tuple(cfg.data.color_jitter),
    )


def _track_best(best: checkpoint.BestCheckpoint, step: int, metrics: dict, state, cfg) -> bool:
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
    if best.update(step, value, state):
        _log(f"new best {best.metric} {value:.4f} at step {step} (kept in {best.checkpoints.directory})")
    patience = cfg.train.early_stop_patience
    if patience and best.evals_since_best >= patience:
        _log(
            f"early stopping at step {step}: {best.metric} has not improved for {patience} evaluations "
            f"(best {best.record['value']:.4f} at step {best.record['step']})"
        )
        return True
    return False
