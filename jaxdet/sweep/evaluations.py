"""Evaluation arms over a finished sweep: every (arm, seed) checkpoint re-evaluated under
each combination of `eval.*` overrides (test-time augmentation, its sizes and merge), with
no training, then the same paired tables as the sweep's, compared along the evaluation
axes within each training arm and seed.

Training is what costs; an evaluation setting (TTA on or off, its sizes) changes nothing
in training, so its ablation re-uses the sweep's checkpoints and pairs each setting with
the plain evaluation of the very same weights. Each (run, setting) evaluation is kept in
`<run>/eval/<setting>-<checkpoint>/` and not repeated when the command runs again.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence

import ml_collections

from jaxdet import configs
from jaxdet.errors import ConfigError
from jaxdet.sweep.grid import apply, arm_name, parse_sweep

_RESULT = "evaluation.json"  # {"metrics": ..., "seconds": ...} beside the evaluation's own outputs


def _finished_sweep(workdir: str) -> tuple[dict[str, dict], list[int]]:
    """The sweep's training arms ({name: overrides}) and seeds, from its results.json."""
    path = os.path.join(workdir, "results.json")
    if not os.path.exists(path):
        raise ConfigError(
            f"{path} does not exist: evaluation arms re-use a finished sweep's checkpoints; run the sweep "
            f"(python -m experiments.sweep --workdir={workdir} ...) to its end first"
        )
    with open(path) as f:
        saved = json.load(f)
    return {name: arm["overrides"] for name, arm in saved["arms"].items()}, saved["seeds"]


def parse_eval_grid(config: ml_collections.ConfigDict, specs: Sequence[str]) -> list[dict[str, object]]:
    """`--sweep` specs that change evaluation only (`eval.*` fields) -> the grid."""
    grid = parse_sweep(config, specs)
    for key in grid[0]:
        trained = [k for k in key.split(",") if not k.startswith("eval.")]
        if trained:
            raise ConfigError(
                f"--sweep {key}=...: evaluation arms change eval.* fields only (the checkpoints are fixed); "
                f"{trained[0]} changes training: sweep it with python -m experiments.sweep"
            )
    return grid


def evaluate_arms(
    workdir: str,
    specs: Sequence[str],
    checkpoint: str,
    evaluate: Callable,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """One record per (training arm, seed, evaluation arm), shaped as the sweep's
    (results.write_results): overrides = the training arm's and the evaluation arm's.
    `evaluate(config, run_workdir, checkpoint, out=...)` -> metrics
    (jaxdet.experiment.evaluate_checkpoint, which reads eval.weights="trained" too)."""
    arms, seeds = _finished_sweep(workdir)
    records, grid = [], None
    for train_arm, train_overrides in arms.items():
        for seed in seeds:
            run = os.path.join(workdir, train_arm, f"seed{seed}")
            if not os.path.exists(os.path.join(run, "config.json")):
                log(f"evaluation arms: {train_arm} seed {seed} has no run (failed in the sweep?); left out")
                continue
            recorded, _ = configs.load_recorded(run)
            grid = grid or parse_eval_grid(recorded, specs)
            for overrides in grid:
                setting = arm_name(overrides)
                out = os.path.join(run, "eval", f"{setting}-{checkpoint}")
                metrics, seconds = _evaluated(evaluate, apply(recorded, overrides, seed), run, checkpoint, out)
                log(f"evaluation arms: {train_arm} seed {seed} {setting}: AP {metrics.get('AP', float('nan')):.4f}")
                records.append({
                    "arm": arm_name({**train_overrides, **overrides}) if train_overrides else setting,
                    "overrides": {**train_overrides, **overrides},
                    "seed": seed, "workdir": out, "final": metrics, "train": [], "diagnostics": [], "terms": [],
                    "seconds": seconds, "error": None,
                })  # fmt: skip
    return records


def _evaluated(evaluate: Callable, config, run: str, checkpoint: str, out: str) -> tuple[dict, float]:
    """(metrics, seconds) of one evaluation, read back when `out` already holds it."""
    done = os.path.join(out, _RESULT)
    if os.path.exists(done):
        with open(done) as f:
            saved = json.load(f)
        return saved["metrics"], saved["seconds"]
    start = time.perf_counter()
    metrics = {k: float(v) for k, v in evaluate(config, run, checkpoint, out=out).items()}
    seconds = time.perf_counter() - start
    os.makedirs(out, exist_ok=True)
    with open(done + ".tmp", "w") as f:
        json.dump({"metrics": metrics, "seconds": seconds}, f)
    os.replace(done + ".tmp", done)  # (a killed evaluation leaves no result behind to be read back)
    return metrics, seconds
