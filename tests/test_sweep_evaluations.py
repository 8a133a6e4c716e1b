"""Evaluation arms over a finished sweep (jaxdet/sweep/evaluations.py): every run's
checkpoint evaluated under each eval.* setting, paired with the same weights' plain
evaluation, kept and not repeated; training fields refused."""

import json

import pytest

from experiments.configs import default
from jaxdet import configs, sweep
from jaxdet.data.classes import Classes
from jaxdet.errors import ConfigError
from jaxdet.sweep import evaluations

ARMS = {"data.train_sizes=__": {"data.train_sizes": []}, "data.train_sizes=_96,_128_": {"data.train_sizes": [96, 128]}}


def _finished_sweep(root, seeds=(0, 1, 2)):
    for arm, overrides in ARMS.items():
        for seed in seeds:
            run = root / arm / f"seed{seed}"
            configs.record(configs.resolve(sweep.apply(default.get_config("tiny"), overrides, seed)), str(run))
            Classes(("circle", "square"), (1, 2)).write(str(run))
    results = {"seeds": list(seeds), "arms": {a: {"overrides": o} for a, o in ARMS.items()}}
    (root / "results.json").write_text(json.dumps(results))


def test_each_run_is_evaluated_per_setting_once_and_paired_within_its_arm(tmp_path):
    _finished_sweep(tmp_path)
    calls = []

    def evaluate(config, run, checkpoint, out):
        calls.append((run, config.eval.tta, checkpoint))
        gain = 0.03 + 0.004 * config.seed if config.eval.tta == "hflip" else 0.0
        return {"AP": 0.5 + 0.02 * config.seed + gain, "AP50": 0.8}

    records = evaluations.evaluate_arms(str(tmp_path), ["eval.tta='',hflip"], "best", evaluate, log=lambda _: None)
    assert len(records) == len(calls) == 12 and {c[2] for c in calls} == {"best"}
    assert sorted({c[1] for c in calls}) == ["", "hflip"]
    again = evaluations.evaluate_arms(str(tmp_path), ["eval.tta='',hflip"], "best", evaluate, log=lambda _: None)
    assert len(calls) == 12 and [r["final"] for r in again] == [r["final"] for r in records]  # read back
    md, _ = sweep.write_results(records, str(tmp_path / "evaluations"), seconds_label="eval time (s)")
    saved = json.load(open(tmp_path / "evaluations" / "results.json"))
    tta = [c for c in saved["paired"] if c["axis"] == "eval.tta" and c["metric"] == "AP"]
    assert len(tta) == 2 and all(c["mean"] == pytest.approx(0.034) and c["verdict"].startswith("better") for c in tta)
    assert {c["baseline"] for c in tta} == {"data.train_sizes=__,eval.tta=", "data.train_sizes=_96,_128_,eval.tta="}
    assert "eval time (s)" in open(md).read()


def test_training_fields_and_an_unfinished_sweep_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="results.json does not exist: evaluation arms re-use a finished sweep"):
        evaluations.evaluate_arms(str(tmp_path), ["eval.tta=hflip"], "latest", evaluate=None)
    _finished_sweep(tmp_path, seeds=(0,))
    with pytest.raises(ConfigError, match="loss.localization changes training: sweep it with python -m experiments"):
        evaluations.evaluate_arms(str(tmp_path), ["eval.tta,loss.localization=('',l1)"], "latest", lambda *a, **k: {})
