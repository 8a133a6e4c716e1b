"""Paired statistics for ablations: an arm against its baseline, seed by seed.

Arms trained with the same seed see the same data order and initialisation, so the
per-seed differences d_i = arm_i - baseline_i cancel what the seeds share; the test is
the paired t-test (Student's t over the differences, n - 1 degrees of freedom; equal to
`scipy.stats.ttest_rel`). The confidence interval is the t interval of the mean
difference. "Seeds needed" is the smallest number of seeds at which a paired t-test at
the 5% level would detect the observed mean difference with 80% power, if the seed
differences kept the observed spread (a planning figure from the observed effect, not a
guarantee).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping

import numpy as np
from scipy import stats as sps

ALPHA, POWER, MAX_SEEDS = 0.05, 0.8, 1000


@dataclasses.dataclass(frozen=True)
class Paired:
    """One arm against its baseline on one metric, over the seeds both have."""

    n: int  # seeds with both values
    mean: float  # mean of arm - baseline over those seeds
    ci_low: float  # 95% t interval of the mean difference (nan below 2 seeds)
    ci_high: float
    p: float  # two-sided paired t-test (nan below 2 seeds)
    seeds_needed: int | None  # for 80% power at 5%; None: no difference observed (or beyond MAX_SEEDS)

    @property
    def verdict(self) -> str:
        """In words: "better", "worse", or why the seeds cannot tell."""
        if self.n < 2:
            return f"one seed ({self.n}): no test possible, run more seeds"
        if self.p < ALPHA:
            return "better" if self.mean > 0 else "worse"
        return f"no difference detectable with {self.n} seeds"


def compare(baseline: Mapping[int, float], arm: Mapping[int, float]) -> Paired:
    """`arm` against `baseline` ({seed: metric}); seeds missing from either are left out."""
    seeds = sorted(s for s in arm if s in baseline and _finite(arm[s]) and _finite(baseline[s]))
    d = np.asarray([arm[s] - baseline[s] for s in seeds], np.float64)
    n = d.size
    if n == 0:
        return Paired(0, math.nan, math.nan, math.nan, math.nan, None)
    mean = float(d.mean())
    if n < 2:
        return Paired(n, mean, math.nan, math.nan, math.nan, None)
    sd = float(d.std(ddof=1))
    if sd == 0.0:  # every seed moved by exactly the same amount (e.g. identical arms: 0)
        p = 1.0 if mean == 0.0 else 0.0
        return Paired(n, mean, mean, mean, p, None if mean == 0.0 else 2)
    se = sd / math.sqrt(n)
    half = float(sps.t.ppf(1 - ALPHA / 2, n - 1)) * se
    p = float(2 * sps.t.sf(abs(mean) / se, n - 1))
    return Paired(n, mean, mean - half, mean + half, p, seeds_needed(mean / sd))


def seeds_needed(effect: float, alpha: float = ALPHA, power: float = POWER) -> int | None:
    """The fewest seeds n >= 2 at which a two-sided paired t-test at `alpha` has `power`
    for a standardised effect mean/sd = `effect` (noncentral t); None: beyond MAX_SEEDS."""
    if effect == 0.0 or not math.isfinite(effect):
        return None
    effect = min(abs(effect), 100.0)  # (beyond this, 2 seeds have all the power; the noncentral t is unstable)
    for n in range(2, MAX_SEEDS + 1):
        df, nc = n - 1, effect * math.sqrt(n)
        t = sps.t.ppf(1 - alpha / 2, df)
        if sps.nct.sf(t, df, nc) + sps.nct.cdf(-t, df, nc) >= power:
            return n
    return None


def _finite(x) -> bool:
    return x is not None and math.isfinite(float(x))
