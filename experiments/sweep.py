"""Run an ablation: every combination of --sweep values, for every seed, then results.md/.png.

    python -m experiments.sweep --config=experiments/configs/default.py --workdir=runs/box_loss \
        --sweep='loss.localization=smooth_l1,l1,giou,diou,ciou' --seeds=0-2

On a local Ray instance (2 arms at a time on a 2-core machine), a Ray cluster, or SLURM:

    python -m experiments.sweep ... --launcher=ray --cpus_per_arm=1
    python -m experiments.sweep ... --launcher=ray --ray_address=auto --gpus_per_arm=1
    python -m experiments.sweep ... --launcher=slurm --slurm=partition=gpu,timeout_min=600 --gpus_per_arm=1

Several --sweep flags make a grid. Re-running the command skips finished arms; --seeds
with more seeds extends a finished sweep, running only the new ones. results.md compares
every arm with its baseline seed by seed (paired t-test, CI, verdict, seeds needed).
"""

from absl import flags
from ml_collections import config_flags

from experiments import cli
from jaxdet import experiment, sweep
from jaxdet.training import runtime

_CONFIG = config_flags.DEFINE_config_file("config", None, "Base config file.", lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Sweep directory; each arm gets a sub-directory.")
_SWEEP = flags.DEFINE_multi_string("sweep", [], "KEY=V1,V2,... (repeatable: a grid).")
_SEEDS = flags.DEFINE_list("seeds", ["0"], "Seeds: comma-separated seeds or ranges, e.g. 0-9 or 0,1,5-7.")
_ADD_SEEDS = flags.DEFINE_integer(
    "add_seeds", 0, "Extends the sweep in --workdir by N new seeds (after its largest); finished runs are kept."
)
_BASELINE = flags.DEFINE_string(
    "baseline", None, "The first --sweep axis' value the other arms are compared with (default: its first value)."
)
_LAUNCHER = flags.DEFINE_enum("launcher", "serial", sweep.LAUNCHERS, "Where the (arm, seed) runs run.")
_RETRIES = flags.DEFINE_integer(
    "retries", 1, "Retries of a failed run (ray, slurm), each resuming from its checkpoints."
)
_CPUS = flags.DEFINE_float("cpus_per_arm", 1, "CPUs per run (ray, slurm).")
_GPUS = flags.DEFINE_float("gpus_per_arm", 0, "GPUs per run (ray, slurm).")
_RAY_ADDRESS = flags.DEFINE_string("ray_address", None, "auto or HOST:PORT: join a Ray cluster (default: a local one).")
_SLURM = flags.DEFINE_list(
    "slurm", [], "submitit executor parameters KEY=VALUE, e.g. partition=gpu,timeout_min=600,account=lab."
)
_SLURM_CLUSTER = flags.DEFINE_string("slurm_cluster", None, "submitit's cluster: None (SLURM if present) or 'local'.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    cli.start(argv)
    # (After a preemption, re-running the sweep resumes the arm in flight and skips finished arms.)
    with cli.user_errors():
        runtime.set_cpu_devices(_CONFIG.value.train.cpu_devices)  # (one count for every arm: the base config's)
        runtime.enable_compilation_cache(_CONFIG.value.train.compilation_cache_dir)
        grid = sweep.parse_sweep(_CONFIG.value, _SWEEP.value) if _SWEEP.value else [{}]
        seeds = sweep.parse_seeds(_SEEDS.value)
        if _ADD_SEEDS.value:
            seeds = sweep.with_added_seeds(_WORKDIR.value, seeds, _ADD_SEEDS.value)
        cli.record_recipe(_WORKDIR.value, flags.FLAGS["config"])
        launcher = sweep.make_launcher(_LAUNCHER.value, _WORKDIR.value, **_launcher_options())
        records = sweep.run_sweep(
            _CONFIG.value, _WORKDIR.value, grid, seeds, experiment.train_and_evaluate, launcher, _RETRIES.value
        )
        md, png = sweep.write_results(records, _WORKDIR.value, _BASELINE.value)
    print(open(md).read())
    print(f"wrote {md} and {png}")


def _launcher_options() -> dict:
    if _LAUNCHER.value == "ray":
        return dict(address=_RAY_ADDRESS.value, cpus_per_arm=_CPUS.value, gpus_per_arm=_GPUS.value)
    if _LAUNCHER.value == "slurm":
        return dict(cluster=_SLURM_CLUSTER.value, cpus_per_arm=int(_CPUS.value), gpus_per_arm=int(_GPUS.value),
                    slurm=sweep.parse_slurm(_SLURM.value))  # fmt: skip
    return {}


if __name__ == "__main__":
    cli.run(main)
