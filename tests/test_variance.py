"""The seed's parts (config.seeds.init / data / step) and --variance's components
(jaxdet/sweep/variance.py) against statsmodels on the same numbers."""

import json
import warnings

import jax
import numpy as np
import pytest

from jaxdet import config_fields, configs
from jaxdet.errors import ConfigError
from jaxdet.sweep import variance


def test_each_part_of_the_seed_drives_its_own_randomness(tfds_dir, tmp_path):
    """seeds.init = 1 on seed 0 starts from seed 1's weights but reads seed 0's batches and
    draws seed 0's step keys; -1 (the default) is config.seed."""
    from experiments.configs import default
    from jaxdet.training import loop
    from jaxdet.training.run import Run

    def run(seed: int, init: int) -> Run:
        config = default.get_config("tiny")
        config.data.data_dir = tfds_dir
        config.data.workers = 0
        config.seed, config.seeds.init = seed, init
        return Run(config, str(tmp_path / f"{seed}_{init}"), jax.devices()[:1])

    split, other = run(0, 1), run(1, -1)
    assert config_fields.seed_of(split.config, "data") == 0 and config_fields.seed_of(other.config, "init") == 1
    for a, b in zip(jax.tree.leaves(split.initial_state().params), jax.tree.leaves(other.initial_state().params)):
        np.testing.assert_array_equal(a, b)
    first = lambda r: next(iter(loop._train_stream(r, 0)))  # noqa: E731
    assert not np.array_equal(np.asarray(first(split)["image"]), np.asarray(first(other)["image"]))
    assert jax.random.key_data(split.base_rng).tolist() == jax.random.key_data(jax.random.key(0)).tolist()
    config = default.get_config("tiny")
    for part, value, message in (("init", -2, "config.seeds.init=-2: an int >= 0"), ("lr", 0, "no such part")):
        config.seeds[part] = value
        with pytest.raises(ConfigError, match=message):
            configs.validate(configs.resolve(config), 1)
        del config.seeds[part]
        config.seeds.init = -1


def _table(k=4, seed=0, sds=(0.02, 0.01, 0.005)):
    rng = np.random.default_rng(seed)
    return 0.5 + rng.normal(0, sds[0], (k, 1)) + rng.normal(0, sds[1], (1, k)) + rng.normal(0, sds[2], (k, k))


def test_mean_squares_equal_statsmodels_anova_and_the_estimates_its_reml():
    import pandas as pd
    import statsmodels.api as sm
    from statsmodels.formula.api import ols

    y = _table()
    k = y.shape[0]
    df = pd.DataFrame([(i, j, y[i, j]) for i in range(k) for j in range(k)], columns=["init", "data", "ap"])
    anova = sm.stats.anova_lm(ols("ap ~ C(init) + C(data)", df).fit())
    ms = variance.mean_squares(y)
    np.testing.assert_allclose(
        [ms["init"], ms["data"], ms["rest"]], anova["mean_sq"].to_numpy(), rtol=1e-10
    )  # rows: C(init), C(data), Residual
    df["one"] = 1
    from statsmodels.tools.sm_exceptions import ConvergenceWarning

    with warnings.catch_warnings():  # (statsmodels' boundary check fires on this small design; the values match)
        warnings.simplefilter("ignore", ConvergenceWarning)
        fit = sm.MixedLM.from_formula(
            "ap ~ 1", groups="one", vc_formula={"init": "0 + C(init)", "data": "0 + C(data)"}, re_formula="0", data=df
        ).fit(reml=True)
    c = variance.components(y)
    reml = dict(zip(fit.model.exog_vc.names, fit.vcomp))
    assert c.variances["init"] == pytest.approx(reml["init"], rel=2e-3)
    assert c.variances["data"] == pytest.approx(reml["data"], rel=2e-3)
    assert c.variances["rest"] == pytest.approx(fit.scale, rel=2e-3)
    assert sum(c.shares.values()) == pytest.approx(1.0)
    assert all(low <= c.shares[s] <= high for s, (low, high) in c.intervals.items())


def test_a_dominant_source_is_found_and_the_report_is_written(tmp_path):
    y = _table(k=5, seed=1, sds=(0.0, 0.03, 0.003))  # the data order does it all
    c = variance.components(y)
    assert c.shares["data"] > 0.8 and c.intervals["data"][0] > 0.4 and c.shares["init"] < 0.1
    records = [
        {"overrides": {"seeds.init": i, "seeds.data": j}, "final": {"AP": float(y[i, j])}}
        for i in range(5)
        for j in range(5)
    ]
    md = variance.write(records, str(tmp_path))
    text = open(md).read()
    assert "5 x 5 runs over seeds.init x seeds.data" in text and "| seeds.data (order, augmentation) |" in text
    assert json.load(open(tmp_path / "variance.json"))["table"] == y.tolist()
    with pytest.raises(ConfigError, match="1 run\\(s\\) of the 5 x 5 factorial have no AP"):
        variance.write(records[:-1] + [{"overrides": records[-1]["overrides"], "final": {}}], str(tmp_path))
    with pytest.raises(ConfigError, match="--variance=1: at least 2 seeds per source"):
        variance.grid(1)
    assert variance.grid(3) == ["seeds.init=0,1,2", "seeds.data=0,1,2"]
