"""Run an ablation: every combination of --sweep values, for every seed, then results.md/.png.

    python -m experiments.sweep --config=experiments/configs/default.py --workdir=runs/box_loss \
        --sweep='loss.localization=smooth_l1,l1,giou,diou,ciou' --seeds=0-2

On a local Ray instance (2 arms at a time on a 2-core machine), a Ray cluster, or SLURM:

    python -m experiments.sweep ... --launcher=ray --cpus_per_arm=1
    python -m experiments.sweep ... --launcher=ray --ray_address=auto --gpus_per_arm=1
    python -m experiments.sweep ... --launcher=slurm --slurm=partition=gpu,timeout_min=600 --gpus_per_arm=1

Several --sweep flags make a grid. Re-running the command skips finished arms; --seeds
with more seeds extends a finished sweep, running only the new ones. results.md compares
every arm with its baseline seed by seed (paired t-test, Holm's correction, CI, verdict,
seeds needed). --until_decided runs the seeds in rounds and stops each comparison once it
is decided: better, worse, equivalent within --margin, or undecided at --max_seeds

    python -m experiments.sweep ... --until_decided --margin=0.005 --max_seeds=10

--variance=K runs a K x K factorial over seeds.init x seeds.data and writes variance.md:
each source's share of the AP variance (jaxdet/sweep/variance.py).
"""

import os

from absl import flags
from ml_collections import config_flags

from experiments import cli
from jaxdet import experiment, sweep
from jaxdet.errors import ConfigError
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
_UNTIL = flags.DEFINE_bool(
    "until_decided", False, "Run seeds in rounds and stop each comparison once decided (jaxdet/sweep/sequential.py)."
)
_ROUND = flags.DEFINE_integer("seed_round", 0, "--until_decided: seeds per round (0: the launcher's concurrency).")
_MAX_SEEDS = flags.DEFINE_integer("max_seeds", 10, "--until_decided: the most seeds an arm gets (undecided there).")
_MARGIN = flags.DEFINE_float(
    "margin", 0.0, "--until_decided: the AP difference within which arms are equivalent (0: no equivalence verdict)."
)
_SPENDING = flags.DEFINE_enum(
    "spending",
    "obf",
    ["obf", "pocock"],
    "--until_decided: the alpha-spending function (O'Brien-Fleming or Pocock type).",
)
_ALPHA = flags.DEFINE_float("alpha", 0.05, "--until_decided: the chance that any verdict is wrong, at most.")
_VARIANCE = flags.DEFINE_integer(
    "variance", 0, "K: a K x K factorial over seeds.init x seeds.data, and each source's share of the AP variance."
)
_SLURM_CLUSTER = flags.DEFINE_string("slurm_cluster", None, "submitit's cluster: None (SLURM if present) or 'local'.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    cli.start(argv)
    # (After a preemption, re-running the sweep resumes the arm in flight and skips finished arms.)
    with cli.user_errors():
        runtime.set_cpu_devices(_CONFIG.value.train.cpu_devices)  # (one count for every arm: the base config's)
        runtime.enable_compilation_cache(_CONFIG.value.train.compilation_cache_dir)
        specs = _SWEEP.value
        if _VARIANCE.value:
            if specs or _UNTIL.value:
                raise ConfigError("--variance runs its own factorial: give it without --sweep and --until_decided")
            specs = sweep.variance.grid(_VARIANCE.value)
        grid = sweep.parse_sweep(_CONFIG.value, specs) if specs else [{}]
        seeds = sweep.parse_seeds(_SEEDS.value)
        if _VARIANCE.value and len(seeds) != 1:
            raise ConfigError(f"--variance: one --seeds value (config.seed, the train step's draws); got {seeds}")
        if _ADD_SEEDS.value:
            seeds = sweep.with_added_seeds(_WORKDIR.value, seeds, _ADD_SEEDS.value)
        cli.record_recipe(_WORKDIR.value, flags.FLAGS["config"])
        launcher = lambda: sweep.make_launcher(_LAUNCHER.value, _WORKDIR.value, **_launcher_options())  # noqa: E731
        run = experiment.train_and_evaluate
        if _UNTIL.value:
            design = sweep.sequential.Design(
                _ALPHA.value, _MARGIN.value, _seed_round(), _MAX_SEEDS.value, _SPENDING.value
            )
            pool = sweep.until_decided.seed_pool(seeds, _MAX_SEEDS.value)
            records, verdicts = sweep.until_decided.run_until_decided(
                _CONFIG.value, _WORKDIR.value, grid, pool, run, launcher, _RETRIES.value, design, _BASELINE.value
            )
            table = sweep.until_decided.verdict_table(verdicts, design)
            md, png = sweep.write_results(records, _WORKDIR.value, _BASELINE.value, sequential=table)
        else:
            records = sweep.run_sweep(_CONFIG.value, _WORKDIR.value, grid, seeds, run, launcher, _RETRIES.value)
            md, png = sweep.write_results(records, _WORKDIR.value, _BASELINE.value)
            if _VARIANCE.value:
                print(open(sweep.variance.write(records, _WORKDIR.value)).read())
    print(open(md).read())
    print(f"wrote {md} and {png}")


def _seed_round() -> int:
    """--seed_round, 0: the launcher's concurrency (serial 1; local Ray / submitit: the cores
    over --cpus_per_arm; a cluster: 2)."""
    if _ROUND.value:
        return _ROUND.value
    if _LAUNCHER.value == "serial":
        return 1
    local = _RAY_ADDRESS.value is None if _LAUNCHER.value == "ray" else _SLURM_CLUSTER.value == "local"
    return max(1, int((os.cpu_count() or 1) // max(_CPUS.value, 1e-9))) if local else 2


def _launcher_options() -> dict:
    if _LAUNCHER.value == "ray":
        return dict(address=_RAY_ADDRESS.value, cpus_per_arm=_CPUS.value, gpus_per_arm=_GPUS.value)
    if _LAUNCHER.value == "slurm":
        return dict(cluster=_SLURM_CLUSTER.value, cpus_per_arm=int(_CPUS.value), gpus_per_arm=int(_GPUS.value),
                    slurm=sweep.parse_slurm(_SLURM.value))  # fmt: skip
    return {}


if __name__ == "__main__":
    cli.run(main)
