"""Seeds added in rounds until the answer is known: a group-sequential paired t-test.

Design (Jennison & Turnbull, "Group Sequential Methods with Applications to Clinical
Trials", 2000): after each round of seeds, every open comparison (arm - baseline, seed by
seed) is looked at once. The error is spent over the looks by the Lan-DeMets
O'Brien-Fleming-type spending function alpha(t) = 2 - 2 Phi(z_{1-alpha/2} / sqrt(t)),
t = seeds / max_seeds (Lan & DeMets 1983, Biometrika 70:659): almost nothing at the first
looks, nearly the whole alpha at the last, so a design that runs to max_seeds loses little
against the fixed one. The interval at a look is the repeated confidence interval mean
+- c_k * sd / sqrt(n) (Jennison & Turnbull 1989, JRSS-B 51:305): it covers the true mean
difference at every look at once with probability 1 - alpha, so it is still valid where
the sweep stopped, whatever made it stop.

The boundaries c_k are for the paired t statistic itself, not a normal approximation: at
2-10 seeds a z boundary applied to t (1-9 degrees of freedom) would inflate the error.
Under no effect the joint law of (t_{n_1}, t_{n_2}, ...) does not depend on the unknown
spread (t is scale-invariant), so it is simulated once (SIMULATIONS sweeps of normal
differences, a fixed seed: the boundaries are a deterministic function of the looks) and
c_k is the quantile that spends alpha(t_k) - alpha(t_{k-1}) among the simulated sweeps
not stopped before. Neither scipy nor statsmodels has group-sequential boundaries; the
t, normal and noncentral-t laws are scipy's.

Verdicts, all from the one interval family so that together they are wrong with
probability at most alpha: better / worse (the test crossed its boundary: the interval
excludes 0; several arms: Holm's step-down over the comparisons, each step a sequential
test at alpha / j, equal to Holm on the repeated p-values); equivalent within +-margin
(the interval at alpha / m, m comparisons, lies inside, TOST-style); undecided at
max_seeds (with the interval and the seeds a fixed design would need).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats as sps

from jaxdet.errors import ConfigError
from jaxdet.sweep import stats

SIMULATIONS = 400_000  # simulated null sweeps per max_seeds: alpha's Monte Carlo error ~ 0.00035 at 0.05
MAX_SEEDS_LIMIT = 100  # (memory: SIMULATIONS x max_seeds float32, 160 MB at 100)


@dataclasses.dataclass(frozen=True)
class Design:
    """A sequential sweep's plan, fixed before the first look (sequential.json)."""

    alpha: float = stats.ALPHA
    margin: float = 0.0  # equivalence margin on the metric; 0: no equivalence verdict
    seed_round: int = 2  # seeds added per round
    max_seeds: int = 10
    spending: str = "obf"  # "obf": O'Brien-Fleming-type (few early stops, little lost at the end); "pocock"

    def check(self) -> None:
        if self.spending not in SPENDING:
            raise ConfigError(f"--spending={self.spending!r}: one of {', '.join(SPENDING)}")
        if not 0 < self.alpha < 1:
            raise ConfigError(f"--alpha={self.alpha}: must be in (0, 1), e.g. 0.05")
        if self.margin < 0:
            raise ConfigError(f"--margin={self.margin}: the equivalence margin is >= 0 (0: no equivalence verdict)")
        if self.seed_round < 1:
            raise ConfigError(f"--seed_round={self.seed_round}: at least 1 seed per round")
        if not 2 <= self.max_seeds <= MAX_SEEDS_LIMIT:
            raise ConfigError(f"--max_seeds={self.max_seeds}: must be in [2, {MAX_SEEDS_LIMIT}]")

    def rounds(self) -> list[int]:
        """Seeds run after each round: [2, 4, ..., max_seeds]."""
        ends = list(range(self.seed_round, self.max_seeds, self.seed_round))
        return [*ends, self.max_seeds]


SPENDING = ("obf", "pocock")


def spent(t: float, alpha: float, spending: str = "obf") -> float:
    """Alpha spent by information fraction t in (0, 1]: Lan-DeMets O'Brien-Fleming-type
    2 - 2 Phi(z_{1-alpha/2} / sqrt(t)), or Pocock-type alpha log(1 + (e - 1) t)."""
    if t <= 0:
        return 0.0
    t = min(t, 1.0)
    if spending == "pocock":
        return float(alpha * math.log(1 + (math.e - 1) * t))
    return float(2 - 2 * sps.norm.cdf(sps.norm.ppf(1 - alpha / 2) / math.sqrt(t)))


@functools.lru_cache(maxsize=4)
def _null_t(max_seeds: int) -> np.ndarray:
    """|paired t| after n = 1..max_seeds seeds of SIMULATIONS null sweeps: [S, max_seeds]
    float32 (column n-1; 0 where n < 2), made in chunks so float64 work stays ~50 MB."""
    rng = np.random.default_rng(20261207)
    n = np.arange(1, max_seeds + 1)
    out = np.empty((SIMULATIONS, max_seeds), np.float32)
    chunk = 50_000
    for start in range(0, SIMULATIONS, chunk):
        d = rng.standard_normal((min(chunk, SIMULATIONS - start), max_seeds))
        total, squares = np.cumsum(d, axis=1), np.cumsum(d * d, axis=1)
        mean = total / n
        var = np.where(n > 1, (squares - n * mean * mean) / np.maximum(n - 1, 1), 1.0)
        out[start : start + d.shape[0]] = np.abs(mean) / np.sqrt(np.maximum(var, 1e-300) / n)
    out[:, 0] = 0.0
    return out


@functools.lru_cache(maxsize=4096)
def boundaries(looks: tuple[int, ...], max_seeds: int, alpha: float, spending: str = "obf") -> tuple[float, ...]:
    """The |t| boundary at each look (`looks`: seeds at each look, increasing; inf where no
    test is possible or the alpha to spend is below the simulation's resolution). Each
    boundary depends only on the looks up to it, so a sweep that goes on keeps its past ones."""
    if any(b <= a for a, b in zip(looks, looks[1:])) or (looks and looks[-1] > max_seeds):
        raise ValueError(f"looks {looks} must increase and end at or below max_seeds {max_seeds}")
    table = _null_t(max_seeds)
    alive = np.ones(table.shape[0], bool)
    out, used = [], 0.0
    for n in looks:
        budget = spent(n / max_seeds, alpha, spending) - used
        count = int(math.floor(budget * table.shape[0] + 1e-9))
        if n < 2 or count < 1:
            out.append(math.inf)
            continue
        values = table[alive, n - 1]
        count = min(count, values.size)
        # The count-th largest |t| among the sweeps still running: crossing it spends `budget`.
        c = float(np.partition(values, values.size - count)[values.size - count])
        out.append(c)
        crossed = alive & (table[:, n - 1] >= c)
        used += crossed.sum() / table.shape[0]
        alive &= ~crossed
    return tuple(out)


@dataclasses.dataclass(frozen=True)
class Look:
    """One comparison at one look: the seeds both arms have up to that round."""

    n: int
    mean: float
    sd: float

    def t(self) -> float:
        if self.n < 2:
            return 0.0
        if self.sd == 0:
            return 0.0 if self.mean == 0 else math.inf
        return abs(self.mean) / (self.sd / math.sqrt(self.n))

    def interval(self, c: float) -> tuple[float, float]:
        if self.n < 2 or not math.isfinite(c):
            return -math.inf, math.inf
        half = c * self.sd / math.sqrt(self.n)
        return self.mean - half, self.mean + half


def look(baseline: Mapping[int, float], arm: Mapping[int, float], seeds: Sequence[int]) -> Look:
    """The paired differences over `seeds` that both have (finite)."""
    d = stats.differences(baseline, arm, seeds)
    if d.size == 0:
        return Look(0, math.nan, math.nan)
    return Look(int(d.size), float(d.mean()), float(d.std(ddof=1)) if d.size > 1 else math.nan)


def _distinct(history: Sequence[Look]) -> list[Look]:
    """The looks that added paired seeds (a round where both runs failed is no new look)."""
    out: list[Look] = []
    for h in history:
        if h.n > (out[-1].n if out else 0):
            out.append(h)
    return out


def crossed(history: Sequence[Look], max_seeds: int, alpha: float, spending: str = "obf") -> bool:
    """Whether the sequential test at level `alpha` crossed at any of these looks."""
    looks = _distinct(history)
    cs = boundaries(tuple(h.n for h in looks), max_seeds, alpha, spending)
    return any(h.t() >= c for h, c in zip(looks, cs))


def interval(history: Sequence[Look], max_seeds: int, alpha: float, spending: str = "obf") -> tuple[float, float]:
    """The repeated confidence interval at the last look, level 1 - alpha."""
    looks = _distinct(history)
    if not looks:
        return -math.inf, math.inf
    cs = boundaries(tuple(h.n for h in looks), max_seeds, alpha, spending)
    return looks[-1].interval(cs[-1])


def repeated_p(history: Sequence[Look], max_seeds: int, spending: str = "obf") -> float:
    """The smallest alpha at which the test would have crossed by now (the repeated p-value:
    at most alpha with probability alpha under no effect, at any stopping time); bisection
    to the simulation's resolution."""
    if not crossed(history, max_seeds, 1.0 - 1e-9, spending):
        return 1.0
    low, high = 0.0, 1.0 - 1e-9
    while high - low > 1e-4 * max(high, 1e-3):
        mid = 0.5 * (low + high)
        if mid * SIMULATIONS < 1:  # below the simulation's resolution: report the bound
            low = mid
            break
        low, high = (low, mid) if crossed(history, max_seeds, mid, spending) else (mid, high)
    return high


@dataclasses.dataclass(frozen=True)
class Verdict:
    """Where one comparison stands after the rounds run so far."""

    verdict: str  # "better", "worse", "equivalent", "undecided", "running"
    round: int  # the round (1-based) it was decided in; the last round run if not decided
    look: Look  # the paired seeds at that round
    ci_low: float  # the repeated interval (level 1 - alpha / m, m comparisons) at that round
    ci_high: float
    p: float  # the repeated p-value (raw)
    p_holm: float  # ... Holm-adjusted over the comparisons
    seeds_needed: int | None  # a fixed design's seeds for 80% power at the observed effect

    @property
    def decided(self) -> bool:
        return self.verdict != "running"


def decide(histories: Mapping, design: Design, details: bool = True) -> dict:
    """Replays the rounds: `histories[name][k]` is comparison `name`'s look after round k+1
    (all comparisons have the same rounds run). A comparison keeps the verdict of the first
    round it was decided in; later rounds (run for other comparisons) do not change it.
    details False leaves the repeated p-values nan and seeds_needed None (the verdicts do
    not need them; the simulations skip their cost)."""
    names = list(histories)
    m = max(1, len(names))
    rounds = max((len(h) for h in histories.values()), default=0)
    decided: dict[str, tuple[str, int]] = {}
    for k in range(1, rounds + 1):
        frozen = {name: histories[name][: decided[name][1] if name in decided else k] for name in names}
        # Holm's step-down: reject every open hypothesis that crossed at alpha / |active|, drop them, repeat.
        active, rejected = list(names), set()
        while active:
            level = design.alpha / len(active)
            hit = [nm for nm in active if crossed(frozen[nm], design.max_seeds, level, design.spending)]
            if not hit:
                break
            rejected |= set(hit)
            active = [nm for nm in active if nm not in hit]
        for name in names:
            if name in decided:
                continue
            last = frozen[name][-1]
            if name in rejected:
                decided[name] = ("better" if last.mean > 0 else "worse", k)
                continue
            low, high = interval(frozen[name], design.max_seeds, design.alpha / m, design.spending)
            if design.margin > 0 and -design.margin < low and high < design.margin:
                decided[name] = ("equivalent", k)
            elif k == len(design.rounds()) or last.n >= design.max_seeds:
                decided[name] = ("undecided", k)
    at = {name: decided.get(name, ("", rounds))[1] for name in names}
    ps = {
        name: repeated_p(histories[name][: at[name]], design.max_seeds, design.spending) if details else math.nan
        for name in names
    }
    adjusted = stats.holm(ps)
    out = {}
    for name in names:
        verdict, k = decided.get(name, ("running", rounds))
        history = histories[name][:k]
        last = history[-1] if history else Look(0, math.nan, math.nan)
        low, high = interval(history, design.max_seeds, design.alpha / m, design.spending)
        effect = last.mean / last.sd if last.n > 1 and last.sd > 0 else math.nan
        need = stats.seeds_needed(effect) if details else None
        out[name] = Verdict(verdict, k, last, low, high, ps[name], adjusted[name], need)
    return out
