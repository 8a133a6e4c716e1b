"""Ablation sweeps: a grid of config overrides x seeds, run one after another, then tabulated.

Each (arm, seed) trains in its own sub-workdir `<workdir>/<arm>/seed<k>`, so a sweep
resumes like a run: finished arms are skipped, a half-done arm resumes. For a given
seed every arm sees the same data order and the same initialisation key (both depend
only on `config.seed`).
"""

from __future__ import annotations

import ast
import copy
import itertools
import json
import os
import re
import time
from collections.abc import Callable, Sequence

import ml_collections
import numpy as np

from jaxdet.detectors import get_definition
from jaxdet.errors import ConfigError

TABLE_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def _convert(config: ml_collections.ConfigDict, key: str, text: str):
    """Parses `text` as the type of the existing field `key` (a clear error if there is none)."""
    node = config
    parts = key.split(".")
    for p in parts[:-1]:
        if p not in node:
            raise ConfigError(f"--sweep key {key!r}: the config has no section {p!r}")
        node = node[p]
    if parts[-1] not in node:
        raise ConfigError(f"--sweep key {key!r}: the config has no field {parts[-1]!r}; fields: {sorted(node.keys())}")
    current = node[parts[-1]]
    if isinstance(current, bool):
        if text.lower() not in ("true", "false"):
            raise ConfigError(f"--sweep {key}={text}: expected True or False")
        return text.lower() == "true"
    if isinstance(current, (int, float)):
        return type(current)(float(text)) if isinstance(current, float) else int(text)
    if isinstance(current, (tuple, list)):
        return tuple(ast.literal_eval(text))
    return text


def parse_sweep(config: ml_collections.ConfigDict, specs: Sequence[str]) -> list[dict[str, object]]:
    """['a.b=1,2', 'c.d=x,y'] -> the grid of overrides [{'a.b': 1, 'c.d': 'x'}, ...]."""
    axes = []
    for spec in specs:
        if "=" not in spec:
            raise ConfigError(f"--sweep {spec!r}: expected KEY=VALUE1,VALUE2,...")
        key, values = spec.split("=", 1)
        key = key.strip()
        if key == "seed":
            raise ConfigError("sweep over seeds with --seeds, not --sweep seed=...")
        if key == "train.cpu_devices":  # (JAX's CPU device count is set once per process)
            raise ConfigError(
                "--sweep train.cpu_devices=...: the CPU device count is one per process; set it for the whole "
                "sweep with --config.train.cpu_devices=N, or run one sweep per count"
            )
        # Split on commas outside brackets, so tuple values like (0.5,1.0) survive.
        items = [v.strip() for v in re.split(r",(?![^()\[\]]*[)\]])", values) if v.strip()]
        if not items:
            raise ConfigError(f"--sweep {spec!r}: no values")
        axes.append([(key, _convert(config, key, v)) for v in items])
    return [dict(combo) for combo in itertools.product(*axes)]


def arm_name(overrides: dict[str, object]) -> str:
    """A readable, filesystem-safe name: 'loss.localization=giou,optim.learning_rate=0.001'."""
    text = ",".join(f"{k}={v}" for k, v in overrides.items())
    return re.sub(r"[^A-Za-z0-9_.=,+-]", "_", text) or "base"


def apply(config: ml_collections.ConfigDict, overrides: dict[str, object], seed: int) -> ml_collections.ConfigDict:
    cfg = copy.deepcopy(config)
    for key, value in overrides.items():
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    cfg.seed = seed
    return cfg


def _rows(workdir: str) -> list[dict]:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _final_eval(workdir: str, steps: int) -> dict | None:
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
            if _final_eval(sub, cfg.train.steps) is None:
                print(f"sweep: running {name} seed {seed} in {sub}", flush=True)
                t0 = time.time()
                runner(cfg, sub)
                with open(timing, "w") as f:
                    json.dump({"seconds": time.time() - t0}, f)
            else:
                print(f"sweep: {name} seed {seed} already finished, skipped", flush=True)
            final = _final_eval(sub, cfg.train.steps) or {}
            rows = _rows(sub)
            train_rows = [r for r in rows if r["split"] == "train"]
            diagnostics = [r for r in rows if r["split"] == "diagnostics"]
            seconds = json.load(open(timing))["seconds"] if os.path.exists(timing) else float("nan")
            records.append(
                {
                    "arm": name,
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


def _mean_std(values: list[float]) -> str:
    v = np.asarray([x for x in values if x is not None], np.float64)
    if v.size == 0:
        return "n/a"
    return f"{v.mean():.3f} ± {v.std():.3f}" if v.size > 1 else f"{v.mean():.3f}"


def _terms(records: list[dict]) -> list[str]:
    """Every arm's loss terms, in order of first appearance."""
    return list(dict.fromkeys(t for r in records for t in r["terms"]))


def write_results(records: list[dict], workdir: str) -> tuple[str, str]:
    """results.md (metrics mean ± std over seeds per arm) and results.png; returns their paths."""
    arms = list(dict.fromkeys(r["arm"] for r in records))
    seeds = sorted({r["seed"] for r in records})
    terms = _terms(records)
    header = ["arm", *TABLE_KEYS, *[f"final {t}" for t in terms], "train time (s)"]
    lines = [
        f"Seeds: {', '.join(map(str, seeds))} (mean ± std over seeds)",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    for arm in arms:
        rs = [r for r in records if r["arm"] == arm]
        cells = [arm]
        cells += [_mean_std([r["final"].get(k) for r in rs]) for k in TABLE_KEYS]
        cells += [_mean_std([r["train"][-1].get(t) if r["train"] else None for r in rs]) for t in terms]
        cells += [f"{np.nanmean([r['seconds'] for r in rs]):.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    md = os.path.join(workdir, "results.md")
    with open(md, "w") as f:
        f.write("\n".join(lines) + "\n")
    png = os.path.join(workdir, "results.png")
    _plot(records, arms, png)
    return md, png


def _plot(records: list[dict], arms: list[str], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_diag = any(r.get("diagnostics") for r in records)
    fig, axes = plt.subplots(1, 3 if with_diag else 2, figsize=(18 if with_diag else 12, 4.5))
    ax_ap, ax_loss = axes[0], axes[1]
    means, stds = [], []
    for arm in arms:
        aps = [r["final"].get("AP", np.nan) for r in records if r["arm"] == arm]
        means.append(np.nanmean(aps))
        stds.append(np.nanstd(aps))
    ax_ap.bar(range(len(arms)), means, yerr=stds, capsize=4, color="tab:blue")
    ax_ap.set_xticks(range(len(arms)), arms, rotation=30, ha="right", fontsize=8)
    ax_ap.set_ylabel("COCO AP (validation)")
    ax_ap.set_title("AP per arm (mean ± std over seeds)")
    for arm in arms:
        curves = [r["train"] for r in records if r["arm"] == arm and r["train"]]
        if not curves:
            continue
        n = min(len(c) for c in curves)
        steps = [row["step"] for row in curves[0][:n]]
        loss = np.mean([[row["loss"] for row in c[:n]] for c in curves], axis=0)
        ax_loss.plot(steps, loss, label=arm)
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("training loss (weighted total)")
    ax_loss.set_yscale("log")
    ax_loss.legend(fontsize=7)
    ax_loss.set_title("loss curves (mean over seeds)")
    if with_diag:
        _plot_term_gradients(axes[2], records, arms)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_term_gradients(ax, records: list[dict], arms: list[str]) -> None:
    """Per-term gradient norms over steps (first seed of each arm): which term drives training."""
    styles = dict(zip(_terms(records), itertools.cycle(["-", "--", ":", "-."])))
    for i, arm in enumerate(arms):
        rows = next((r["diagnostics"] for r in records if r["arm"] == arm and r.get("diagnostics")), [])
        if not rows:
            continue
        steps = [row["step"] for row in rows]
        for term, style in styles.items():
            values = [row.get(f"grad_norm/{term}", np.nan) for row in rows]
            if np.nanmax(values) > 0:
                ax.plot(steps, values, style, color=f"C{i}", label=f"{arm}: {term}")
    ax.set_xlabel("step")
    ax.set_ylabel("gradient norm of the weighted term")
    ax.set_yscale("log")
    ax.legend(fontsize=6)
    ax.set_title("per-term gradient norms (train.term_grad_norms_every)")
