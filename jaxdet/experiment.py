"""A training run with its evaluation: the one place that puts training and evaluation
together (neither imports the other). `experiments.train`, sweeps and the tests start runs here.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import ml_collections

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
