"""Ablation sweeps: a grid of config overrides x seeds, each (arm, seed) trained in its own
sub-workdir, then tabulated with paired statistics. For a given seed every arm sees the
same data order and the same initialisation key (both depend only on `config.seed`), so
arms are compared seed by seed.

grid.py: the arms and seeds; runs.py: running them (tasks.py: one run as a unit of work;
launchers.py: serial, Ray, SLURM through submitit); stats.py: paired comparisons;
sequential.py + until_decided.py: --until_decided (seeds in rounds until each comparison is decided);
variance.py: --variance (where the seed-to-seed spread comes from);
results.py: results.md / results.json / results.png; evaluations.py: evaluation-only arms
(eval.* settings such as TTA) over a finished sweep's checkpoints.
"""

from jaxdet.sweep import sequential, until_decided, variance
from jaxdet.sweep.grid import apply, arm_name, parse_seeds, parse_sweep
from jaxdet.sweep.launchers import LAUNCHERS, make_launcher, parse_slurm
from jaxdet.sweep.results import write_results
from jaxdet.sweep.runs import existing_seeds, final_eval, run_sweep, with_added_seeds

__all__ = [
    "LAUNCHERS",
    "sequential",
    "until_decided",
    "variance",
    "make_launcher",
    "parse_slurm",
    "apply",
    "arm_name",
    "existing_seeds",
    "final_eval",
    "parse_seeds",
    "parse_sweep",
    "run_sweep",
    "with_added_seeds",
    "write_results",
]
