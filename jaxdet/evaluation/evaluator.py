"""Evaluation of a model's variables on an `EvalSession`: COCO metrics and validation loss
over the eval split, the per-class / PR / error analysis files, prediction pictures;
`Evaluation`, the hooks a training loop calls; and `evaluate_checkpoint`, which restores a
checkpoint's weights from a workdir without reading the training split.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence

import jax
import ml_collections
import numpy as np

from jaxdet import checkpoints, configs, detectors, files, kernels, parallel, visualize
from jaxdet.console import Progress
from jaxdet.console import log as _log
from jaxdet.data import pipeline
from jaxdet.data.classes import Classes
from jaxdet.detectors import inference
from jaxdet.errors import ConfigError
from jaxdet.evaluation import analysis, coco
from jaxdet.evaluation.session import EvalSession


def _coco_results(dets: dict, batch: dict, image_ok: np.ndarray, classes: Classes) -> list[dict]:
    """Detections in model pixels -> COCO results in original pixels, with the dataset's own
    image and category ids (valid images only)."""
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
                    "category_id": classes.category_id(cls),
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "score": float(score),
                }
            )
    return out


def evaluate(session: EvalSession, variables: dict, step: int, interrupt=lambda: False) -> dict[str, float] | None:
    """COCO metrics and validation loss terms on the eval split; logged and returned.

    Returns None, having logged nothing, when `interrupt()` turns True between batches."""
    local_bs = session.eval_batch_size // jax.process_count()
    data = session.pipeline(session.eval_source)
    results, term_sums, batches, unreadable = [], {}, 0, set()
    progress = Progress(f"evaluation at step {step}", len(session.eval_source))  # (this process's share)
    stream = data.eval(local_bs)
    try:
        for local in stream:
            if interrupt():
                _log(f"evaluation at step {step} abandoned (stopping)")
                return None
            batch = parallel.global_batch(session.mesh, pipeline.model_inputs(local))
            dets, terms = session.eval_step(variables, batch)
            dets = parallel.to_host(dets)
            keys = ("scale", "image_id", "image_mask", "bad_image")
            host_batch = parallel.to_host(parallel.global_batch(session.mesh, {k: local[k] for k in keys}))
            results += _coco_results(dets, host_batch, host_batch["image_mask"], session.classes)
            unreadable |= {int(i) for i in host_batch["image_id"][host_batch["bad_image"] >= 0]}
            for k, v in jax.device_get(terms).items():
                term_sums[k] = term_sums.get(k, 0.0) + float(v)
            batches += 1
            progress.update(batches * local_bs)
    finally:
        stream.close()
    progress.finish()
    metrics: dict[str, float] = {}
    if unreadable:
        _log(
            f"evaluation at step {step}: {len(unreadable)} unreadable images left out of the metrics "
            f"(data.skip_bad), image ids {sorted(unreadable)[:10]}"
        )
    if jax.process_index() == 0:
        gt = pipeline.coco_ground_truth(session.full_eval_table(), unreadable, session.classes.categories())
        metrics, precision = coco.evaluate_coco_detailed(gt, results)
        metrics.update(write_analysis(session, gt, results, precision))
        files.write_atomic(os.path.join(session.analysis_dir, "detections.json"), json.dumps(results))
        metrics["unreadable_images"] = len(unreadable)
    metrics.update({f"loss_{k}": v / max(batches, 1) for k, v in term_sums.items()})
    if session.config.optim.get("ema_decay", 0.0) > 0 and session.config.eval.get("weights", "model") == "model":
        metrics["ema"] = 1.0  # the weights evaluated are an EMA (training/ema.py)
    session.writer.write(step, "eval", metrics)
    return metrics


def write_analysis(session: EvalSession, gt: dict, results: list[dict], precision: np.ndarray) -> dict[str, float]:
    """{per_class.md, pr_curves.png, errors.txt} in session.analysis_dir; returns {"AP/<class>": AP}."""
    out = session.analysis_dir
    os.makedirs(out, exist_ok=True)
    names = {c["id"]: c["name"] for c in gt["categories"]}
    ids = [c["id"] for c in gt["categories"]]
    rows = analysis.per_class_ap(precision, ids, names)
    session.per_class_table = analysis.per_class_markdown(rows)
    with open(os.path.join(out, "per_class.md"), "w") as f:
        f.write(session.per_class_table)
    analysis.plot_pr_curves(precision, ids, names, os.path.join(out, "pr_curves.png"))
    threshold = 0.3
    session.error_lines = analysis.error_lines(analysis.error_breakdown(gt, results, threshold), threshold)
    with open(os.path.join(out, "errors.txt"), "w") as f:
        f.write("\n".join(session.error_lines) + "\n")
    return {f"AP/{r['name']}": r["AP"] for r in rows}


def log_analysis(session: EvalSession) -> None:
    """Prints the last evaluation's per-class table and error breakdown (process 0)."""
    if session.per_class_table:
        _log(session.per_class_table.rstrip())
        _log("\n".join(session.error_lines))
        _log(f"(also in {session.analysis_dir}: per_class.md, pr_curves.png, errors.txt, detections.json)")


def draw_predictions(session: EvalSession, variables: dict, step: int) -> list[str]:
    """Draws the first eval images with predictions (score >= 0.3) and ground truth."""
    cfg = session.config
    n = cfg.train.num_prediction_images
    if n <= 0:
        return []
    stream = session.pipeline(session.eval_source, workers=0).eval(session.eval_batch_size // jax.process_count())
    local = next(stream)
    stream.close()
    dets, _ = session.eval_step(variables, parallel.global_batch(session.mesh, pipeline.model_inputs(local)))
    dets = parallel.to_host(dets)
    out_dir = os.path.join(session.workdir, "predictions")
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
            session.class_names,
            local["boxes"][i][local["box_mask"][i]],
            upscale=max(1, 384 // cfg.data.image_size),
        )
        path = os.path.join(out_dir, f"step{step:06d}_{int(local['image_id'][i])}.png")
        visualize.Image.fromarray(pic).save(path)
        paths.append(path)
        pictures.append(pic)
    session.writer.write_images(step, "predictions", np.stack(pictures))
    return paths


def log_eval(step: int, metrics: dict[str, float], seconds: float) -> None:
    if "AP" in metrics:
        _log(
            f"eval step {step}: AP {metrics['AP']:.4f}  AP50 {metrics['AP50']:.4f}  "
            f"AP75 {metrics['AP75']:.4f}  APs {metrics['APs']:.4f}  APm {metrics['APm']:.4f}  "
            f"AR100 {metrics['AR100']:.4f}  ({seconds:.1f}s)"
        )


class Evaluation:
    """The evaluation hooks a training loop calls (training/loop.py), on `session`."""

    def __init__(self, session: EvalSession):
        self.session = session

    def evaluate(self, variables: dict, step: int, interrupt=lambda: False) -> dict[str, float] | None:
        return evaluate(self.session, variables, step, interrupt)

    def draw_predictions(self, variables: dict, step: int) -> list[str]:
        return draw_predictions(self.session, variables, step)

    def log_eval(self, step: int, metrics: dict[str, float], seconds: float) -> None:
        log_eval(step, metrics, seconds)

    def log_analysis(self) -> None:
        log_analysis(self.session)


def evaluate_checkpoint(
    config: ml_collections.ConfigDict | None,
    workdir: str,
    which: str = "latest",
    devices: Sequence[jax.Device] | None = None,
    out: str | None = None,
    training_items: Callable | None = None,
) -> dict[str, float]:
    """Evaluates a run's checkpoint: `which` is "latest", "best" or a step number, on
    `devices` (None: all). `training_items(config, detector, mesh)`: both checkpoint items of
    a fresh training state, the restore target when `config.eval.weights="trained"`
    (jaxdet/experiment.py supplies it: evaluation does not import training).

    The classes (and, when `config` is None, the config) are the ones the run recorded in
    its workdir; only the evaluation split is read. Everything it writes goes to `out`
    (default workdir/eval/step<N>, or step<N>-config-<hash> for another config): never to
    the run's own metrics.jsonl, which holds the training's evaluations only (sweeps and
    best-checkpoint tracking read it).
    """
    recorded, classes = configs.load_recorded(workdir)
    resolved = recorded if config is None else configs.resolve(config)
    ckpts, step = checkpoints.find(workdir, which)
    try:
        if out is None:
            tag = "" if config is None else f"-config-{configs.fingerprint(resolved)[:8]}"
            out = os.path.join(workdir, "eval", f"step{step}{tag}")
        _writable(out)
        mesh = parallel.make_mesh(devices)
        configs.validate(resolved, mesh.size, jax.process_count())
        detector = detectors.build_detector(
            resolved, len(classes.names), parallel.AXIS, kernels.platform(mesh.devices.flat), mesh.size
        )
        session = EvalSession(resolved, classes, detector, mesh, workdir, output_dir=out)
        weights = evaluated_weights(resolved)
        if weights == "model":  # the weights alone: the checkpoint's "model" item (no optimizer state is read)
            target = {"model": inference.abstract_variables(detector, resolved.data.image_size, mesh)}
        elif training_items is None:
            raise ConfigError("config.eval.weights='trained' needs the run's training state: use experiments.eval")
        else:  # the "train" item holds them, beside the optimizer state, whose tree the restore needs
            target = training_items(resolved, detector, mesh)
        items, step = ckpts.restore_newest(target, checkpoints.candidates(ckpts, which, step), log=_log)
    finally:
        ckpts.close()
    if items is None:
        raise ConfigError(f"no checkpoint in {ckpts.directory} restores (see the lines above)")
    configs.record(resolved, out)  # the config evaluated, beside its results
    if weights == "trained":
        _log("evaluating the run's trained weights, not their EMA (eval.weights='trained')")
    metrics = evaluate(session, items["model"] if weights == "model" else items["train"]["variables"], step)
    if "AP" in metrics:
        keys = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100")
        _log(f"{which} checkpoint, step {step}: " + "  ".join(f"{k} {metrics[k]:.4f}" for k in keys))
        _log("validation loss: " + "  ".join(f"{k[5:]} {v:.4f}" for k, v in metrics.items() if k.startswith("loss_")))
    log_analysis(session)
    _log(f"results in {out} (metrics.jsonl, config.json, per_class.md, pr_curves.png, errors.txt, detections.json)")
    session.writer.close()
    return metrics


WEIGHTS = ("model", "trained")  # config.eval.weights


def evaluated_weights(config) -> str:
    """`config.eval.weights` checked: "model" (the checkpoints' model item: the EMA when the
    run keeps one) or "trained" (an EMA run's trained weights, kept beside it in the "train"
    item: the weights the run would have without the EMA, which never feeds back into
    training). ConfigError for another value or "trained" on a run without an EMA."""
    weights = config.eval.get("weights", "model")
    if weights not in WEIGHTS:
        raise ConfigError(f"config.eval.weights={weights!r}; valid: {WEIGHTS}")
    if weights == "trained" and not config.optim.get("ema_decay", 0.0) > 0:
        raise ConfigError(
            "config.eval.weights='trained' reads the trained weights a run with an EMA keeps beside it; this run "
            "has no EMA (optim.ema_decay=0), so its model item is its trained weights: use eval.weights='model'"
        )
    return weights


def _writable(directory: str) -> None:
    """Creates `directory`; a ConfigError naming it when it cannot be written."""
    try:
        files.make_writable(directory)
    except OSError as e:
        raise ConfigError(
            f"cannot write the evaluation's results to {directory!r} ({e.strerror or e}); pass --out=DIR, a "
            "directory you can write"
        ) from None
