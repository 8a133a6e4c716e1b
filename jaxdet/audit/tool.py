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
    near_iou: float = 0.3,
    log: Callable[[str], None] = print,
) -> str:
    """Audits `split` ("train" or "eval": the run's data.train_split / eval_split) with
    the run's checkpoints; returns the output folder (audit.json, gallery/). With several
    checkpoints, each image's `self_influence` is the sum over them of its squared gradient
    norm (TracIn's self-influence, unweighted) and the suspicions are the last one's."""
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
    audit_step = make_audit_step(detector, heads, match_iou, near_iou)  # (one jitted step: compiled once)
    influence: dict[int, float] = {}
    step = found = None
    for which in checkpoints:
        variables, step = restore_weights(workdir, which, detector, config.data.image_size, mesh)
        log(f"audit: checkpoint step {step}, {len(source)} images of split {split!r}, gradient over {heads}")
        start = time.perf_counter()
        found = run_pass(audit_step, variables, data, batch_size, classes, log)
        log(f"audit: {len(source)} images in {time.perf_counter() - start:.1f}s")
        for r in found.images:
            influence[r["index"]] = influence.get(r["index"], 0.0) + r["grad_norm"] ** 2
    for r in found.images:
        r["self_influence"] = influence[r["index"]]
    out = out or os.path.join(workdir, "audit", f"{split}-step{step}")
    os.makedirs(out, exist_ok=True)
    header = {"workdir": os.path.abspath(workdir), "split": split, "checkpoints": list(checkpoints), "step": step,
              "gradient_over": heads, "match_iou": match_iou, "near_iou": near_iou}  # fmt: skip
    report.write_json(found, os.path.join(out, "audit.json"), header)
    run = jax.jit(lambda v, x: detector.predict(forward(detector, v, {"image": x}, jax.random.key(0), False)[0]))

    def predict(image: np.ndarray) -> dict:  # one image's detections, canvas pixels
        return {k: np.asarray(v)[0] for k, v in run(variables, image[None])._asdict().items()}

    top = report.top_per_kind(found, top_k)
    report.gallery(top, data.eval_example, predict, list(classes.names), os.path.join(out, "gallery"))
    log(f"audit: wrote {os.path.join(out, 'audit.json')} and {len(top)} pictures in {os.path.join(out, 'gallery')}")
    return out


def score_against(out: str, changes_path: str) -> list[str]:
    """Scores out/audit.json against inject_noise's changes; writes out/score.json, returns the table."""
    with open(os.path.join(out, "audit.json")) as f, open(changes_path) as g:
        scores = score.score(json.load(f), json.load(g))
    files.write_atomic(os.path.join(out, "score.json"), json.dumps(scores))
    return score.table(scores)
