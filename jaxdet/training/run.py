"""`Run`: everything one training run builds once, from a config and a workdir: the mesh,
the training split, the detector, the optimizer and the compiled steps. (Its evaluation
split and eval step are an evaluation.session.EvalSession, built beside it.)"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import ml_collections

from jaxdet import config_fields, configs, detectors, kernels, parallel, summary
from jaxdet.console import log as _log
from jaxdet.data import fit, pipeline, sources
from jaxdet.data.classes import Classes
from jaxdet.detectors import inference, reach
from jaxdet.errors import ConfigError
from jaxdet.training import ema, init_from, optim, param_groups, runtime
from jaxdet.training.step import (
    TrainState,
    init_key,
    init_state,
    make_term_grad_step,
    make_train_step,
    shard_train_step,
)


class Run:
    """Holds everything one run builds once: mesh, data, detector, optimizer, compiled steps."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str, devices: Sequence[jax.Device] | None = None):
        """Checks `config` (ConfigError naming the first bad field) and builds the run; metrics
        and TensorBoard go to the workdir."""
        self.config = config = configs.resolve(config)
        self.workdir = workdir
        self.mesh = parallel.make_mesh(devices)
        configs.validate(config, self.mesh.size, jax.process_count())
        optim.check(config.optim)
        ema.check(config.optim)
        if config.model.get("init_from"):
            init_from.parse(config.model.init_from)  # neither a run nor a weights file: refused before any work
        if config.eval.get("weights", "model") != "model":
            raise ConfigError(
                f"config.eval.weights={config.eval.weights!r} is for experiments.eval / experiments.sweep_eval on a "
                "finished run: training's evaluations read the checkpoints' model item, which the best checkpoint keeps"
            )
        runtime.check_processes_agree(configs.fingerprint(config))
        # The whole training split's annotations on every process; each reads the images of its
        # slice of every global batch, so a run's batches do not depend on the number of processes.
        self.train_source = src = sources.load(config.data, "train", log=_log)
        self.classes = Classes.of_model(src.class_names, src.category_ids, config.model.num_classes)
        self.class_names = list(self.classes.names)
        # data.max_boxes = 0: fitted to the split, and recorded so (a resume fits it again, equal).
        config.data.max_boxes = fit.resolve_max_boxes(config.data, src.annotations().box_counts(), log=_log)
        # One detector and one step per canvas size (multi-scale training: data.train_sizes),
        # sharing one set of weights; each step compiles at its first call, once per size.
        train_sizes = tuple(config.data.get("train_sizes", ())) or (config.data.image_size,)
        by_size = detectors.build_at_sizes(
            config, train_sizes, "config.data.train_sizes", len(self.class_names),
            parallel.AXIS, kernels.platform(self.mesh.devices.flat), self.mesh.size,
        )  # fmt: skip
        self.detector = by_size[config.data.image_size]
        if config.data.get("fit_report", True):  # what the detector's priors can reach of these boxes
            for line in reach.report_lines(self.detector, src.annotations(), config):
                _log(line)
        self.tx, self.lr = optim.make_optimizer(config.optim, config.train.steps, config.model)
        # Each parameter group with its size (a group that matches nothing is refused here, at start-up).
        shapes = inference.abstract_variables(self.detector, config.data.image_size, self.mesh)["params"]
        self.group_lines = param_groups.describe(shapes, param_groups.of_config(config.optim, config.model))
        self._steps = {
            size: (
                shard_train_step(make_train_step(det, self.tx, self.lr, config.optim), self.mesh),
                make_term_grad_step(det, self.mesh),
            )
            for size, det in by_size.items()
            if size in train_sizes
        }
        self.sizes_used: list[int] = []
        self.base_rng = jax.random.key(config_fields.seed_of(config, "step"))
        self.writer = summary.MetricWriter(workdir)

    def steps_for(self, size: int) -> tuple[Callable, Callable, bool]:
        """(train step, term-gradient step, first use) for a batch of size x size canvases."""
        if size not in self._steps:
            raise ValueError(f"a {size} px training batch: the run has steps for {sorted(self._steps)} px only")
        first = size not in self.sizes_used
        if first:
            self.sizes_used.append(size)
            if len(self._steps) > 1:
                n, of = len(self.sizes_used), len(self._steps)
                _log(f"multi-scale training: compiling the step for {size} px ({n} of {of} sizes)")
        return (*self._steps[size], first)

    def initial_state(self, pretrained: bool = False) -> TrainState:
        """Freshly initialised state; with `pretrained`, the weights config.model.init_from
        names (training/init_from.py: another run or a weights file, onto this run's classes)
        or torchvision's (config.model.backbone_weights / detector_weights) loaded into it."""
        with_ema = ema.enabled(self.config.optim)
        key = init_key(config_fields.seed_of(self.config, "init"))
        state = init_state(self.detector, self.tx, key, self.config.data.image_size, self.mesh, with_ema)
        m = self.config.model
        if not pretrained or not (m.get("backbone_weights") or m.get("detector_weights") or m.get("init_from")):
            return state
        host = jax.device_get(state.variables)
        if m.get("init_from"):
            loaded = init_from.transfer(self.config, host, self.class_names, self.mesh, log=_log)
        else:
            from jaxdet.models import convert  # torch is imported only when weights are loaded

            loaded = convert.load_pretrained(m, host, detectors.get_definition(m.name).convert, log=_log)
        replicated = jax.sharding.NamedSharding(self.mesh, jax.sharding.PartitionSpec())
        loaded = jax.device_put(loaded, replicated)
        # The optimizer state depends on the parameters' shapes only, so it stays as initialised
        # (a new run: nothing of the source's optimizer, step or EMA carries over).
        loaded = {"params": loaded["params"], "batch_stats": loaded["batch_stats"]}
        return state.replace(**loaded, ema=loaded if with_ema else None)

    def pipeline(self, source, workers: int | None = None) -> pipeline.Pipeline:
        return pipeline.Pipeline.from_config(source, self.config.data, workers)
