"""A sweep's results: results.md (per-arm mean ± std over seeds, and each arm against its
baseline with paired statistics), results.json (the same numbers, for scripts) and
results.png (jaxdet/sweep/plots.py).

Baselines: along each --sweep axis, an arm is compared with the arm that differs from it
only in that axis, at the axis' baseline value (the first value given; for the first
axis, --baseline when set), so a grid is compared along each axis, seed by seed.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from jaxdet.errors import ConfigError
from jaxdet.sweep import stats
from jaxdet.sweep.grid import arm_name
from jaxdet.sweep.plots import plot, terms_of

TABLE_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")
PAIRED_KEYS = ("AP", "AP50")  # the metrics compared seed by seed


def _mean_std(values: list) -> str:
    v = np.asarray([x for x in values if x is not None], np.float64)
    if v.size == 0:
        return "n/a"
    return f"{v.mean():.3f} ± {v.std(ddof=1):.3f}" if v.size > 1 else f"{v.mean():.3f}"


def _axes(records: list[dict]) -> dict[str, list]:
    """{key: its values in sweep order} over the arms' overrides."""
    axes: dict[str, list] = {}
    for r in records:
        for key, value in r["overrides"].items():
            axes.setdefault(key, [])
            if value not in axes[key]:
                axes[key].append(value)
    return axes


def comparisons(records: list[dict], baseline: str | None = None) -> list[tuple[str, str, str]]:
    """(arm, its baseline arm, the axis they differ in) for every arm not a baseline itself
    along that axis. `baseline`: the first axis' baseline value, as text (default its first)."""
    axes = _axes(records)
    base_values = {key: values[0] for key, values in axes.items()}
    if baseline is not None and axes:
        first = next(iter(axes))
        match = [v for v in axes[first] if str(v) == baseline]
        if not match:
            raise ConfigError(
                f"--baseline={baseline!r} is not a value of the first --sweep axis {first}: "
                f"{[str(v) for v in axes[first]]}"
            )
        base_values[first] = match[0]
    arms = {r["arm"]: r["overrides"] for r in records}
    out = []
    for name, overrides in arms.items():
        for key, value in overrides.items():
            if value != base_values[key]:
                base = arm_name({**overrides, key: base_values[key]})
                if base in arms:
                    out.append((name, base, key))
    return out


def _per_seed(records: list[dict], arm: str, key: str) -> dict[int, float]:
    return {r["seed"]: r["final"][key] for r in records if r["arm"] == arm and r["final"].get(key) is not None}


def _fmt(x: float, digits: int = 4) -> str:
    return "n/a" if x is None or not np.isfinite(x) else f"{x:+.{digits}f}"


def write_results(
    records: list[dict],
    workdir: str,
    baseline: str | None = None,
    seconds_label: str = "train time (s)",
    sequential: tuple[list[dict], list[str]] | None = None,
) -> tuple[str, str]:
    """results.md, results.json and results.png in `workdir`; returns the .md and .png paths.
    `seconds_label`: the table's heading for the records' "seconds"; `sequential`: an
    --until_decided sweep's verdicts (until_decided.verdict_table), shown first."""
    arms = list(dict.fromkeys(r["arm"] for r in records))
    seeds = sorted({r["seed"] for r in records})
    terms = terms_of(records)
    header = ["arm", *TABLE_KEYS, *[f"final {t}" for t in terms], seconds_label]
    lines = [
        f"Seeds: {', '.join(map(str, seeds))} (mean ± sample std over seeds)",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    summary: dict[str, dict] = {}
    for arm in arms:
        rs = [r for r in records if r["arm"] == arm]
        cells = [arm]
        cells += [_mean_std([r["final"].get(k) for r in rs]) for k in TABLE_KEYS]
        cells += [_mean_std([r["train"][-1].get(t) if r["train"] else None for r in rs]) for t in terms]
        seconds = [r["seconds"] for r in rs if np.isfinite(r["seconds"])]  # (a failed run has none)
        cells += [f"{np.mean(seconds):.0f}" if seconds else "n/a"]
        lines.append("| " + " | ".join(cells) + " |")
        summary[arm] = {
            "overrides": rs[0]["overrides"],
            "per_seed": {k: _per_seed(records, arm, k) for k in TABLE_KEYS},
        }
    failed = [{"arm": r["arm"], "seed": r["seed"], "error": r["error"]} for r in records if r.get("error")]
    if failed:
        lines += ["", "Failed (left out of the means and the comparisons; the error's last line):", ""]
        lines += [f"- {f['arm']} seed {f['seed']}: FAILED: {f['error']}" for f in failed]
    paired, table = paired_table(records, baseline)
    if sequential is not None:
        lines += sequential[1]
        table = ["", "The same runs as a fixed design (every seed each arm has; not the sequential verdicts):", *table]
    lines += table
    os.makedirs(workdir, exist_ok=True)
    md = os.path.join(workdir, "results.md")
    with open(md, "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(workdir, "results.json"), "w") as f:
        doc = {"seeds": seeds, "arms": summary, "paired": paired, "failed": failed}
        if sequential is not None:
            doc["sequential"] = sequential[0]
        json.dump(doc, f, indent=2, default=_plain)
    png = os.path.join(workdir, "results.png")
    plot(records, arms, png)
    return md, png


def paired_table(records: list[dict], baseline: str | None = None) -> tuple[list[dict], list[str]]:
    """Each arm against its baseline on PAIRED_KEYS, seed by seed: the comparisons (as in
    results.json) and their markdown lines (empty when nothing is compared). The comparisons
    of one metric are one family for Holm's correction (every axis of a grid together);
    the verdict uses the adjusted p."""
    paired, lines = [], []
    pairs = comparisons(records, baseline)
    tests = {(i, key): stats.compare(_per_seed(records, base, key), _per_seed(records, arm, key))
             for key in PAIRED_KEYS for i, (arm, base, _) in enumerate(pairs)}  # fmt: skip
    adjusted = {}  # Holm within each metric's family
    for key in PAIRED_KEYS:
        adjusted |= {(i, key): p for i, p in stats.holm({i: tests[(i, key)].p for i in range(len(pairs))}).items()}
    for i, (arm, base, axis) in enumerate(pairs):  # arm by arm, each metric
        for key in PAIRED_KEYS:
            t, p_holm = tests[(i, key)], adjusted[(i, key)]
            fields = {f.name: getattr(t, f.name) for f in dataclasses.fields(t)}
            verdict = t.verdict_at(p_holm, adjusted=True) if np.isfinite(p_holm) else t.verdict
            paired.append({"arm": arm, "baseline": base, "axis": axis, "metric": key, "verdict": verdict,
                           **fields, "p_holm": p_holm})  # fmt: skip
    if paired:
        lines += [
            "",
            "Each arm against its baseline, seed by seed (difference = arm - baseline; 95% CI: t interval of the mean "
            "difference, n - 1 degrees of freedom; p: two-sided paired t-test; p (Holm): adjusted over the "
            f"{len(pairs)} comparison(s) of the metric, which the verdict uses; below {stats.SMALL_SAMPLE} seeds the "
            "exact sign-flip p and a percentile bootstrap interval, which assume no normality; seeds needed: for "
            "80% power at the 5% level if the seed differences keep the observed spread):",
            "",
            "| arm | baseline | metric | seeds | mean difference | 95% CI | p | p (Holm) | sign-flip p "
            "| bootstrap 95% CI | verdict | seeds needed |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for c in paired:
            ci = f"[{_fmt(c['ci_low'])}, {_fmt(c['ci_high'])}]"
            boot = "-" if not np.isfinite(c["boot_low"]) else f"[{_fmt(c['boot_low'])}, {_fmt(c['boot_high'])}]"
            need = "-" if c["seeds_needed"] is None else str(c["seeds_needed"])
            lines.append(f"| {c['arm']} | {c['baseline']} | {c['metric']} | {c['n']} | {_fmt(c['mean'])} | {ci} | "
                         f"{_p(c['p'])} | {_p(c['p_holm'])} | {_p(c['p_sign'], '-')} | {boot} | {c['verdict']} | "
                         f"{need} |")  # fmt: skip
    return paired, lines


def _p(p: float, missing: str = "n/a") -> str:
    return missing if p is None or not np.isfinite(p) else f"{p:.3g}"


def _plain(value):
    return list(value) if isinstance(value, tuple) else str(value)
