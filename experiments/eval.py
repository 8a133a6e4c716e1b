"""Evaluate a trained run: COCO metrics, validation loss, per-class AP, PR curves, errors.

    python -m experiments.eval --config=experiments/configs/default.py --workdir=runs/default
    python -m experiments.eval --config=... --workdir=... --checkpoint=best      # or latest, or a step

Writes workdir/eval/{per_class.md, pr_curves.png, errors.txt} and prints the table.
"""

from absl import app, flags, logging
from ml_collections import config_flags

from jaxdet import loop
from jaxdet.errors import ConfigError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to the run's config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "The run's directory.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", "latest", "latest, best (by train.best_metric) or a step number.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    try:
        loop.evaluate_checkpoint(_CONFIG.value, _WORKDIR.value, _CHECKPOINT.value)
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    app.run(main)
