"""Paired statistics for ablations: an arm against its baseline, seed by seed.

Arms trained with the same seed see the same data order and initialisation, so the
per-seed differences d_i = arm_i - baseline_i cancel what the seeds share; the test is
the paired t-test (Student's t over the differences, n - 1 degrees of freedom; equal to
`scipy.stats.ttest_rel`). The confidence interval is the t interval of the mean
difference. "Seeds needed" is the smallest number of seeds at which a paired t-test at
the 5% level would detect the observed mean difference with 80% power, if the seed
differences kept the observed spread (a planning figure from the observed effect, not a
guarantee).

Below SMALL_SAMPLE seeds two tests that assume no normality stand beside the t-based
ones: the exact sign-flip test (under no effect each difference is as likely positive as
negative: all 2^n sign patterns enumerated; equal to scipy.stats.permutation_test with
permutation_type="samples") and a percentile bootstrap interval (scipy.stats.bootstrap,
fixed seed). With n seeds the sign-flip p cannot go below 2 / 2^n (0.25 at 3 seeds), so a
t-test "better" at 3 seeds rests on the normality it assumes; the verdict says so.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats as sps

ALPHA, POWER, MAX_SEEDS = 0.05, 0.8, 1000
SMALL_SAMPLE = 10  # below this many seeds: the sign-flip test and the bootstrap beside the t-test


@dataclasses.dataclass(frozen=True)
class Paired:
    """One arm against its baseline on one metric, over the seeds both have."""

    n: int  # seeds with both values
    mean: float  # mean of arm - baseline over those seeds
    ci_low: float  # 95% t interval of the mean difference (nan below 2 seeds)
    ci_high: float
    p: float  # two-sided paired t-test (nan below 2 seeds)
    seeds_needed: int | None  # for 80% power at 5%; None: no difference observed (or beyond MAX_SEEDS)
    p_sign: float = math.nan  # exact sign-flip p (below SMALL_SAMPLE seeds, else nan)
    boot_low: float = math.nan  # percentile bootstrap interval (below SMALL_SAMPLE seeds, else nan)
    boot_high: float = math.nan

    @property
    def verdict(self) -> str:
        """In words: "better", "worse", or why the seeds cannot tell (at the raw p)."""
        return self.verdict_at(self.p)

    def verdict_at(self, p: float, adjusted: bool = False) -> str:
        """The verdict at p-value `p` (Holm-adjusted where `adjusted`), with a note where the
        small-sample tests disagree with the t-test."""
        if self.n < 2:
            return f"one seed ({self.n}): no test possible, run more seeds"
        if p < ALPHA:
            text = "better" if self.mean > 0 else "worse"
            if math.isfinite(self.p_sign) and self.p_sign >= ALPHA:
                floor = 2 / 2**self.n
                text += (f"; the exact sign-flip test disagrees (p = {self.p_sign:.3g}, at least {floor:.3g} "
                         f"with {self.n} seeds): it rests on the t-test's normality")  # fmt: skip
            return text
        why = " after Holm's correction" if adjusted and self.p < ALPHA else ""
        text = f"no difference detectable with {self.n} seeds{why}"
        if math.isfinite(self.p_sign) and self.p_sign < ALPHA:
            text += f"; the exact sign-flip test disagrees (p = {self.p_sign:.3g})"
        return text


def differences(
    baseline: Mapping[int, float], arm: Mapping[int, float], seeds: Sequence[int] | None = None
) -> np.ndarray:
    """arm - baseline [n] over the seeds (`seeds`, or all, in seed order) where both have a
    finite value: the pairs every comparison is made of."""
    seeds = sorted(arm) if seeds is None else seeds
    return np.asarray(
        [arm[s] - baseline[s] for s in seeds if _finite(arm.get(s)) and _finite(baseline.get(s))], np.float64
    )


def compare(baseline: Mapping[int, float], arm: Mapping[int, float]) -> Paired:
    """`arm` against `baseline` ({seed: metric}); seeds missing from either are left out."""
    d = differences(baseline, arm)
    n = d.size
    if n == 0:
        return Paired(0, math.nan, math.nan, math.nan, math.nan, None)
    mean = float(d.mean())
    if n < 2:
        return Paired(n, mean, math.nan, math.nan, math.nan, None)
    small = (sign_flip_p(d), *bootstrap_ci(d)) if n < SMALL_SAMPLE else ()
    sd = float(d.std(ddof=1))
    if sd == 0.0:  # every seed moved by exactly the same amount (e.g. identical arms: 0)
        p = 1.0 if mean == 0.0 else 0.0
        return Paired(n, mean, mean, mean, p, None if mean == 0.0 else 2, *small)
    se = sd / math.sqrt(n)
    half = float(sps.t.ppf(1 - ALPHA / 2, n - 1)) * se
    p = float(2 * sps.t.sf(abs(mean) / se, n - 1))
    return Paired(n, mean, mean - half, mean + half, p, seeds_needed(mean / sd), *small)


def seeds_needed(effect: float, alpha: float = ALPHA, power: float = POWER) -> int | None:
    """The fewest seeds n >= 2 at which a two-sided paired t-test at `alpha` has `power`
    for a standardised effect mean/sd = `effect` (noncentral t); None: beyond MAX_SEEDS."""
    if effect == 0.0 or not math.isfinite(effect):
        return None
    effect = min(abs(effect), 100.0)  # (beyond this, 2 seeds have all the power; the noncentral t is unstable)

    def enough(n: int) -> bool:
        df, nc = n - 1, effect * math.sqrt(n)
        t = sps.t.ppf(1 - alpha / 2, df)
        return sps.nct.sf(t, df, nc) + sps.nct.cdf(-t, df, nc) >= power

    # Power grows with n: double n until it is enough, then bisect (large noncentralities,
    # far past the answer, are where scipy's noncentral t loses accuracy: never visited).
    high = 2
    while not enough(high):
        if high >= MAX_SEEDS:
            return None
        high = min(2 * high, MAX_SEEDS)
    low = max(1, high // 2)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if enough(mid) else (mid, high)
    return high


def holm(ps: Mapping[str, float]) -> dict[str, float]:
    """Holm's step-down adjusted p-values (Holm 1979): the k-th smallest times (m - k + 1),
    running maximum, capped at 1; nan p-values are left out and stay nan."""
    items = sorted(((p, name) for name, p in ps.items() if math.isfinite(p)))
    m, out, running = len(items), {name: math.nan for name in ps}, 0.0
    for k, (p, name) in enumerate(items):
        running = max(running, min(1.0, (m - k) * p))
        out[name] = running
    return out


def sign_flip_p(d: np.ndarray) -> float:
    """Exact two-sided sign-flip p of the mean of `d` [n] (all 2^n patterns; n <= 20)."""
    d = np.asarray(d, np.float64)
    n = d.size
    if n == 0 or n > 20:
        return math.nan
    signs = 1 - 2 * ((np.arange(2**n)[:, None] >> np.arange(n)) & 1)  # [2^n, n] of +-1
    means = np.abs(signs @ d) / n
    return float(np.mean(means >= abs(d.mean()) * (1 - 1e-12)))  # (ties count: the observed pattern is one)


def bootstrap_ci(d: np.ndarray, alpha: float = ALPHA) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of `d` [n] (scipy, 9999 resamples, seed 0);
    nan below 2 values or with no spread."""
    d = np.asarray(d, np.float64)
    if d.size < 2 or np.ptp(d) == 0:
        return math.nan, math.nan
    res = sps.bootstrap((d,), np.mean, confidence_level=1 - alpha, n_resamples=9999, method="percentile",
                        rng=np.random.default_rng(0))  # fmt: skip
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _finite(x) -> bool:
    return x is not None and math.isfinite(float(x))
