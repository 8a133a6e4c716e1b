"""`experiments.anatomy`: a trained run's checkpoints over images of its data, and where
each loss term's gradient comes from (location groups, pyramid levels, IoU) and where it
goes (modules), written to anatomy.json and PNGs."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence

import jax
import numpy as np

from jaxdet import config_fields, configs, detectors, files, parallel
from jaxdet.anatomy import figures
from jaxdet.anatomy import groups as G
from jaxdet.anatomy.step import anatomy_fn, make_plan
from jaxdet.anatomy.summary import Accumulator
from jaxdet.console import Progress
from jaxdet.data import pipeline, sources
from jaxdet.detectors import inference
from jaxdet.errors import ConfigError


def _check(checkpoints: Sequence[str], images: int, maps: int, split: str, score_edges: Sequence[float]) -> None:
    if not checkpoints:
        raise ConfigError("--checkpoints is empty: name latest, best or steps (e.g. --checkpoints=100,200,300)")
    if images < 1 or maps < 0:
        raise ConfigError(f"--images={images} (>= 1) and --maps={maps} (>= 0)")
    if split not in ("train", "eval"):
        raise ConfigError(f"--split={split!r}: valid are 'train' (the run's data.train_split) and 'eval'")
    edges = list(score_edges)
    if any(not 0 < e < 1 for e in edges) or edges != sorted(set(edges)):
        raise ConfigError(f"--score_edges={edges}: increasing values in (0, 1), e.g. 0.05,0.2,0.5")


def with_loss(config, overrides: dict[str, str]):
    """`config` with config.loss fields set from text (`{"loss.focal_gamma": "0.0"}`), typed
    as the field is: the anatomy of another loss on the same weights. Fields outside
    config.loss would change the network or its data, which the checkpoint fixes."""
    config = config.copy_and_resolve_references()
    for key, text in overrides.items():
        if not key.startswith("loss."):
            raise ConfigError(f"--loss {key}={text}: only config.loss fields change here (e.g. loss.focal_gamma=0.0)")
        config_fields.set_field(config, key, config_fields.parse_field(config, key, text, "--loss"))
    return config


def anatomy(
    workdir: str,
    checkpoints: Sequence[str] = ("latest",),
    images: int = 64,
    batch_size: int = 0,
    split: str = "train",
    maps: int = 4,
    score_edges: Sequence[float] = G.SCORE_EDGES,
    out: str | None = None,
    log: Callable[[str], None] = print,
    loss: dict[str, str] | None = None,
) -> str:
    """Measures the run in `workdir` at each of `checkpoints` on the first `images` images
    of `split` (the evaluation pipeline's canvases: no augmentation); writes anatomy.json
    and the PNGs into `out` (default workdir/anatomy) and returns it. Spatial maps are drawn
    for the first `maps` images at the last checkpoint. `loss`: config.loss fields to
    change first (another loss on the same weights; default out: workdir/anatomy-<change>)."""
    _check(checkpoints, images, maps, split, score_edges)
    config, classes = configs.load_recorded(workdir)
    config = with_loss(config, loss or {})
    devices = jax.local_devices()[:1]
    detector = detectors.build_detector(config, len(classes.names), None, devices[0].platform)
    mesh = parallel.make_mesh(devices)
    size = config.data.image_size
    abstract = inference.abstract_variables(detector, size, mesh)
    plan = make_plan(detector, abstract["params"], config.model.backbone, score_edges)
    source = sources.load(config.data, split, log=log)
    data = pipeline.Pipeline.from_config(source, config.data)
    batch_size = batch_size or min(config.train.batch_size, 16)
    images = min(images, len(source))
    step_fn = jax.jit(anatomy_fn(detector, plan))
    suffix = ",".join(f"{k}={v}" for k, v in (loss or {}).items())
    out = out or os.path.join(workdir, "anatomy" + (f"-{suffix}" if suffix else ""))
    os.makedirs(out, exist_ok=True)
    doc = {"workdir": os.path.abspath(workdir), "detector": config.model.name, "split": split,
           "terms": list(plan.terms), "weights": list(plan.weights), "groups": plan.groups,
           "score_edges": list(plan.score_edges), "modules": list(plan.modules),
           "loss_changes": dict(loss or {}), "checkpoints": []}  # fmt: skip
    pictures: list[dict] = []
    for n, which in enumerate(checkpoints):
        variables, step = inference.restore_weights(workdir, which, detector, size, mesh)
        last = n == len(checkpoints) - 1
        acc = Accumulator(plan, size, config.model.min_level, config.model.max_level)
        start, progress = time.perf_counter(), Progress("anatomy", images, out=log)
        stream = data.eval(batch_size)
        try:
            for b, local in enumerate(stream):
                if b * batch_size >= images:
                    break
                local = dict(local)
                local["image_mask"] = local["image_mask"] & (b * batch_size + np.arange(batch_size) < images)
                rng = jax.random.fold_in(jax.random.key(config_fields.seed_of(config, "step")), b)
                numbers = jax.device_get(step_fn(variables, jax.device_put(pipeline.model_inputs(local)), rng))
                acc.add(numbers, int(local["image_mask"].sum()))
                if last:
                    pictures += _pictures(numbers, local, acc.layouts, b * batch_size, maps - len(pictures))
                progress.update(min((b + 1) * batch_size, images))
        finally:
            stream.close()
        progress.finish()
        doc["checkpoints"].append(acc.summary(step))
        log(f"anatomy: step {step}, {acc.images} images in {time.perf_counter() - start:.1f}s")
        for line in describe(doc["checkpoints"][-1]):
            log(line)
    files.write_atomic(os.path.join(out, "anatomy.json"), json.dumps(doc, indent=1))
    written = figures.write_all(doc, pictures, out)
    log(f"anatomy: wrote {os.path.join(out, 'anatomy.json')} and {len(written)} pictures in {out}")
    return out


def _pictures(numbers: dict, local: dict, layouts: dict, first: int, room: int) -> list[dict]:
    """Up to `room` images of this batch with, per term that has a layout, its gradient
    magnitude and roles per location (padded images and slots left out)."""
    out = []
    for i in np.nonzero(local["image_mask"])[0][: max(room, 0)]:
        terms = {t: (np.asarray(numbers["maps"][t][i]), np.asarray(numbers["roles"][t][i]), layouts[t])
                 for t in numbers["maps"] if layouts.get(t)}  # fmt: skip
        if terms:
            boxes = np.asarray(local["boxes"][i])[np.asarray(local["box_mask"][i], bool)]
            out.append(
                {"index": first + int(i), "image": np.asarray(local["image"][i]), "boxes": boxes, "terms": terms}
            )
    return out


def describe(entry: dict) -> list[str]:
    """A few lines for the log: each term's value, output-gradient norm and group shares."""
    lines = []
    for t, e in entry["terms"].items():
        if e["other"] is None:
            lines.append(f"  {t}: value {e['value']:.4f}, no gradient")
            continue
        parts = [f"{g} {v:.1%}" for g, v in e["shares"].items() if v and v >= 5e-4]
        if e["other"] >= 5e-4:
            parts.append(f"other outputs {e['other']:.1%}")
        lines.append(f"  {t}: value {e['value']:.4f}, |d/d outputs| {e['output_grad_norm']:.3g}; " + ", ".join(parts))
    return lines
