"""`EvalSession`: what evaluating a detector on a config's evaluation split builds once
(the split, its batch size, the compiled eval step, where results go). A training run
builds one beside its own state (jaxdet/experiment.py), `evaluate_checkpoint` one alone;
nothing here knows about training."""

from __future__ import annotations

import os

import jax
import ml_collections
from jax.sharding import Mesh

from jaxdet import configs, detectors, kernels, postprocess, summary
from jaxdet.console import log
from jaxdet.data import fit, pipeline, sources
from jaxdet.data.classes import Classes
from jaxdet.detectors import inference
from jaxdet.errors import ConfigError
from jaxdet.parallel import AXIS


class EvalSession:
    """The evaluation split of `config` (resolved) for `detector` on `mesh`, with `classes`.

    Metrics rows go to `writer` (a training run's own, or a new one in `output_dir`); the
    analysis files to `output_dir` (default workdir/eval); prediction pictures to
    workdir/predictions.
    """

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        classes: Classes,
        detector,
        mesh: Mesh,
        workdir: str,
        writer: summary.MetricWriter | None = None,
        output_dir: str | None = None,
    ):
        self.config, self.classes, self.detector, self.mesh, self.workdir = config, classes, detector, mesh, workdir
        self.class_names = list(classes.names)
        self.eval_batch_size = configs.eval_batch_size(config, mesh.size)
        pi, pc = jax.process_index(), jax.process_count()
        source = sources.load(config.data, "eval", pi, pc, log=log)
        self.eval_source = source.take(0, config.data.eval_max_images // pc) if config.data.eval_max_images else source
        if not config.data.max_boxes:  # (a config no training run resolved; the metrics' ground truth is never cut)
            config.data.max_boxes = fit.resolve_max_boxes(config.data, source.annotations().box_counts(), log)
        self._whole = None  # multi-process: the unsharded split's annotations, for COCO ground truth
        self.eval_step = inference.make_eval_step(detector, mesh, tta(config, len(self.class_names), mesh))
        self.analysis_dir = output_dir or os.path.join(workdir, "eval")
        self.writer = writer or summary.MetricWriter(output_dir or workdir)
        # The last evaluation's per-class table and error breakdown (logged at the end).
        self.per_class_table: str | None = None
        self.error_lines: list[str] = []

    def pipeline(self, source, workers: int | None = None) -> pipeline.Pipeline:
        return pipeline.Pipeline.from_config(source, self.config.data, workers)

    def full_eval_table(self):
        """The whole evaluation split's annotations (read once; TFDS records are read for it)."""
        if self._whole is not None:
            return self._whole
        if jax.process_count() == 1:
            self._whole = self.eval_source.annotations()
            return self._whole
        cfg = self.config
        src = sources.load(cfg.data, "eval", log=lambda line: None)
        src = src.take(0, cfg.data.eval_max_images) if cfg.data.eval_max_images else src
        self._whole = src.annotations()
        return self._whole


def tta(config: ml_collections.ConfigDict, num_classes: int, mesh: Mesh) -> inference.TTA | None:
    """The eval step's test-time augmentation from config.eval: `tta` ("" or "hflip": the
    mirrored images too), `tta_sizes` (more canvas sides, each with its own detector) and
    `tta_merge` ("nms" or "wbf"); None when neither adds a view."""
    ev = config.get("eval", {})
    flip, merge = ev.get("tta", ""), ev.get("tta_merge", "nms")
    sizes = configs.check_sizes("config.eval.tta_sizes", ev.get("tta_sizes", ()), config.model.max_level)
    if flip not in ("", "hflip"):
        raise ConfigError(f"config.eval.tta={flip!r}; valid: '' (off) or 'hflip' (the mirrored images too)")
    if merge not in postprocess.MERGES:
        raise ConfigError(f"config.eval.tta_merge={merge!r}; valid: {postprocess.MERGES} (class-aware NMS, or fusion)")
    sizes = tuple(size for size in sizes if size != config.data.image_size)
    if not flip and not sizes:
        return None
    platform = kernels.platform(mesh.devices.flat)
    built = detectors.build_at_sizes(config, sizes, "config.eval.tta_sizes", num_classes, AXIS, platform, mesh.size)
    m = config.model
    return inference.TTA(
        bool(flip), tuple((size, built[size]) for size in sizes), merge, m.nms_iou_threshold, m.max_detections
    )
