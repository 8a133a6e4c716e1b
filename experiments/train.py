"""Train and evaluate a detector.

    python -m experiments.train --config=experiments/configs/default.py --workdir=runs/default

Override any config field with --config.section.field=value. Re-running with the same
--workdir resumes from its latest checkpoint.
"""

from absl import app, flags, logging
from ml_collections import config_flags

import jaxdet  # noqa: F401  (registers the embedded dataset)
from jaxdet import loop
from jaxdet.errors import ConfigError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file (get_config).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and pictures.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO.
    try:
        loop.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except ConfigError as e:
        # Config and set-up errors are the user's to fix: show the message, not a traceback.
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    app.run(main)
