"""The EMA of the weights (optim.ema_decay): ultralytics' update written out in NumPy, the
train step's average against it on 1 and 4 devices, skipped and accumulated steps, what a
run evaluates and checkpoints, exact resume, and the start-up refusals. (1, 4 and 8
devices giving the same average: tests/scaling_helper.py.)"""

import contextlib
import json
import os
import shutil

import jax
import numpy as np
import pytest
from coco_folder import tiny_config, write_coco
from orbax import checkpoint as ocp
from test_train import _batch, _tiny

from jaxdet import configs, detectors, experiment, parallel
from jaxdet.errors import ConfigError
from jaxdet.training import ema, optim
from jaxdet.training.step import init_state, make_train_step, shard_train_step


def _reference(initial, trained, decay, warmup, every=1):
    """ultralytics' ModelEMA over the variables after each step: d = decay * (1 - exp(-u / warmup))."""
    avg, updates = [np.asarray(x, np.float64) for x in initial], 0
    for step, variables in enumerate(trained, start=1):
        if step % every:
            continue
        updates += 1
        d = decay * (1 - np.exp(-updates / warmup)) if warmup else decay
        avg = [d * a + (1 - d) * np.asarray(v, np.float64) for a, v in zip(avg, variables)]
    return avg


def _steps(config, devices, batches):
    mesh = parallel.make_mesh(devices)
    det = detectors.build_detector(config, 5)
    tx, lr = optim.make_optimizer(config.optim, config.train.steps)
    state = init_state(det, tx, jax.random.key(0), config.data.image_size, mesh, ema.enabled(config.optim))
    step = shard_train_step(make_train_step(det, tx, lr, config.optim), mesh)
    states = [jax.device_get(state)]
    for b in batches:
        state, _ = step(state, parallel.global_batch(mesh, b), jax.random.key(1))
        states.append(jax.device_get(state))
    return states


@pytest.mark.parametrize("n_devices, every", [(1, 1), (4, 1), pytest.param(1, 2, marks=pytest.mark.slow)])
def test_the_train_steps_average_is_ultralytics_ema_of_the_weights(n_devices, every):
    config = _tiny(optim__ema_decay=0.9, optim__ema_warmup=3, optim__accumulate_steps=every)
    states = _steps(config, jax.devices()[:n_devices], [_batch(8, 64, seed=s) for s in range(4)])
    leaves = lambda tree: jax.tree_util.tree_leaves(tree)  # noqa: E731
    expected = _reference(leaves(states[0].variables), [leaves(s.variables) for s in states[1:]], 0.9, 3, every)
    for got, want in zip(leaves(states[-1].ema), expected, strict=True):
        np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-7)
    # It moved (the weights did), and it is not the weights themselves.
    first, last = leaves(states[0].ema), leaves(states[-1].ema)
    assert any(not np.array_equal(a, b) for a, b in zip(first, last))
    assert any(not np.array_equal(a, b) for a, b in zip(last, leaves(states[-1].variables)))


def test_a_skipped_step_leaves_the_average_where_it_was():
    config = _tiny(optim__ema_decay=0.9)
    bad = _batch(8, 64, seed=1)
    bad["image"][:] = np.nan
    before, after = _steps(config, jax.devices()[:1], [bad])
    for a, b in zip(jax.tree_util.tree_leaves(before.ema), jax.tree_util.tree_leaves(after.ema), strict=True):
        np.testing.assert_array_equal(a, b)


def test_without_ema_the_state_has_none_and_the_checkpoint_holds_the_weights():
    state = _steps(_tiny(), jax.devices()[:1], [])[0]
    assert state.ema is None
    items = state.items()
    assert set(items["train"]) == {"step", "opt_state"}
    for a, b in zip(jax.tree_util.tree_leaves(items["model"]), jax.tree_util.tree_leaves(state.variables), strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_coco(str(tmp_path_factory.mktemp("coco")), n_train=16, n_val=4)


def _config(data, compilation_cache, **optim_fields):
    config = tiny_config(data, compilation_cache, steps=4, eval_every=2, checkpoint_every=2, keep_checkpoints=5)
    for key, value in optim_fields.items():
        config.optim[key] = value
    return config


def _items(workdir, step):
    return {
        item: jax.tree_util.tree_leaves(
            ocp.StandardCheckpointer().restore(os.path.join(workdir, "checkpoints", str(step), item))
        )
        for item in ("model", "train")
    }


def test_a_run_evaluates_and_checkpoints_the_average_and_resumes_exactly(data, compilation_cache, tmp_path, capsys):
    devices = jax.devices()[:1]
    config = _config(data, compilation_cache, ema_decay=0.7, ema_warmup=2)
    full = str(tmp_path / "full")
    final = experiment.train_and_evaluate(config, full, devices)
    assert "evaluating the EMA of the weights (optim.ema_decay=0.7, ramp over 2 updates" in capsys.readouterr().out
    rows = [json.loads(line) for line in open(os.path.join(full, "metrics.jsonl"))]
    evals = [r for r in rows if r["split"] == "eval"]
    assert [r["step"] for r in evals] == [2, 4] and all(r["ema"] == 1.0 for r in evals)
    # The model item is the average; the trained weights travel in the train item.
    items = _items(full, 4)
    assert len(items["train"]) > len(items["model"])
    # Evaluating the checkpoint from the workdir (no optimizer) gives the run's final metrics.
    from jaxdet.evaluation import evaluator

    again = evaluator.evaluate_checkpoint(None, full, "latest", devices)
    assert again["AP"] == final["AP"] and again["loss_classification"] == final["loss_classification"]

    # Resumed from step 2: every array of step 4 (average, weights, optimizer) equals the run's.
    part = str(tmp_path / "part")
    shutil.copytree(full, part)
    shutil.rmtree(os.path.join(part, "checkpoints", "4"))
    with contextlib.suppress(FileNotFoundError):  # (released at the end of the run; a copy must not carry it)
        os.remove(os.path.join(part, "owner.lock"))
    experiment.train_and_evaluate(config, part, devices)
    assert "resumed from" in capsys.readouterr().out
    resumed = _items(part, 4)
    for name in ("model", "train"):
        for a, b in zip(items[name], resumed[name], strict=True):
            np.testing.assert_array_equal(a, b)

    # The EMA never feeds back into training: the same run without it ends with the trained
    # weights the EMA run keeps in its train item (up to float rounding: the two compiled steps
    # differ by the EMA's update, and XLA may fuse the weights' update differently), and
    # eval.weights="trained" on the EMA run evaluates them: EMA on/off as a pair from one run.
    plain_dir = str(tmp_path / "plain")
    plain = experiment.train_and_evaluate(_config(data, compilation_cache), plain_dir, devices)
    ema_trained = jax.tree_util.tree_leaves(ocp.StandardCheckpointer().restore(
        os.path.join(full, "checkpoints", "4", "train"))["variables"])  # fmt: skip
    for a, b in zip(_items(plain_dir, 4)["model"], ema_trained, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    trained = configs.load_recorded(full)[0]
    trained.eval.weights = "trained"
    off = experiment.evaluate_checkpoint(trained, full, "latest", out=str(tmp_path / "trained_eval"))
    assert off["loss_classification"] == pytest.approx(plain["loss_classification"], rel=1e-5)
    assert off["loss_classification"] != pytest.approx(final["loss_classification"], rel=1e-3)  # not the EMA's
    assert "ema" not in off
    with pytest.raises(ConfigError, match="this run has no EMA"):
        trained.optim.ema_decay = 0.0
        experiment.evaluate_checkpoint(trained, plain_dir, "latest", out=str(tmp_path / "refused"))
    with pytest.raises(ConfigError, match="eval.weights='trained' is for experiments.eval"):
        bad = _config(data, compilation_cache, ema_decay=0.7)
        bad.eval.weights = "trained"
        experiment.train_and_evaluate(bad, str(tmp_path / "bad"), devices)

    # Turning the EMA off (or on) in a workdir is refused before anything is written.
    with pytest.raises(ConfigError, match=r"written with optim.ema_decay > 0 \(an EMA\) = True; this config has False"):
        configs.check_resume(configs.resolve(_config(data, compilation_cache)), full, resuming=True)


@pytest.mark.parametrize(
    "field, value, message",
    [("ema_decay", 1.0, r"ema_decay=1.0 must be in \[0, 1\)"), ("ema_warmup", -1, r"ema_warmup=-1 must be >= 0")],
)
def test_bad_ema_settings_fail_naming_the_field(field, value, message):
    config = _tiny()
    config.optim[field] = value
    with pytest.raises(ConfigError, match=message):
        ema.check(config.optim)
