"""`experiments.sweep --variance=K`: where a recipe's seed-to-seed spread comes from.

The runs are a K x K factorial over config.seeds.init (the parameters' initialisation)
and config.seeds.data (data order, augmentation and multi-scale draws), config.seed
fixed (so the train step's own draws, config.seeds.step, are one). Each run's AP is
modelled as two crossed random effects plus the rest (Searle, Casella & McCulloch,
"Variance Components", 1992, ch. 4):

    AP_ij = mu + a_i + b_j + e_ij,  a ~ N(0, s2_init), b ~ N(0, s2_data), e ~ N(0, s2_rest)

s2_rest holds the init x data interaction and the nondeterminism left (none on one CPU:
the runs are deterministic functions of their seeds). The estimates are the ANOVA
(method-of-moments) ones, equal to REML for this balanced design where none is cut at 0;
each source's share of the total has a parametric-bootstrap percentile interval (the
fitted model re-drawn, BOOTSTRAP times, fixed seed). With K = 3 the intervals are wide:
they say how much a K-seed study can tell.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from jaxdet.errors import ConfigError

SOURCES = ("init", "data", "rest")
BOOTSTRAP = 4000


def grid(k: int) -> list[str]:
    """The --sweep specs of the K x K factorial."""
    if k < 2:
        raise ConfigError(f"--variance={k}: at least 2 seeds per source (2 x 2 runs); 3 or more to tell them apart")
    values = ",".join(map(str, range(k)))
    return [f"seeds.init={values}", f"seeds.data={values}"]


@dataclasses.dataclass(frozen=True)
class Components:
    mean_squares: dict[str, float]  # "init", "data", "rest"
    variances: dict[str, float]  # the estimates (cut at 0)
    shares: dict[str, float]  # of the total
    intervals: dict[str, tuple[float, float]]  # 95% bootstrap intervals of the shares
    k_init: int
    k_data: int


def mean_squares(y: np.ndarray) -> dict[str, float]:
    """Two-way ANOVA without replication of y [K_init, K_data]: the mean squares."""
    a, b = y.shape
    grand = y.mean()
    rows, cols = y.mean(axis=1), y.mean(axis=0)
    resid = y - rows[:, None] - cols[None, :] + grand
    return {
        "init": float(b * np.sum((rows - grand) ** 2) / (a - 1)),
        "data": float(a * np.sum((cols - grand) ** 2) / (b - 1)),
        "rest": float(np.sum(resid**2) / ((a - 1) * (b - 1))),
    }


def _estimate(y: np.ndarray) -> dict[str, float]:
    a, b = y.shape
    ms = mean_squares(y)
    return {
        "init": max(0.0, (ms["init"] - ms["rest"]) / b),
        "data": max(0.0, (ms["data"] - ms["rest"]) / a),
        "rest": ms["rest"],
    }


def _shares(v: dict[str, float]) -> dict[str, float]:
    total = sum(v.values())
    return {s: (v[s] / total if total > 0 else float("nan")) for s in SOURCES}


def components(y: np.ndarray, seed: int = 0) -> Components:
    """The variance components of y [K_init, K_data] (AP of the run with seeds.init = i
    and seeds.data = j)."""
    y = np.asarray(y, np.float64)
    if y.ndim != 2 or min(y.shape) < 2 or not np.all(np.isfinite(y)):
        raise ConfigError(f"variance components need a full table of at least 2 x 2 finite values; got {y.shape}")
    a, b = y.shape
    v = _estimate(y)
    rng = np.random.default_rng(seed)
    draws = []
    for _ in range(BOOTSTRAP):
        sim = (
            rng.normal(0, np.sqrt(v["init"]), (a, 1))
            + rng.normal(0, np.sqrt(v["data"]), (1, b))
            + rng.normal(0, np.sqrt(v["rest"]), (a, b))
        )
        draws.append([_shares(_estimate(sim))[s] for s in SOURCES])
    draws = np.asarray(draws)
    intervals = {
        s: (float(np.nanpercentile(draws[:, i], 2.5)), float(np.nanpercentile(draws[:, i], 97.5)))
        for i, s in enumerate(SOURCES)
    }
    return Components(mean_squares(y), v, _shares(v), intervals, a, b)


def table(records: list[dict], metric: str = "AP") -> np.ndarray:
    """The factorial's runs as y [K_init, K_data] (nan where a run has no result)."""
    inits = sorted({r["overrides"]["seeds.init"] for r in records})
    datas = sorted({r["overrides"]["seeds.data"] for r in records})
    y = np.full((len(inits), len(datas)), np.nan)
    for r in records:
        value = r["final"].get(metric)
        if value is not None:
            y[inits.index(r["overrides"]["seeds.init"]), datas.index(r["overrides"]["seeds.data"])] = value
    return y


def write(records: list[dict], workdir: str, metric: str = "AP") -> str:
    """variance.md and variance.json in `workdir`; returns the .md path."""
    y = table(records, metric)
    missing = int(np.isnan(y).sum())
    if missing:
        raise ConfigError(f"{missing} run(s) of the {y.shape[0]} x {y.shape[1]} factorial have no {metric}: "
                          "run the sweep again to finish them (results.md lists failures)")  # fmt: skip
    c = components(y)
    total_sd = float(np.sqrt(sum(c.variances.values())))
    lines = [
        f"Where the seed-to-seed spread of {metric} comes from: {c.k_init} x {c.k_data} runs over seeds.init x "
        "seeds.data (config.seed fixed); two crossed random effects and the rest, ANOVA estimates, 95% parametric-"
        "bootstrap intervals of the shares.",
        "",
        f"Total sd of one run's {metric}: {total_sd:.4f} (mean {float(y.mean()):.4f})",
        "",
        "| source | variance | sd | share | 95% interval of the share | mean square |",
        "|---|---|---|---|---|---|",
    ]
    names = {"init": "seeds.init (initialisation)", "data": "seeds.data (order, augmentation)",
             "rest": "rest (init x data, step)"}  # fmt: skip
    for s in SOURCES:
        low, high = c.intervals[s]
        lines.append(f"| {names[s]} | {c.variances[s]:.3g} | {np.sqrt(c.variances[s]):.4f} | {c.shares[s]:.0%} | "
                     f"[{low:.0%}, {high:.0%}] | {c.mean_squares[s]:.3g} |")  # fmt: skip
    path = os.path.join(workdir, "variance.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(workdir, "variance.json"), "w") as f:
        json.dump({"metric": metric, "table": y.tolist(), **dataclasses.asdict(c)}, f, indent=2)
    return path
