"""Evaluate a trained run: COCO metrics, validation loss, per-class AP, PR curves, errors.

    python -m experiments.eval --workdir=runs/default [--checkpoint=best|latest|STEP]
    python -m experiments.eval --workdir=... --config=...     # evaluate with another config (e.g. data)
    python -m experiments.eval --workdir=... --weights=trained  # an EMA run's weights without the EMA

Without --config, the config the run recorded (workdir/config.json) is used; the class
names always come from workdir/classes.json, and the training split is not read.

Writes metrics.jsonl, config.json, per_class.md, pr_curves.png, errors.txt and detections.json
(COCO results with the dataset's own ids) to --out, by default workdir/eval/step<N> (or
step<N>-config-<hash> with another config), and prints the table. The run's own
metrics.jsonl is never touched: it holds the training's evaluations only.
"""

from absl import flags
from ml_collections import config_flags

from experiments import cli
from jaxdet import configs, experiment

_CONFIG = config_flags.DEFINE_config_file("config", None, "A config file (default: the run's own).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "The run's directory.")
_CHECKPOINT = flags.DEFINE_string("checkpoint", "latest", "latest, best (by train.best_metric) or a step number.")
_OUT = flags.DEFINE_string("out", None, "Output directory (default: workdir/eval/step<N>[-config-<hash>]).")
_WEIGHTS = flags.DEFINE_enum(
    "weights", None, ["model", "trained"],
    "Sets eval.weights: model (the checkpoints' model item: the EMA when the run keeps one) or trained "
    "(an EMA run's trained weights: the run without its EMA).",
)  # fmt: skip
flags.mark_flags_as_required(["workdir"])


def main(argv):
    cli.start(argv)
    with cli.user_errors():
        config = _CONFIG.value
        if _WEIGHTS.value is not None:
            config = config if config is not None else configs.load_recorded(_WORKDIR.value)[0]
            with config.unlocked():
                config.eval.weights = _WEIGHTS.value
        experiment.evaluate_checkpoint(config, _WORKDIR.value, _CHECKPOINT.value, out=_OUT.value)


if __name__ == "__main__":
    cli.run(main)
