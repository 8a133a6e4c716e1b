"""`experiments.audit`: a trained run's detector over a split of its dataset, to rank
the annotations it disagrees with (runner.py, report.py)."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence

import jax
import numpy as np

from jaxdet import configs, detectors, files, parallel
from jaxdet.audit import report, score
from jaxdet.audit.per_example import head_names
from jaxdet.audit.records import JsonLines, RecordWriter
from jaxdet.audit.runner import make_audit_step, run_pass
from jaxdet.data import pipeline, sources
from jaxdet.detectors import inference
from jaxdet.detectors.inference import forward
from jaxdet.errors import ConfigError
from jaxdet.evaluation.predict import restore_weights


def audit(
    workdir: str,
    split: str = "train",
    checkpoints: Sequence[str] = ("latest",),
    out: str | None = None,
    batch_size: int = 0,
    top_k: int = 24,
    params: str | None = None,
    match_iou: float = 0.5,
    near_iou: float = 0.1,
    missing_score: float = 0.3,
    keep: int = 1000,
    log: Callable[[str], None] = print,
) -> str:
    """Audits `split` ("train" or "eval": the run's data.train_split / eval_split) with
    the run's checkpoints; returns the output folder (audit.json, gallery/). With several
    checkpoints, each image's `self_influence` is the sum over them of its squared gradient
    norm (TracIn's self-influence, unweighted) and the suspicions are the last one's. Every
    record streams to JSON-lines files in the output folder; memory holds one batch, the top
    `keep` of each ranking and 8 bytes an image."""
    if keep < top_k:
        raise ConfigError(f"keep={keep} is under top_k={top_k}: the gallery draws from the kept top of each ranking")
    if not checkpoints:
        raise ConfigError("--checkpoints is empty: name latest, best or steps (e.g. --checkpoints=500,1000)")
    if split not in ("train", "eval"):
        raise ConfigError(f"--split={split!r}: valid are 'train' (the run's data.train_split) and 'eval'")
    config, classes = configs.load_recorded(workdir)
    devices = jax.local_devices()[:1]
    detector = detectors.build_detector(config, len(classes.names), None, devices[0].platform)
    mesh = parallel.make_mesh(devices)
    source = sources.load(config.data, split, log=log)
    data = pipeline.Pipeline.from_config(source, config.data)
    batch_size = batch_size or config.train.eval_batch_size
    heads = head_names(inference.abstract_variables(detector, config.data.image_size, mesh)["params"], params)
    # One jitted step, compiled once for every checkpoint.
    audit_step = make_audit_step(detector, heads, match_iou, near_iou, missing_score)
    # Earlier checkpoints add each image's squared gradient norm (8 bytes an image); the
    # last one's pass writes the records and the suspicions.
    influence = np.zeros(len(source), np.float64)

    def add_influence(images: list[dict], *_) -> None:
        for r in images:
            influence[r["index"]] += r["grad_norm"] ** 2

    def restore(which: str):
        variables, step = restore_weights(workdir, which, detector, config.data.image_size, mesh)
        log(f"audit: checkpoint step {step}, {len(source)} images of split {split!r}, gradient over {heads}")
        return variables, step

    def timed_pass(variables, on_batch) -> None:
        start = time.perf_counter()
        run_pass(audit_step, variables, data, batch_size, classes, on_batch, log)
        log(f"audit: {len(source)} images in {time.perf_counter() - start:.1f}s")

    for which in checkpoints[:-1]:
        timed_pass(restore(which)[0], add_influence)
    variables, step = restore(checkpoints[-1])
    out = out or os.path.join(workdir, "audit", f"{split}-step{step}")
    os.makedirs(out, exist_ok=True)
    writer = RecordWriter(out, keep)

    def record(images: list[dict], boxes: list[dict], missing: list[dict]) -> None:
        for r in images:
            r["self_influence"] = influence[r["index"]] + r["grad_norm"] ** 2
        writer.add(images, boxes, missing)

    try:
        timed_pass(variables, record)
    except BaseException:
        writer.discard()
        raise
    header = {"workdir": os.path.abspath(workdir), "split": split, "checkpoints": list(checkpoints), "step": step,
              "gradient_over": heads, "match_iou": match_iou, "near_iou": near_iou,
              "missing_score": missing_score}  # fmt: skip
    report.write_json(writer, writer.close(), os.path.join(out, "audit.json"), header)
    run = jax.jit(lambda v, x: detector.predict(forward(detector, v, {"image": x}, jax.random.key(0), False)[0]))

    def predict(image: np.ndarray) -> dict:  # one image's detections, canvas pixels
        return {k: np.asarray(v)[0] for k, v in run(variables, image[None])._asdict().items()}

    top = writer.gallery_order(top_k)
    report.gallery(top, data.eval_example, predict, list(classes.names), os.path.join(out, "gallery"))
    log(f"audit: wrote {os.path.join(out, 'audit.json')} and {len(top)} pictures in {os.path.join(out, 'gallery')}")
    return out


def score_against(out: str, changes_path: str) -> list[str]:
    """Scores the audit in `out` (its boxes.jsonl and missing.jsonl, streamed) against
    inject_noise's changes; writes out/score.json, returns the table."""
    with open(os.path.join(out, "audit.json")) as f, open(changes_path) as g:
        record_files, changes = json.load(f)["records"], json.load(g)
    read = {name: JsonLines(os.path.join(out, record_files[name])) for name in ("boxes", "missing")}
    scores = score.score(read["boxes"], read["missing"], changes)
    files.write_atomic(os.path.join(out, "score.json"), json.dumps(scores))
    return score.table(scores)
