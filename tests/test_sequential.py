"""--until_decided's statistics (jaxdet/sweep/sequential.py) and the small-sample tests
(jaxdet/sweep/stats.py) against scipy and statsmodels on the same numbers, the design's
operating characteristics by simulation, and the rounds driver (until_decided.py) on
fake runs: decided arms get no more seeds, a restarted sweep replays its rounds."""

import json
import math
import os
import zlib

import numpy as np
import pytest
from scipy import stats as sps

from jaxdet.errors import ConfigError
from jaxdet.sweep import planning, results, sequential, stats, until_decided

DESIGN = sequential.Design(alpha=0.05, margin=0.0, seed_round=2, max_seeds=10)


def test_holm_equals_statsmodels():
    from statsmodels.stats.multitest import multipletests

    rng = np.random.default_rng(0)
    for m in (1, 2, 5, 12):
        ps = rng.uniform(0, 0.2, m) ** 2
        ours = stats.holm(dict(enumerate(ps)))
        ref = multipletests(ps, method="holm")[1]
        np.testing.assert_allclose([ours[i] for i in range(m)], ref, rtol=1e-12)
    assert (
        math.isnan(stats.holm({"a": math.nan, "b": 0.01})["a"]) and stats.holm({"a": math.nan, "b": 0.01})["b"] == 0.01
    )


@pytest.mark.parametrize("n", [2, 3, 5, 9])
def test_sign_flip_and_bootstrap_equal_scipy(n):
    d = np.random.default_rng(n).normal(0.01, 0.02, n)
    ref = sps.permutation_test((d,), np.mean, permutation_type="samples", n_resamples=np.inf)
    assert stats.sign_flip_p(d) == pytest.approx(ref.pvalue, rel=1e-12)
    boot = sps.bootstrap((d,), np.mean, n_resamples=9999, method="percentile", rng=np.random.default_rng(0))
    assert stats.bootstrap_ci(d) == (boot.confidence_interval.low, boot.confidence_interval.high)
    # the smallest p the sign-flip test can give: both extreme patterns
    assert stats.sign_flip_p(np.full(n, 0.01) + np.arange(n) * 1e-4) == pytest.approx(2 / 2**n)


def test_a_t_test_better_that_the_sign_flip_test_cannot_confirm_says_so():
    p = stats.compare({0: 0.50, 1: 0.60, 2: 0.55}, {0: 0.53, 1: 0.63, 2: 0.571})
    assert p.p < 0.05 and p.p_sign == 0.25 and np.isfinite(p.boot_low)
    assert p.verdict.startswith("better; the exact sign-flip test disagrees (p = 0.25, at least 0.25 with 3 seeds)")
    many = stats.compare(dict(enumerate(np.zeros(12))), dict(enumerate(np.linspace(0.01, 0.02, 12))))
    assert many.verdict == "better" and math.isnan(many.p_sign)  # 12 seeds: no small-sample columns


def test_one_look_is_the_fixed_t_test_and_the_spending_is_obrien_fleming():
    for n in (3, 10):
        (c,) = sequential.boundaries((n,), n, 0.05)
        assert c == pytest.approx(sps.t.ppf(0.975, n - 1), rel=0.005)
    # Lan-DeMets O'Brien-Fleming: alpha(t) = 2 - 2 Phi(1.96 / sqrt(t)); at t = 0.5, 0.0056 (Jennison & Turnbull)
    assert sequential.spent(0.5, 0.05) == pytest.approx(0.00557, abs=1e-5) and sequential.spent(
        1.0, 0.05
    ) == pytest.approx(0.05)
    cs = sequential.boundaries((2, 4, 6, 8, 10), 10, 0.05)
    assert all(a > b for a, b in zip(cs, cs[1:])) and cs[-1] > sps.t.ppf(0.975, 9)  # stricter than fixed
    assert sequential.boundaries((2, 4), 10, 0.05) == cs[:2]  # a boundary depends only on the looks up to it
    pocock = sequential.boundaries((2, 4, 6, 8, 10), 10, 0.05, "pocock")  # spends more early, more at the end
    assert pocock[1] < cs[1] and pocock[-1] > cs[-1] and sequential.spent(1.0, 0.05, "pocock") == pytest.approx(0.05)


def _simulate(effect: float, sims: int, design=DESIGN, arms: int = 1, seed: int = 0):
    s = planning.simulate(effect, sims, design, arms, seed)
    return s.verdicts, s.seeds, s.fixed


def test_operating_characteristics_by_simulation():
    """No effect: any verdict of a difference at most alpha (within simulation error);
    effects of 0.5 / 1 / 2 sd: power and expected seeds beside the fixed 10-seed design."""
    sims = 3000
    v, _, fixed = _simulate(0.0, sims)
    false = np.isin(v[:, 0], ["better", "worse"]).mean()
    se = math.sqrt(0.05 * 0.95 / sims)
    assert false <= 0.05 + 2.6 * se and fixed.mean() <= 0.05 + 2.6 * se, (false, fixed.mean())
    rows = [(0.0, false, 10.0, fixed.mean())]
    for effect in (0.5, 1.0, 2.0):
        v, n, fixed = _simulate(effect, 2000, seed=int(effect * 10))
        power = (v[:, 0] == "better").mean()
        rows.append((effect, power, n.mean(), fixed.mean()))
    print("\neffect (sd) | P(better) until_decided | mean seeds | P(better) fixed 10 seeds")
    for r in rows:
        print(f"{r[0]:.1f} | {r[1]:.3f} | {r[2]:.2f} | {r[3]:.3f}")
    by = {r[0]: r for r in rows}
    assert by[2.0][1] > 0.99 and by[2.0][2] < 7  # a large effect stops well before max_seeds (6.35 seen)
    assert by[1.0][1] >= by[1.0][3] - 0.08  # at most a little power lost against the fixed design
    assert by[1.0][2] < 10 and by[0.5][1] < by[1.0][1] < by[2.0][1]


def test_many_arms_and_equivalence_keep_the_error():
    """Three arms of no effect: any false verdict (Holm) at most alpha. A true difference of
    exactly the margin: declared equivalent at most alpha; no difference: mostly equivalent."""
    v, _, _ = _simulate(0.0, 1500, arms=3, seed=5)
    family = np.isin(v, ["better", "worse"]).any(axis=1).mean()
    assert family <= 0.05 + 2.6 * math.sqrt(0.05 * 0.95 / 1500), family
    design = sequential.Design(alpha=0.05, margin=0.02, seed_round=2, max_seeds=20)  # margin = 1 sd
    at_margin, _, _ = _simulate(1.0, 1500, design, seed=6)
    assert (at_margin[:, 0] == "equivalent").mean() <= 0.05 + 2.6 * math.sqrt(0.05 * 0.95 / 1500)
    none, n, _ = _simulate(0.0, 500, design, seed=7)
    assert (none[:, 0] == "equivalent").mean() > 0.5 and n.mean() < 20


def test_a_decided_comparison_keeps_its_verdict_and_undecided_ones_say_what_a_fixed_design_needs():
    big = [sequential.Look(n, 0.05, 0.005) for n in (2, 4, 6, 8, 10)]  # t ~ 20-45: decided early
    noise = [sequential.Look(n, 0.008, 0.02) for n in (2, 4, 6, 8, 10)]  # effect 0.4 sd: ~52 seeds
    out = sequential.decide({"big": big, "noise": noise}, DESIGN)
    assert out["big"].verdict == "better" and out["big"].round == 2 and out["big"].look.n == 4
    assert out["noise"].verdict == "undecided" and out["noise"].round == 5 and out["noise"].seeds_needed > 10
    assert out["big"].ci_low > 0 > out["noise"].ci_low and out["big"].p_holm <= 0.05 < out["noise"].p_holm
    assert out["big"].p <= out["big"].p_holm
    partial = sequential.decide({"noise": noise[:2]}, DESIGN)
    assert partial["noise"].verdict == "running" and not partial["noise"].decided


def _fake_runner(effects: dict[str, float], ran: list):
    """A training stand-in: writes the final evaluation row with AP = 0.5 + effect + noise."""

    def run(config, workdir):
        arm = os.path.basename(os.path.dirname(workdir))
        ran.append((arm, config.seed))
        shared = np.random.default_rng(config.seed).normal(0, 0.02)  # what one seed does to every arm
        own = np.random.default_rng([config.seed, zlib.crc32(arm.encode())]).normal(0, 0.002)  # the arm's own
        ap = 0.5 + shared + effects.get(arm, 0.0) + own
        os.makedirs(workdir, exist_ok=True)
        with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
            f.write(json.dumps({"split": "eval", "step": config.train.steps, "AP": ap, "AP50": ap + 0.2}) + "\n")

    return run


def test_until_decided_stops_decided_arms_resumes_and_refuses_another_design(tmp_path, capsys):
    from experiments.configs import default
    from jaxdet import sweep

    config = default.get_config("tiny")
    grid = sweep.parse_sweep(config, ["loss.focal_gamma=2.0,1.0,1.5"])
    effects = {"loss.focal_gamma=1.0": 0.05, "loss.focal_gamma=1.5": 0.0}
    ran: list = []
    design = sequential.Design(alpha=0.05, margin=0.01, seed_round=2, max_seeds=8)
    pool = until_decided.seed_pool([0], 8)
    assert pool == list(range(8))
    log = []
    records, verdicts = until_decided.run_until_decided(
        config, str(tmp_path), grid, pool, _fake_runner(effects, ran), None, 0, design, log=log.append
    )
    by_arm = {arm: v for (arm, _, _), v in verdicts.items()}
    assert by_arm["loss.focal_gamma=1.0"].verdict == "better" and by_arm["loss.focal_gamma=1.0"].look.n < 8
    seeds_of = lambda arm: sorted(s for a, s in ran if a == arm)  # noqa: E731
    assert len(seeds_of("loss.focal_gamma=1.0")) == by_arm["loss.focal_gamma=1.0"].look.n  # no seed after its verdict
    assert len(seeds_of("loss.focal_gamma=2.0")) == max(v.look.n for v in verdicts.values())  # the baseline: all
    assert len(ran) == len(set(ran)) == len(records)
    assert any(line.startswith("sweep: round 1/4: seeds 0, 1 for 3 arm(s), 2 comparison(s) open") for line in log)
    table = until_decided.verdict_table(verdicts, design)
    md, _ = sweep.write_results(records, str(tmp_path), sequential=table)
    text = open(md).read()
    assert "Sequential verdicts on AP" in text and "| loss.focal_gamma=1.0 | loss.focal_gamma=2.0 | better |" in text
    saved = json.load(open(tmp_path / "results.json"))
    assert {r["verdict"] for r in saved["sequential"]} == {v.verdict for v in verdicts.values()}
    # Run again: every round replays from disk to the same verdicts, nothing re-run.
    before = len(ran)
    _, again = until_decided.run_until_decided(
        config, str(tmp_path), grid, pool, _fake_runner(effects, ran), None, 0, design, log=log.append
    )
    assert len(ran) == before and again == verdicts
    with pytest.raises(ConfigError, match=r"--max_seeds=10 \(the sweep's: 8\)"):
        other = sequential.Design(alpha=0.05, margin=0.01, seed_round=2, max_seeds=10)
        until_decided.run_until_decided(config, str(tmp_path), grid, pool, None, None, 0, other)
    with pytest.raises(ConfigError, match="give a --sweep axis of 2 values or more"):
        until_decided.run_until_decided(config, str(tmp_path / "one"), grid[:1], pool, None, None, 0, design)
    for bad, message in ((dict(margin=-1.0), "--margin=-1.0"), (dict(max_seeds=1), "--max_seeds=1")):
        with pytest.raises(ConfigError, match=message):
            sequential.Design(**bad).check()


def test_the_fixed_table_adjusts_over_the_family_with_holm():
    from statsmodels.stats.multitest import multipletests

    from jaxdet import sweep

    rng = np.random.default_rng(3)
    base = rng.uniform(0.4, 0.6, 6)
    records = []
    for value, shift in (("2.0", 0.0), ("1.0", 0.012), ("0.5", 0.004), ("0.0", -0.01)):
        overrides = {"loss.focal_gamma": value}
        for seed in range(6):
            ap = base[seed] + shift + rng.normal(0, 0.006)
            records.append({"arm": sweep.arm_name(overrides), "overrides": overrides, "seed": seed,
                            "final": {"AP": ap, "AP50": ap}, "train": [], "terms": [], "seconds": 1.0})  # fmt: skip
    paired, lines = results.paired_table(records)
    ap = [c for c in paired if c["metric"] == "AP"]
    np.testing.assert_allclose([c["p_holm"] for c in ap], multipletests([c["p"] for c in ap], method="holm")[1])
    assert all(np.isfinite(c["p_sign"]) and c["boot_low"] <= c["mean"] <= c["boot_high"] for c in ap)
    for c in ap:
        if c["p"] < 0.05 <= c["p_holm"]:
            assert c["verdict"].startswith("no difference detectable with 6 seeds after Holm's correction")
    assert any("p (Holm)" in line for line in lines)
