"""Running a sweep's (arm, seed) pairs, each in its own sub-workdir `<workdir>/<arm>/seed<k>`,
so a sweep resumes like a run: finished arms are skipped, a half-done arm resumes."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Sequence

import ml_collections

from jaxdet.detectors import get_definition
from jaxdet.errors import ConfigError
from jaxdet.sweep.grid import apply, arm_name


def _rows(workdir: str) -> list[dict]:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def existing_seeds(workdir: str) -> list[int]:
    """The seeds a sweep in `workdir` has run or started (its `<arm>/seed<k>` directories)."""
    seeds = set()
    for arm in os.listdir(workdir) if os.path.isdir(workdir) else []:
        if os.path.isdir(os.path.join(workdir, arm)):
            seeds |= {int(d[4:]) for d in os.listdir(os.path.join(workdir, arm)) if re.fullmatch(r"seed\d+", d)}
    return sorted(seeds)


def with_added_seeds(workdir: str, seeds: list[int], add: int) -> list[int]:
    """`seeds` and the seeds the sweep already has, then `add` new seeds after the largest."""
    if add < 0:
        raise ConfigError(f"--add_seeds={add}: the number of seeds to add must be >= 0")
    known = sorted(set(seeds) | set(existing_seeds(workdir)))
    return known + list(range(known[-1] + 1, known[-1] + 1 + add)) if add else known


def final_eval(workdir: str, steps: int) -> dict | None:
    evals = [r for r in _rows(workdir) if r["split"] == "eval" and r["step"] == steps and "AP" in r]
    return evals[-1] if evals else None


def run_sweep(
    config: ml_collections.ConfigDict,
    workdir: str,
    grid: list[dict[str, object]],
    seeds: Sequence[int],
    runner: Callable[[ml_collections.ConfigDict, str], dict],
) -> list[dict]:
    """Runs every (arm, seed) not finished yet; returns one record per (arm, seed)."""
    records = []
    for overrides in grid:
        name = arm_name(overrides)
        for seed in seeds:
            cfg = apply(config, overrides, seed)
            sub = os.path.join(workdir, name, f"seed{seed}")
            timing = os.path.join(sub, "sweep_time.json")
            if final_eval(sub, cfg.train.steps) is None:
                print(f"sweep: running {name} seed {seed} in {sub}", flush=True)
                t0 = time.time()
                runner(cfg, sub)
                with open(timing, "w") as f:
                    json.dump({"seconds": time.time() - t0}, f)
            else:
                print(f"sweep: {name} seed {seed} already finished, skipped", flush=True)
            final = final_eval(sub, cfg.train.steps) or {}
            rows = _rows(sub)
            train_rows = [r for r in rows if r["split"] == "train"]
            diagnostics = [r for r in rows if r["split"] == "diagnostics"]
            seconds = json.load(open(timing))["seconds"] if os.path.exists(timing) else float("nan")
            records.append(
                {
                    "arm": name,
                    "overrides": dict(overrides),
                    "seed": seed,
                    "workdir": sub,
                    "final": final,
                    "train": train_rows,
                    "diagnostics": diagnostics,
                    # the arm's detector's named loss terms (a sweep may change the detector)
                    "terms": list(get_definition(cfg.model.name).terms),
                    "seconds": seconds,
                }
            )
    return records
