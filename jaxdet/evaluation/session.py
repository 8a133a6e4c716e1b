"""`EvalSession`: what evaluating a detector on a config's evaluation split builds once
(the split, its batch size, the compiled eval step, where results go). A training run
builds one beside its own state (jaxdet/experiment.py), `evaluate_checkpoint` one alone;
nothing here knows about training."""

from __future__ import annotations

import os

import jax
import ml_collections
from jax.sharding import Mesh

from jaxdet import configs, summary
from jaxdet.console import log
from jaxdet.data import pipeline, sources
from jaxdet.data.classes import Classes
from jaxdet.detectors import inference
from jaxdet.errors import ConfigError


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
        self._whole = None  # multi-process: the unsharded split's annotations, for COCO ground truth
        self.eval_step = inference.make_eval_step(detector, mesh, flip_tta(config))
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


def flip_tta(config: ml_collections.ConfigDict) -> dict | None:
    """`config.eval.tta` ("" or "hflip"): the eval step's flip_tta arguments, or None."""
    tta = config.get("eval", {}).get("tta", "")
    if tta not in ("", "hflip"):
        raise ConfigError(f"config.eval.tta={tta!r}; valid: '' (off) or 'hflip' (the mirrored images too)")
    if not tta:
        return None
    m = config.model
    return dict(iou_threshold=m.nms_iou_threshold, max_detections=m.max_detections, nms_form="plain")
