"""What an --until_decided design buys before any run: its operating characteristics by
simulation (normal per-seed differences; the verdicts of sequential.decide), beside the
fixed design's paired t-test at max_seeds on the same draws.

    python tools/sequential_plan.py --max_seeds=10 --seed_round=2 --margin_sd=0
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy import stats as sps

from jaxdet.sweep import sequential


@dataclasses.dataclass(frozen=True)
class Simulated:
    verdicts: np.ndarray  # [sims, arms] of verdict names
    seeds: np.ndarray  # [sims]: the seeds the sweep ran (the most any comparison took)
    fixed: np.ndarray  # [sims]: the fixed design's t-test at max_seeds rejected (first arm)


def simulate(
    effect: float, sims: int, design: sequential.Design, arms: int = 1, seed: int = 0, sd: float = 0.02
) -> Simulated:
    """`sims` sequential sweeps of `arms` comparisons whose per-seed differences are
    N(effect * sd, sd) (effect: in standard deviations of a seed's difference)."""
    rng = np.random.default_rng(seed)
    ends = design.rounds()
    critical = sps.t.ppf(1 - design.alpha / 2, design.max_seeds - 1)
    verdicts, spent, fixed = [], [], []
    for _ in range(sims):
        d = rng.normal(effect * sd, sd, (arms, design.max_seeds))
        history = {
            a: [sequential.Look(e, d[a, :e].mean(), d[a, :e].std(ddof=1) if e > 1 else math.nan) for e in ends]
            for a in range(arms)
        }
        out = sequential.decide(history, design, details=False)
        verdicts.append([out[a].verdict for a in range(arms)])
        spent.append(max(out[a].look.n for a in range(arms)))
        t = d[0].mean() / (d[0].std(ddof=1) / math.sqrt(design.max_seeds))
        fixed.append(abs(t) > critical)
    return Simulated(np.asarray(verdicts), np.asarray(spent), np.asarray(fixed))


def table(design: sequential.Design, effects=(0.0, 0.5, 1.0, 2.0), sims: int = 2000, seed: int = 0) -> list[str]:
    """Markdown rows: per effect, P(a difference verdict), P(equivalent), mean seeds, and
    the fixed design's P(difference) at max_seeds."""
    lines = [
        "| effect (sd of a seed's difference) | P(better or worse) | P(equivalent) | mean seeds "
        f"| fixed {design.max_seeds} seeds: P(p < alpha) |",
        "|---|---|---|---|---|",
    ]
    for k, effect in enumerate(effects):
        s = simulate(effect, sims, design, seed=seed + k)
        differs = np.isin(s.verdicts[:, 0], ["better", "worse"]).mean()
        same = (s.verdicts[:, 0] == "equivalent").mean()
        lines.append(f"| {effect:g} | {differs:.3f} | {same:.3f} | {s.seeds.mean():.2f} | {s.fixed.mean():.3f} |")
    return lines
