"""`Run`: everything one run builds once, from a config and a workdir: the mesh, the data
sources, the detector, the optimizer and the compiled steps."""

from __future__ import annotations

import os
from collections.abc import Sequence

import jax
import ml_collections

from jaxdet import configs, detectors, kernels, parallel
from jaxdet.data import pipeline, sources
from jaxdet.data.classes import Classes
from jaxdet.detectors import inference
from jaxdet.training import optim, runtime, summary
from jaxdet.training import step as train
from jaxdet.training.progress import log as _log


class Run:
    """Holds everything one run builds once: mesh, data, detector, optimizer, compiled steps."""

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        workdir: str,
        devices: Sequence[jax.Device] | None = None,
        classes: Classes | None = None,
        output_dir: str | None = None,
    ):
        """With `classes` (a recorded run's), only the evaluation split is loaded. Metrics and
        TensorBoard go to `output_dir` (default: the workdir)."""
        self.config = config = configs.resolve(config)
        self.workdir = workdir
        self.mesh = parallel.make_mesh(devices)
        configs.validate(config, self.mesh.size, jax.process_count())
        self.eval_batch_size = configs.eval_batch_size(config, self.mesh.size)
        runtime.check_processes_agree(configs.fingerprint(config))
        pi, pc = jax.process_index(), jax.process_count()
        # The whole training split's annotations on every process; each reads the images of its
        # slice of every global batch, so a run's batches do not depend on the number of processes.
        self.train_source = None if classes else sources.load(config.data, "train", log=_log)
        eval_source = sources.load(config.data, "eval", pi, pc, log=_log)
        if config.data.eval_max_images:
            eval_source = eval_source.take(0, config.data.eval_max_images // pc)
        self.eval_source = eval_source
        self._whole_eval = None  # multi-process: the unsharded split's annotations, for COCO ground truth
        if classes is None:
            src = self.train_source
            classes = Classes.of_model(src.class_names, src.category_ids, config.model.num_classes)
        self.classes = classes
        self.class_names = list(classes.names)
        self.detector = detectors.build_detector(
            config, len(self.class_names), parallel.AXIS, kernels.platform(self.mesh.devices.flat), self.mesh.size
        )
        self.tx, self.lr = optim.make_optimizer(config.optim, config.train.steps)
        self.train_step = train.shard_train_step(train.make_train_step(self.detector, self.tx, self.lr), self.mesh)
        self.eval_step = inference.make_eval_step(self.detector, self.mesh)
        self.term_grad_step = train.make_term_grad_step(self.detector, self.mesh)
        self.base_rng = jax.random.key(config.seed)
        # A training run's own evaluation writes workdir/metrics.jsonl and workdir/eval/; an
        # evaluation on its own (experiments.eval) writes everything to its output_dir.
        self.analysis_dir = os.path.join(workdir, "eval") if output_dir is None else output_dir
        self.writer = summary.MetricWriter(output_dir or workdir)

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

        host = jax.device_get(state.variables)
        loaded = convert.load_pretrained(m, host, detectors.get_definition(m.name).convert, log=_log)
        replicated = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())
        loaded = jax.device_put(loaded, replicated)
        # The optimizer state depends on the parameters' shapes only, so it stays as initialised.
        return state.replace(params=loaded["params"], batch_stats=loaded["batch_stats"])

    def pipeline(self, source, workers: int | None = None) -> pipeline.Pipeline:
        d = self.config.data
        return pipeline.Pipeline(
            source, d.image_size, d.max_boxes, d.workers if workers is None else workers, d.skip_bad
        )

    def full_eval_table(self):
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
