"""Evaluate a trained run: COCO metrics, validation loss, per-class AP, PR curves, errors.

    python -m experiments.eval --workdir=runs/default [--checkpoint=best|latest|STEP]
    python -m experiments.eval --workdir=... --config=...     # evaluate with another config (e.g. data)

Without --config, the config the run recorded (workdir/config.json) is used; the class
names always come from workdir/classes.json, and the training split is not read.

Writes workdir/eval/{per_class.md, pr_curves.png, errors.txt} and prints the table.
"""

from absl import flags
from ml_collections import config_flags

from experiments import cli
from jaxdet.evaluation import evaluator

_CONFIG = config_flags.DEFINE_config_file("config", None, "A config file (default: the run's own).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "The run's directory.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", "latest", "latest, best (by train.best_metric) or a step number.")
flags.mark_flags_as_required(["workdir"])


def main(argv):
    cli.start(argv)
    with cli.user_errors():
        evaluator.evaluate_checkpoint(_CONFIG.value, _WORKDIR.value, _CHECKPOINT.value)


if __name__ == "__main__":
    cli.run(main)
