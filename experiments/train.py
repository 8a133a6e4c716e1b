"""Train and evaluate a detector.

    python -m experiments.train --config=experiments/configs/default.py --workdir=runs/default

Override any config field with --config.section.field=value. Re-running with the same
--workdir resumes from its latest checkpoint. SIGTERM or Ctrl-C saves a checkpoint at the
current step and exits with status 128 + the signal number (143, 130).
"""

from absl import flags
from ml_collections import config_flags

from experiments import cli
from jaxdet import experiment
from jaxdet.training import runtime

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file (get_config).", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for checkpoints, metrics and pictures.")
flags.mark_flags_as_required(["config", "workdir"])
# Multi-process runs (see docs/scaling.md). Left unset: a single process, or under SLURM,
# on a TPU pod or under Open MPI, jax.distributed.initialize() reads the environment.
_COORDINATOR = flags.DEFINE_string("jax_coordinator_address", "", "host:port of process 0.")
_NUM_PROCESSES = flags.DEFINE_integer("jax_num_processes", 0, "Number of processes in the run.")
_PROCESS_ID = flags.DEFINE_integer("jax_process_id", -1, "This process's index, 0..num_processes-1.")
_INIT_TIMEOUT = flags.DEFINE_integer("jax_initialization_timeout", 300, "Seconds to wait for the coordinator.")


def main(argv):
    cli.start(argv)
    with cli.user_errors():  # (the loop printed where a preemption checkpoint is)
        runtime.set_cpu_devices(_CONFIG.value.train.cpu_devices)
        runtime.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value, _INIT_TIMEOUT.value)
        runtime.enable_compilation_cache(_CONFIG.value.train.compilation_cache_dir)
        cli.record_recipe(_WORKDIR.value, flags.FLAGS["config"])
        experiment.train_and_evaluate(_CONFIG.value, _WORKDIR.value)


if __name__ == "__main__":
    cli.run(main)
