"""The training loop: set-up, resume, steps, progress lines, evaluation, checkpoints, pictures.

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

from jaxdet import (
    analysis,
    checkpoint,
    configs,
    detectors,
    evaluation,
    kernels,
    optim,
    preemption,
    progress,
    runtime,
    summary,
    train,
    visualize,
)
from jaxdet.data import pipeline, sources
from jaxdet.errors import ConfigError, NonFiniteError
from jaxdet.progress import log as _log


def _coco_results(dets: dict, batch: dict, image_ok: np.ndarray) -> list[dict]:
    """Detections in model pixels -> COCO results in original pixels (valid images only)."""
    out = []
    for i in np.nonzero(image_ok)[0]:
        scale = float(batch["scale"][i])
        for box, score, cls, ok in zip(dets["boxes"][i], dets["scores"][i], dets["classes"][i], dets["valid"][i]):
            if not ok:
                continue
            x1, y1, x2, y2 = (float(v) / scale for v in box)
            out.append(
                {
                    "image_id": int(batch["image_id"][i]),
                    "category_id": int(cls) + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": float(score),
                }
            )
    return out


def model_class_names(data_names: list[str], num_classes: int) -> list[str]:
    """The model's classes: the data's, or `num_classes` (> 0) of them, extra ones named class_k."""
    if not num_classes:
        return list(data_names)
    if num_classes < len(data_names):
        raise ConfigError(
            f"config.model.num_classes={num_classes} is fewer than the {len(data_names)} classes in the data "
            f"({', '.join(data_names[:10])}{' ...' if len(data_names) > 10 else ''}); use 0 to follow the data"
        )
    return list(data_names) + [f"class_{k}" for k in range(len(data_names), num_classes)]


class Run:
    """Holds everything one run builds once: mesh, data, detector, optimizer, compiled steps."""

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        workdir: str,
        devices: Sequence[jax.Device] | None = None,
        class_names: list[str] | None = None,
    ):
        """With `class_names` (a recorded run's), only the evaluation split is loaded."""
        self.config = config = configs.resolve(config)
        self.workdir = workdir
        self.mesh = train.make_mesh(devices)
        configs.validate(config, self.mesh.size, jax.process_count())
        self.eval_batch_size = configs.eval_batch_size(config, self.mesh.size)
        runtime.check_processes_agree(configs.fingerprint(config))
        pi, pc = jax.process_index(), jax.process_count()
        # The whole training split's annotations on every process; each reads the images of its
        # slice of every global batch, so a run's batches do not depend on the number of processes.
        self.train_source = None if class_names else sources.load(config.data, "train", log=_log)
        eval_source = sources.load(config.data, "eval", pi, pc, log=_log)
        if config.data.eval_max_images:
            eval_source = eval_source.take(0, config.data.eval_max_images // pc)
        self.eval_source = eval_source
        self._whole_eval = None  # multi-process: the unsharded split's annotations, for COCO ground truth
        self.class_names = class_names or model_class_names(self.train_source.class_names, config.model.num_classes)
        self.detector = detectors.build_detector(
            config, len(self.class_names), train.AXIS, kernels.platform(self.mesh.devices.flat), self.mesh.size
        )
        self.tx, self.lr = optim.make_optimizer(config.optim, config.train.steps)
        self.train_step = train.shard_train_step(train.make_train_step(self.detector, self.tx, self.lr), self.mesh)
        self.eval_step = train.make_eval_step(self.detector, self.mesh)
        self.term_grad_step = train.make_term_grad_step(self.detector, self.mesh)
        self.base_rng = jax.random.key(config.seed)
        self.writer = summary.MetricWriter(workdir)

    def initial_state(self, pretrained: bool = False) -> train.TrainState:
        """Freshly initialised state; with `pretrained`, torchvision weights loaded as configured
        (config.model.backbone_weights / detector_weights)."""
        state = train.init_state(
            self.detector, self.tx, train.init_key(self.config.seed), self.config.data.image_size, self.mesh
        )
        m = self.config.model
        if not pretrained or not (m.get("backbone_weights") or m.get("detector_weights")):
            return state
        from jaxdet.models import convert  # torch is imported only when weights are loaded

        host = jax.device_get({"params": state.params, "batch_stats": state.batch_stats})
        loaded = convert.load_pretrained(m, host, log=_log)
        replicated = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())
        loaded = jax.device_put(loaded, replicated)
        # The optimizer state depends on the parameters' shapes only, so it stays as initialised.
        return state.replace(params=loaded["params"], batch_stats=loaded["batch_stats"])

    def evaluate(self, state: train.TrainState, step: int, interrupt=lambda: False) -> dict[str, float] | None:
        """COCO metrics and validation loss terms on the eval split; logged and returned.

        Returns None, having logged nothing, when `interrupt()` turns True between batches."""
        local_bs = self.eval_batch_size // jax.process_count()
        data = self.pipeline(self.eval_source)
        results, term_sums, batches, unreadable = [], {}, 0, set()
        stream = data.eval(local_bs)
        try:
            for local in stream:
                if interrupt():
                    _log(f"evaluation at step {step} abandoned (stopping)")
                    return None
                dets, terms = self.eval_step(state, train.global_batch(self.mesh, progress.model_inputs(local)))
                dets = train.to_host(dets)
                keys = ("scale", "image_id", "image_mask", "bad_image")
                host_batch = train.to_host(train.global_batch(self.mesh, {k: local[k] for k in keys}))
                results += _coco_results(dets, host_batch, host_batch["image_mask"])
                unreadable |= {int(i) for i in host_batch["image_id"][host_batch["bad_image"] >= 0]}
                for k, v in jax.device_get(terms).items():
                    term_sums[k] = term_sums.get(k, 0.0) + float(v)
                batches += 1
        finally:
            stream.close()
        metrics: dict[str, float] = {}
        if unreadable:
            _log(
                f"evaluation at step {step}: {len(unreadable)} unreadable images left out of the metrics "
                f"(data.skip_bad), image ids {sorted(unreadable)[:10]}"
            )
        if jax.process_index() == 0:
            gt = pipeline.coco_ground_truth(self._full_eval_table(), leave_out=unreadable)
            metrics, precision = evaluation.evaluate_coco_detailed(gt, results)
            metrics.update(self._write_analysis(gt, results, precision))
            metrics["unreadable_images"] = len(unreadable)
        metrics.update({f"loss_{k}": v / max(batches, 1) for k, v in term_sums.items()})
        self.writer.write(step, "eval", metrics)
        return metrics

    def _write_analysis(self, gt: dict, results: list[dict], precision: np.ndarray) -> dict[str, float]:
        """workdir/eval/{per_class.md, pr_curves.png, errors.txt}; returns {"AP/<class>": AP}."""
        out = os.path.join(self.workdir, "eval")
        os.makedirs(out, exist_ok=True)
        names = {c["id"]: c["name"] for c in gt["categories"]}
        ids = [c["id"] for c in gt["categories"]]
        rows = analysis.per_class_ap(precision, ids, names)
        self.per_class_table = analysis.per_class_markdown(rows)
        with open(os.path.join(out, "per_class.md"), "w") as f:
            f.write(self.per_class_table)
        analysis.plot_pr_curves(precision, ids, names, os.path.join(out, "pr_curves.png"))
        threshold = 0.3
        self.error_lines = analysis.error_lines(analysis.error_breakdown(gt, results, threshold), threshold)
        with open(os.path.join(out, "errors.txt"), "w") as f:
            f.write("\n".join(self.error_lines) + "\n")
        return {f"AP/{r['name']}": r["AP"] for r in rows}

    def log_analysis(self) -> None:
        """Prints the last evaluation's per-class table and error breakdown (process 0)."""
        if getattr(self, "per_class_table", None):
            _log(self.per_class_table.rstrip())
            _log("\n".join(self.error_lines))
            _log(f"(also in {os.path.join(self.workdir, 'eval')}: per_class.md, pr_curves.png, errors.txt)")

    def pipeline(self, source, workers: int | None = None) -> pipeline.Pipeline:
        d = self.config.data
        return pipeline.Pipeline(
            source, d.image_size, d.max_boxes, d.workers if workers is None else workers, d.skip_bad
        )

    def _full_eval_table(self):
        """The whole evaluation split's annotations (read once; TFDS records are read for it)."""
        if self._whole_eval is not None:
            return self._whole_eval
        if jax.process_count() == 1:
            self._whole_eval = self.eval_source.annotations()
            return self._whole_eval
        cfg = self.config
        src = sources.load(cfg.data, "eval", log=lambda line: None)
        src = src.take(0, cfg.data.eval_max_images) if cfg.data.eval_max_images else src
        self._whole_eval = src.annotations()
        return self._whole_eval

    def draw_predictions(self, state: train.TrainState, step: int) -> list[str]:
        """Draws the first eval images with predictions (score >= 0.3) and ground truth."""
        cfg = self.config
        n = cfg.train.num_prediction_images
        if n <= 0:
            return []
        stream = self.pipeline(self.eval_source, workers=0).eval(self.eval_batch_size // jax.process_count())
        local = next(stream)
        stream.close()
        dets, _ = self.eval_step(state, train.global_batch(self.mesh, progress.model_inputs(local)))
        dets = train.to_host(dets)
        out_dir = os.path.join(self.workdir, "predictions")
        paths, pictures = [], []
        if jax.process_index() != 0:
            return paths
        os.makedirs(out_dir, exist_ok=True)
        for i in range(min(n, int(local["image_mask"].sum()))):
            keep = dets["valid"][i] & (dets["scores"][i] >= 0.3)
            pic = visualize.draw_boxes(
                local["image"][i],
                dets["boxes"][i][keep],
                dets["classes"][i][keep],
                dets["scores"][i][keep],
                self.class_names,
                local["boxes"][i][local["box_mask"][i]],
                upscale=max(1, 384 // cfg.data.image_size),
            )
            path = os.path.join(out_dir, f"step{step:06d}_{int(local['image_id'][i])}.png")
            visualize.Image.fromarray(pic).save(path)
            paths.append(path)
            pictures.append(pic)
        self.writer.write_images(step, "predictions", np.stack(pictures))
        return paths


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
                evaluated = run.evaluate(state, done, interrupt=stop.interrupts_evaluation)
                if evaluated is not None:
                    metrics = evaluated
                    _log_eval(done, metrics, time.time() - t_eval)
                    paths = run.draw_predictions(state, done)  # PNGs and TensorBoard images at every evaluation
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
        metrics = run.evaluate(state, start)
        _log_eval(start, metrics, time.time() - t_eval)
        paths = run.draw_predictions(state, start)
    run.log_analysis()
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


def _log_eval(step: int, metrics: dict[str, float], seconds: float) -> None:
    if "AP" in metrics:
        _log(
            f"eval step {step}: AP {metrics['AP']:.4f}  AP50 {metrics['AP50']:.4f}  "
            f"AP75 {metrics['AP75']:.4f}  APs {metrics['APs']:.4f}  APm {metrics['APm']:.4f}  "
            f"AR100 {metrics['AR100']:.4f}  ({seconds:.1f}s)"
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


def evaluate_checkpoint(
    config: ml_collections.ConfigDict | None, workdir: str, which: str = "latest"
) -> dict[str, float]:
    """Evaluates a run's checkpoint: `which` is "latest", "best" or a step number.

    The class names (and, when `config` is None, the config) are the ones the run recorded
    in its workdir; only the evaluation split is read.
    """
    recorded, class_names = configs.load_recorded(workdir)
    run = Run(recorded if config is None else config, workdir, class_names=class_names)
    ckpts, step = checkpoint.find(workdir, which)
    state = ckpts.restore(step, run.initial_state())
    ckpts.close()
    metrics = run.evaluate(state, step)
    if "AP" in metrics:
        keys = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100")
        _log(f"{which} checkpoint, step {step}: " + "  ".join(f"{k} {metrics[k]:.4f}" for k in keys))
        _log("validation loss: " + "  ".join(f"{k[5:]} {v:.4f}" for k, v in metrics.items() if k.startswith("loss_")))
    run.log_analysis()
    run.writer.close()
    return metrics
