"""The data-parallel step, end-to-end runs, resume, and start-up errors."""

import json
import os
import re
import subprocess
import sys

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import default
from jaxdet import detectors, experiment, parallel
from jaxdet.evaluation import evaluator
from jaxdet.training import optim
from jaxdet.training.step import init_state, make_train_step, shard_train_step

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny(tfds_dir=None, **overrides):
    config = default.get_config("tiny")
    if tfds_dir:
        config.data.data_dir = tfds_dir
    for key, value in overrides.items():
        section, field = key.split("__")
        config[section][field] = value
    return config


def _batch(n, size, seed=0, max_boxes=4):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, size / 2, (n, max_boxes, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(6, size / 2, (n, max_boxes, 2))], -1).astype(np.float32)
    mask = rng.random((n, max_boxes)) < 0.6
    mask[0] = False  # one empty image
    return {
        "image": rng.uniform(0, 255, (n, size, size, 3)).astype(np.float32),
        "boxes": boxes,
        "labels": rng.integers(0, 5, (n, max_boxes)).astype(np.int32),
        "box_mask": mask,
        "image_mask": np.ones(n, bool),
    }


def _run_steps(config, devices, batches, history=False):
    mesh = parallel.make_mesh(devices)
    det = detectors.build_detector(config, 5)
    tx, lr = optim.make_optimizer(config.optim, config.train.steps)
    state = init_state(det, tx, jax.random.key(0), config.data.image_size, mesh)
    step = shard_train_step(make_train_step(det, tx, lr), mesh)
    metrics, states = {}, [jax.device_get(state)]
    for b in batches:
        state, metrics = step(state, parallel.global_batch(mesh, b), jax.random.key(1))
        if history:
            states.append((jax.device_get(state), jax.device_get(metrics)))
    return states if history else (jax.device_get(state), jax.device_get(metrics))


def test_gradient_accumulation_equals_one_big_step():
    """MultiSteps with K=2 on the same batch twice = one plain step on it (mean of equal gradients)."""
    config = _tiny(optim__name="sgd", optim__schedule="constant", optim__warmup_steps=0, optim__learning_rate=0.05)
    batch = _batch(4, 64, seed=1)
    plain, _ = _run_steps(config, jax.devices()[:1], [batch])
    config.optim.accumulate_steps = 2
    init, (once, _), (twice, _) = _run_steps(config, jax.devices()[:1], [batch, batch], history=True)
    leaves = jax.tree_util.tree_leaves
    for a, b in zip(leaves(once.params), leaves(init.params)):
        np.testing.assert_array_equal(a, b)  # the first micro-step only accumulates
    for a, b in zip(leaves(twice.params), leaves(plain.params)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_bfloat16_compute_trains():
    config = _tiny(train__compute_dtype="bfloat16", optim__learning_rate=3e-3, optim__warmup_steps=0)
    steps = _run_steps(config, jax.devices()[:1], [_batch(4, 64)] * 8, history=True)[1:]
    (state, last), (_, first) = steps[-1], steps[0]
    assert all(np.isfinite(v) for v in last.values())
    # Parameters stay float32; only the computation is bfloat16.
    assert {x.dtype for x in jax.tree_util.tree_leaves(state.params)} == {np.dtype("float32")}
    assert last["loss"] < first["loss"]


def test_loss_decreases_on_a_fixed_batch():
    config = _tiny(optim__learning_rate=3e-3, optim__warmup_steps=0, train__steps=30)
    batch = _batch(4, 64)
    mesh = parallel.make_mesh(jax.devices()[:1])
    det = detectors.build_detector(config, 5)
    tx, lr = optim.make_optimizer(config.optim, 30)
    state = init_state(det, tx, jax.random.key(0), 64, mesh)
    # chex fails the test if the step is traced (so compiled) more than once.
    step_fn = chex.assert_max_traces(make_train_step(det, tx, lr), n=1)
    step = shard_train_step(step_fn, mesh)
    losses = []
    for _ in range(30):
        state, m = step(state, parallel.global_batch(mesh, batch), jax.random.key(0))
        losses.append(float(m["loss"]))
    assert losses[-1] < 0.5 * losses[0], losses


def _rows(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_end_to_end_outputs_resume_and_config_changes(tfds_dir, tmp_path, capsys, monkeypatch):
    devices = jax.devices()[:1]
    full = str(tmp_path / "full")
    metrics = experiment.train_and_evaluate(_tiny(tfds_dir), full, devices)
    out = capsys.readouterr().out
    assert "step 2/6  loss" in out and "img/s" in out and "ETA" in out
    # Evaluating the last checkpoint from the workdir alone (its recorded config and classes,
    # the training split never read) reproduces the run's final evaluation exactly.
    from jaxdet.data import sources

    load = sources.load

    def eval_split_only(data, split, *args, **kwargs):
        assert split != "train", "evaluating a checkpoint read the training split"
        return load(data, split, *args, **kwargs)

    monkeypatch.setattr(sources, "load", eval_split_only)
    again = evaluator.evaluate_checkpoint(None, full, "latest", devices)
    monkeypatch.setattr(sources, "load", load)
    for key in ("AP", "AP50", "AR100", "APl", "loss_classification", "loss_localization"):
        assert again[key] == metrics[key], key
    capsys.readouterr()
    rows = _rows(full)
    train_rows = [r for r in rows if r["split"] == "train"]
    eval_rows = [r for r in rows if r["split"] == "eval"]
    assert [r["step"] for r in train_rows] == [2, 4, 6]
    assert {"loss", "classification", "localization", "confidence", "learning_rate"} <= set(train_rows[0])
    assert eval_rows[-1]["step"] == 6 and "AP75" in eval_rows[-1] and "loss_classification" in eval_rows[-1]
    assert sorted(os.listdir(os.path.join(full, "checkpoints"))) == ["3", "6"]
    assert os.listdir(os.path.join(full, "tensorboard"))
    assert len([p for p in os.listdir(os.path.join(full, "predictions")) if p.endswith(".png")]) == 2
    assert json.load(open(os.path.join(full, "config.json")))["model"]["name"] == "retinanet"

    # A finished run re-launched does not train again.
    experiment.train_and_evaluate(_tiny(tfds_dir), full, devices)
    assert "training already complete at step 6" in capsys.readouterr().out

    # (Exact resume after kill -9 / SIGTERM: tests/test_resilience.py.) Raising train.steps
    # resumes and the learning-rate schedule follows the new length.
    config = _tiny(tfds_dir, train__steps=8)
    experiment.train_and_evaluate(config, full, devices)
    out = capsys.readouterr().out
    assert "resumed from" in out and "steps 6->8" in out and "train.steps: 6 -> 8" in out
    assert "train.steps 6 -> 8: the learning-rate schedule follows the new length" in out
    last = [r for r in _rows(full) if r["split"] == "train"][-1]
    # Row 8 averages steps 7 and 8, as in a run never stopped: the first step after a
    # resume (compiling) counts in the averages, only not in images/s.
    assert last["step"] == 8
    schedule = optim.learning_rate_schedule(config.optim, 8)
    expected = (float(schedule(6)) + float(schedule(7))) / 2
    assert expected > 0 and abs(last["learning_rate"] - expected) < 1e-9 * max(expected, 1)

    # The same workdir with a different model is refused with a diff ...
    with pytest.raises(ValueError, match=r"(?s)model.backbone: 'resnet_tiny' -> 'resnet_small'.*allow_config_change"):
        experiment.train_and_evaluate(_tiny(tfds_dir, model__backbone="resnet_small", train__steps=8), full, devices)
    # ... unless allowed: then the changes are logged.
    config = _tiny(tfds_dir, data__hflip=False, train__steps=8, train__allow_config_change=True)
    experiment.train_and_evaluate(config, full, devices)
    out = capsys.readouterr().out
    assert "resuming with a changed model/data config" in out and "data.hflip: True -> False" in out


def test_warmup_and_cosine_schedule():
    config = default.get_config()
    config.optim.warmup_steps = 10
    _, lr = optim.make_optimizer(config.optim, 110)
    assert float(lr(0)) == 0.0
    assert float(lr(5)) == pytest.approx(config.optim.learning_rate / 2)
    assert float(lr(10)) == pytest.approx(config.optim.learning_rate)
    assert float(lr(110)) == pytest.approx(0.0, abs=1e-9)
    mask = optim.decay_mask(
        {"conv": {"kernel": jnp.zeros((3, 3, 1, 1)), "bias": jnp.zeros(1)}, "norm": {"scale": jnp.zeros(4)}}
    )
    assert mask == {"conv": {"kernel": True, "bias": False}, "norm": {"scale": False}}


def test_best_checkpoint_early_stopping_and_eval_cli(tfds_dir, tmp_path, capsys):
    """AP of a 2-step model stays 0: the first evaluation is the best, the next one without
    improvement stops the run (patience 1); `evaluate_checkpoint` then evaluates the best."""
    config = _tiny(tfds_dir, train__steps=8, train__eval_every=2, train__early_stop_patience=1)
    config.train.num_prediction_images = 0
    workdir = str(tmp_path / "run")
    experiment.train_and_evaluate(config, workdir, jax.devices()[:1])
    out = capsys.readouterr().out
    assert "new best AP 0.0000 at step 2" in out and "early stopping at step 4" in out
    assert "| class | AP | AP50 | AP75 |" in out and "missed objects" in out  # per-class table, errors
    assert json.load(open(os.path.join(workdir, "best.json")))["step"] == 2
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints_best"))) == ["2"]
    assert max(int(d) for d in os.listdir(os.path.join(workdir, "checkpoints")) if d.isdigit()) == 4
    for name in ("per_class.md", "pr_curves.png", "errors.txt"):
        assert os.path.exists(os.path.join(workdir, "eval", name))
    metrics = evaluator.evaluate_checkpoint(config, workdir, "best")
    assert "AP" in metrics and "loss_localization" in metrics and "AP/circle" in metrics
    assert "best checkpoint, step 2:" in capsys.readouterr().out
    with pytest.raises(ValueError, match="no checkpoint at step 5"):
        evaluator.evaluate_checkpoint(config, workdir, "5")
    from jaxdet.evaluation import curves

    assert os.path.getsize(curves.plot_curves(workdir)) > 10_000  # workdir/curves.png
    # experiments.predict on the run: a picture per image and COCO results with file names.
    from PIL import Image

    Image.fromarray(np.full((50, 70, 3), 128, np.uint8)).save(tmp_path / "a.jpg")
    Image.fromarray(np.full((90, 40, 3), 60, np.uint8)).save(tmp_path / "b.png")
    pred = tmp_path / "pred"
    cmd = [sys.executable, "-m", "experiments.predict", f"--workdir={workdir}", f"--images={tmp_path}/*.*g",
           f"--out={pred}", "--score_threshold=0.0", "--checkpoint=best"]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "checkpoint step 2" in proc.stdout
    assert re.search(r"^predict: 2 images in [0-9.]+s \([0-9.]+ images/s\)$", proc.stdout, re.M), proc.stdout
    results = json.load(open(pred / "detections.json"))
    assert {r["file_name"] for r in results} <= {"a.jpg", "b.png"} and (pred / "a.jpg.png").exists()
    for r in results:
        size = (70, 50) if r["file_name"] == "a.jpg" else (40, 90)
        x, y, w, h = r["bbox"]
        assert 0 <= x and x + w <= size[0] + 1e-3 and 0 <= y and y + h <= size[1] + 1e-3


def test_nonfinite_step_is_not_applied():
    # (Constant learning rate: a skipped step does not advance the optimizer's own schedule
    # count either, as optax.apply_if_finite, so with warm-up from 0 the next step would not move.)
    config = _tiny(optim__name="sgd", optim__learning_rate=0.01, optim__schedule="constant", optim__warmup_steps=0)
    good, bad = _batch(4, 64, seed=1), _batch(4, 64, seed=2)
    bad["image"][1, 3, 3, 0] = np.nan
    init, (after_bad, m_bad), (after_good, m_good) = _run_steps(config, jax.devices()[:1], [bad, good], history=True)
    assert m_bad["nonfinite"] == 1.0 and m_bad["nonfinite/classification"] == 1.0 and int(after_bad.step) == 1
    for a, b in zip(jax.tree_util.tree_leaves(after_bad.params), jax.tree_util.tree_leaves(init.params)):
        np.testing.assert_array_equal(a, b)  # skipped: nothing moved
    assert m_good["nonfinite"] == 0.0 and np.isfinite(m_good["loss"])
    moved = [not np.array_equal(a, b) for a, b in zip(jax.tree_util.tree_leaves(after_good.params),
                                                       jax.tree_util.tree_leaves(init.params))]  # fmt: skip
    assert any(moved)


def test_nonfinite_steps_are_counted_and_k_in_a_row_stop_the_run(tfds_dir, tmp_path, capsys, monkeypatch):
    from jaxdet.data import pipeline
    from jaxdet.errors import NonFiniteError

    original = pipeline.Pipeline.train

    def poisoned(self, *args, **kwargs):  # NaN pixels in the batches of steps 2, 4 and 5
        for step, batch in enumerate(original(self, *args, **kwargs), start=args[2] + 1):
            batch["image"] = batch["image"].astype(np.float32)  # (uint8 holds no NaN; the model takes either)
            if step in (2, 4, 5):
                batch["image"][0, 0, 0, 0] = np.nan
            yield batch

    monkeypatch.setattr(pipeline.Pipeline, "train", poisoned)
    config = _tiny(tfds_dir, train__max_nonfinite_steps=2, train__steps=8)
    config.train.num_prediction_images = 0
    with pytest.raises(NonFiniteError, match=r"stopping at step 5: 2 consecutive steps with non-finite loss terms"):
        experiment.train_and_evaluate(config, str(tmp_path / "run"), jax.devices()[:1])
    out = capsys.readouterr().out
    assert "step 2: non-finite loss terms classification" in out and "(1 in a row, 1 in all)" in out
    assert "step 5: non-finite" in out and "(2 in a row, 3 in all)" in out
    assert sorted(os.listdir(tmp_path / "run" / "checkpoints")) == ["3"]  # the last good one, complete
