"""A sweep's paired statistics (jaxdet/sweep/stats.py) against SciPy's paired t-test, the
baselines a grid is compared with, and --seeds / --add_seeds."""

import json
import math

import numpy as np
import pytest
from scipy import stats as sps

from jaxdet import sweep
from jaxdet.errors import ConfigError
from jaxdet.sweep import stats


@pytest.mark.parametrize("n, shift", [(2, 0.01), (3, 0.004), (5, 0.0), (10, -0.02)])
def test_paired_comparison_equals_scipy_ttest_rel(n, shift):
    rng = np.random.default_rng(n)
    base = rng.uniform(0.4, 0.7, n)
    arm = base + shift + rng.normal(0, 0.01, n)
    p = stats.compare(dict(enumerate(base)), dict(enumerate(arm)))
    ref = sps.ttest_rel(arm, base)
    assert p.n == n and p.mean == pytest.approx(float(np.mean(arm - base)), abs=1e-15)
    assert p.p == pytest.approx(ref.pvalue, rel=1e-9)
    low, high = sps.t.interval(0.95, n - 1, loc=np.mean(arm - base), scale=sps.sem(arm - base))
    assert (p.ci_low, p.ci_high) == (pytest.approx(low, rel=1e-9), pytest.approx(high, rel=1e-9))
    assert p.verdict == ("better" if p.p < 0.05 and p.mean > 0 else "worse" if p.p < 0.05 else
                         f"no difference detectable with {n} seeds")  # fmt: skip


def test_only_seeds_both_arms_have_are_paired_and_verdicts_say_why():
    base = {0: 0.50, 1: 0.60, 2: 0.55, 3: 0.58}
    arm = {0: 0.52, 1: 0.62, 2: 0.57, 5: 0.9}  # seed 3 missing, seed 5 not in the baseline
    p = stats.compare(base, arm)
    assert p.n == 3 and p.mean == pytest.approx(0.02) and p.p < 1e-9
    assert p.verdict.startswith("better; the exact sign-flip test disagrees (p = 0.25")  # 3 seeds: at least 0.25
    assert p.seeds_needed == 2
    same = stats.compare(base, dict(base))
    assert same.p == 1.0 and same.verdict == "no difference detectable with 4 seeds" and same.seeds_needed is None
    one = stats.compare({0: 0.5}, {0: 0.7})
    assert math.isnan(one.p) and one.verdict.startswith("one seed")
    noisy = stats.compare({0: 0.5, 1: 0.6, 2: 0.55}, {0: 0.53, 1: 0.58, 2: 0.56})
    assert noisy.verdict == "no difference detectable with 3 seeds" and noisy.seeds_needed > 3


@pytest.mark.parametrize("effect, n", [(1.0, 10), (0.8, 15), (0.5, 34)])
def test_seeds_needed_matches_the_textbook_sample_sizes(effect, n):
    """Paired t-test, two-sided 5%, 80% power (Cohen's dz; G*Power gives these n)."""
    assert stats.seeds_needed(effect) == n == stats.seeds_needed(-effect)


def _records(values: dict[tuple, list[float]]) -> list[dict]:
    """Fake per-(arm, seed) records: {(overrides items): [AP per seed]}."""
    out = []
    for items, aps in values.items():
        overrides = dict(items)
        for seed, ap in enumerate(aps):
            out.append({"arm": sweep.arm_name(overrides), "overrides": overrides, "seed": seed,
                        "final": {"AP": ap, "AP50": ap + 0.2}, "train": [], "terms": ["classification"],
                        "seconds": 1.0})  # fmt: skip
    return out


def test_a_grid_is_compared_along_each_axis_and_results_json_has_the_numbers(tmp_path):
    a, b = "loss.localization", "optim.learning_rate"
    records = _records({
        ((a, "l1"), (b, 0.01)): [0.50, 0.60, 0.55],
        ((a, "giou"), (b, 0.01)): [0.53, 0.63, 0.57],
        ((a, "l1"), (b, 0.02)): [0.40, 0.62, 0.45],
        ((a, "giou"), (b, 0.02)): [0.45, 0.66, 0.50],
    })  # fmt: skip
    pairs = sweep.results.comparisons(records)
    assert sorted(pairs) == sorted([
        (f"{a}=giou,{b}=0.01", f"{a}=l1,{b}=0.01", a), (f"{a}=l1,{b}=0.02", f"{a}=l1,{b}=0.01", b),
        (f"{a}=giou,{b}=0.02", f"{a}=l1,{b}=0.02", a), (f"{a}=giou,{b}=0.02", f"{a}=giou,{b}=0.01", b),
    ])  # fmt: skip
    assert (f"{a}=l1,{b}=0.01", f"{a}=giou,{b}=0.01", a) in sweep.results.comparisons(records, baseline="giou")
    with pytest.raises(ConfigError, match="--baseline='ciou' is not a value of the first --sweep axis"):
        sweep.results.comparisons(records, baseline="ciou")
    md, png = sweep.write_results(records, str(tmp_path))
    text = open(md).read()
    assert (
        "| arm | baseline | metric | seeds | mean difference | 95% CI | p | p (Holm) | sign-flip p | bootstrap 95% CI "
        "| verdict | seeds needed |"
    ) in text
    saved = json.load(open(tmp_path / "results.json"))
    first = next(c for c in saved["paired"] if c["arm"] == f"{a}=giou,{b}=0.01" and c["metric"] == "AP")
    ref = sps.ttest_rel([0.53, 0.63, 0.57], [0.50, 0.60, 0.55])
    assert first["p"] == pytest.approx(ref.pvalue) and first["verdict"].startswith("better;") and first["n"] == 3
    assert saved["arms"][f"{a}=l1,{b}=0.02"]["per_seed"]["AP"] == {"0": 0.40, "1": 0.62, "2": 0.45}
    assert open(png, "rb").read(4) == b"\x89PNG"


def test_seed_ranges_and_added_seeds(tmp_path):
    assert sweep.parse_seeds(["0-3"]) == [0, 1, 2, 3]
    assert sweep.parse_seeds(["5", "0-2", "1"]) == [5, 0, 1, 2]
    for bad in (["3-1"], ["x"], ["-2"]):
        with pytest.raises(ConfigError, match="--seeds"):
            sweep.parse_seeds(bad)
    for seed in (0, 1, 2):
        (tmp_path / "arm" / f"seed{seed}").mkdir(parents=True)
    assert sweep.existing_seeds(str(tmp_path)) == [0, 1, 2]
    assert sweep.with_added_seeds(str(tmp_path), [0], 2) == [0, 1, 2, 3, 4]
    with pytest.raises(ConfigError, match="--add_seeds=-1"):
        sweep.with_added_seeds(str(tmp_path), [0], -1)
