"""Train and evaluate a detector.

    python -m experiments.train --config=experiments/configs/default.py --workdir=runs/default

Override any config field with --config.section.field=value. Re-running with the same
--workdir resumes from its latest checkpoint. SIGTERM or Ctrl-C saves a checkpoint at the
current step and exits with status 128 + the signal number (143, 130).
"""

from absl import app, flags, logging
from ml_collections import config_flags

from jaxdet import loop, preemption, runtime
from jaxdet.errors import ConfigError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file (get_config).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and pictures.")
flags.mark_flags_as_required(["config", "workdir"])
# Multi-process runs (see README "Scaling"). Left unset: a single process, or under SLURM,
# on a TPU pod or under Open MPI, jax.distributed.initialize() reads the environment.
_COORDINATOR = flags.DEFINE_string("jax_coordinator_address", "", "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("jax_num_processes", 0, "Number of processes in the run.")
_PROCESS_ID = flags.DEFINE_integer("jax_process_id", -1, "This process's index, 0..num_processes-1.")
_INIT_TIMEOUT = flags.DEFINE_integer("jax_initialization_timeout", 300, "Seconds to wait for the coordinator.")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO.
    try:
        runtime.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value, _INIT_TIMEOUT.value)
        runtime.enable_compilation_cache(_CONFIG.value.train.compilation_cache_dir)
        loop.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
    except preemption.Preempted as e:
        # The loop printed where the checkpoint is; the status tells a scheduler it did not finish.
        raise SystemExit(e.exit_code) from None
    except ConfigError as e:
        # Config and set-up errors are the user's to fix: show the message, not a traceback.
        raise SystemExit(f"error: {e}") from None


if __name__ == "__main__":
    app.run(main)
