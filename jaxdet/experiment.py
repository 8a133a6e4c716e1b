"""A training run with its evaluation: the one place that puts training and evaluation
together (neither imports the other). `experiments.train`, sweeps and the tests start runs here.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import ml_collections

from jaxdet import config_fields
from jaxdet.evaluation import coco
from jaxdet.evaluation.evaluator import Evaluation
from jaxdet.evaluation.session import EvalSession
from jaxdet.training import loop


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, devices: Sequence[jax.Device] | None = None
) -> dict[str, float]:
    """Trains `config` in `workdir` (resuming if it holds checkpoints), evaluating its model on
    the evaluation split every train.eval_every steps and at the end; returns the final
    evaluation's metrics (see training.loop.train_and_evaluate for stops and errors)."""
    coco.check_metric(config.train.best_metric)  # (before anything is built: the run picks checkpoints by it)

    def evaluation(run) -> Evaluation:
        return Evaluation(EvalSession(run.config, run.classes, run.detector, run.mesh, run.workdir, run.writer))

    return loop.train_and_evaluate(config, workdir, devices, evaluation)


def evaluate_checkpoint(config, workdir: str, which: str = "latest", out: str | None = None) -> dict[str, float]:
    """evaluation's `evaluate_checkpoint`, able to read an EMA run's trained weights
    (`config.eval.weights="trained"`) from its training state."""
    from jaxdet.evaluation.evaluator import evaluate_checkpoint as evaluate

    return evaluate(config, workdir, which, out=out, training_items=_training_items)


def _training_items(config: ml_collections.ConfigDict, detector, mesh) -> dict:
    """Both checkpoint items of a freshly initialised TrainState of the run's structure."""
    from jaxdet.training import optim
    from jaxdet.training.step import init_key, init_state

    tx, _ = optim.make_optimizer(config.optim, config.train.steps, config.model)
    key = init_key(config_fields.seed_of(config, "init"))
    return init_state(detector, tx, key, config.data.image_size, mesh, with_ema=True).items()
