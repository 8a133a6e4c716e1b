"""`experiments.sweep --until_decided`: seeds run in rounds, each comparison stopped as soon
as it is decided (jaxdet/sweep/sequential.py: better / worse / equivalent / undecided at
--max_seeds), the arms whose comparisons are all decided getting no more seeds.

The rounds are a function of the design alone (round k: the first k * seed_round seeds
of the pool), so a stopped sweep run again replays the finished rounds from the runs on
disk (never re-running one) to the same verdicts and goes on where it stopped. The
design is written to sequential.json at the first round; another design on the same
directory is refused: looks already taken under one plan would void the other's error
guarantee.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Callable, Sequence

import ml_collections

from jaxdet.errors import ConfigError
from jaxdet.sweep import sequential
from jaxdet.sweep.grid import arm_name
from jaxdet.sweep.results import PAIRED_KEYS, comparisons
from jaxdet.sweep.runs import run_sweep

DESIGN_FILE = "sequential.json"
METRIC = PAIRED_KEYS[0]  # the metric the rounds decide on (AP)


def seed_pool(first: Sequence[int], max_seeds: int) -> list[int]:
    """`first` (--seeds) then the seeds after its largest, up to max_seeds in all."""
    pool = list(first)[:max_seeds]
    return pool + list(range(max(pool) + 1, max(pool) + 1 + max_seeds - len(pool)))


def record_design(workdir: str, design: sequential.Design) -> None:
    """Writes sequential.json, or checks the one there holds the same design."""
    design.check()
    path = os.path.join(workdir, DESIGN_FILE)
    mine = dataclasses.asdict(design)
    if os.path.exists(path):
        with open(path) as f:
            theirs = json.load(f)
        changed = {k: (theirs.get(k), v) for k, v in mine.items() if theirs.get(k) != v}
        if changed:
            what = ", ".join(f"--{k}={new} (the sweep's: {old})" for k, (old, new) in changed.items())
            raise ConfigError(
                f"{workdir} is a sequential sweep planned with other settings: {what}. Its looks were taken under "
                "that plan, and another would void its error guarantee: run it with its own settings, or start a "
                "new --workdir"
            )
        return
    os.makedirs(workdir, exist_ok=True)
    with open(path, "w") as f:
        json.dump(mine, f, indent=2)


def run_until_decided(
    config: ml_collections.ConfigDict,
    workdir: str,
    grid: list[dict[str, object]],
    seeds: Sequence[int],
    runner: Callable,
    launcher=None,
    retries: int = 0,
    design: sequential.Design = sequential.Design(),
    baseline: str | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[list[dict], dict[tuple[str, str, str], sequential.Verdict]]:
    """Runs the rounds until every comparison is decided; returns the records of every run
    and the verdicts {(arm, baseline, axis): Verdict}. `seeds`: the pool, in order
    (seed_pool); `launcher`: as run_sweep's (a function making one per round)."""
    log = log or (lambda line: print(line, flush=True))
    record_design(workdir, design)
    pairs = comparisons([{"arm": arm_name(o), "overrides": o} for o in grid], baseline)
    if not pairs:
        raise ConfigError("--until_decided compares arms with their baseline: give a --sweep axis of 2 values or more")
    ends = design.rounds()
    if len(seeds) < ends[-1]:
        raise ConfigError(f"--until_decided: {len(seeds)} seeds in the pool for --max_seeds={design.max_seeds}")
    records: dict[tuple[str, int], dict] = {}
    histories: dict[tuple, list[sequential.Look]] = {p: [] for p in pairs}
    verdicts: dict[tuple, sequential.Verdict] = {}
    start = 0
    for k, end in enumerate(ends, 1):
        open_pairs = [p for p in pairs if p not in verdicts or not verdicts[p].decided]
        if not open_pairs:
            break
        needed = {a for arm, base, _ in open_pairs for a in (arm, base)}
        arms = [o for o in grid if arm_name(o) in needed]
        log(f"sweep: round {k}/{len(ends)}: seeds {', '.join(map(str, seeds[start:end]))} for {len(arms)} arm(s), "
            f"{len(open_pairs)} comparison(s) open")  # fmt: skip
        for r in run_sweep(config, workdir, arms, list(seeds[start:end]), runner, launcher, retries):
            records[(r["arm"], r["seed"])] = r
        values = {
            arm: {s: r["final"].get(METRIC) for (a, s), r in records.items() if a == arm}
            for arm in {a for a, _ in records}
        }
        for p in pairs:
            arm, base, _ = p
            histories[p].append(sequential.look(values.get(base, {}), values.get(arm, {}), seeds[:end]))
        verdicts = sequential.decide(histories, design)
        for arm, base, axis in open_pairs:  # (the decided ones keep their line from an earlier round)
            log(f"sweep: round {k}: {arm} vs {base}: {_describe(verdicts[(arm, base, axis)])}")
        start = end
    return list(records.values()), verdicts


def _describe(v: sequential.Verdict) -> str:
    interval = f"[{v.ci_low:+.4f}, {v.ci_high:+.4f}]" if math.isfinite(v.ci_low) else "(-inf, inf)"
    return f"{v.verdict}, {v.look.n} seeds, mean {v.look.mean:+.4f}, interval {interval}"


def verdict_table(
    verdicts: dict[tuple[str, str, str], sequential.Verdict], design: sequential.Design
) -> tuple[list[dict], list[str]]:
    """The verdicts as results.json rows and results.md lines."""
    m = len(verdicts)
    rows = []
    for (arm, base, axis), v in verdicts.items():
        rows.append({"arm": arm, "baseline": base, "axis": axis, "metric": METRIC, "verdict": v.verdict,
                     "round": v.round, "n": v.look.n, "mean": v.look.mean, "ci_low": v.ci_low, "ci_high": v.ci_high,
                     "p": v.p, "p_holm": v.p_holm, "seeds_needed": v.seeds_needed})  # fmt: skip
    equivalence = f", equivalent within ±{design.margin:g}" if design.margin > 0 else ""
    lines = [
        "",
        f"Sequential verdicts on {METRIC} (--until_decided: rounds of {design.seed_round} seed(s), at most "
        f"{design.max_seeds}; group-sequential paired t-test, Lan-DeMets O'Brien-Fleming alpha spending at "
        f"{design.alpha:g}, Holm's step-down over the {m} comparison(s){equivalence}; interval: the repeated "
        f"{1 - design.alpha / m:.1%} confidence interval, valid where the sweep stopped; p: the repeated p-value, "
        "raw and Holm-adjusted; fixed design: the seeds a fixed-size paired t-test would need for 80% power at the "
        "observed effect):",
        "",
        "| arm | baseline | verdict | stopped | seeds | mean difference | interval | p | p (Holm) | fixed design |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        interval = f"[{r['ci_low']:+.4f}, {r['ci_high']:+.4f}]" if math.isfinite(r["ci_low"]) else "(-inf, inf)"
        need = "-" if r["seeds_needed"] is None else str(r["seeds_needed"])
        stopped = "not yet" if r["verdict"] == "running" else f"round {r['round']}"
        lines.append(f"| {r['arm']} | {r['baseline']} | {r['verdict']} | {stopped} | {r['n']} | {r['mean']:+.4f} | "
                     f"{interval} | {r['p']:.3g} | {r['p_holm']:.3g} | {need} |")  # fmt: skip
    return rows, lines
