"""Sweeps through real launchers: a local Ray instance (each run a Ray task in a fresh
worker process) gives the serial launcher's per-arm metrics bit for bit; submitit's local
executor (the SLURM launcher's code path, one process per run) retries a failing arm,
finishes the others and marks the failure in results.md."""

import json
import os

import pytest
from coco_folder import tiny_config, write_coco

from jaxdet import experiment, sweep


@pytest.fixture(scope="module")
def base(tmp_path_factory, compilation_cache):
    data = write_coco(str(tmp_path_factory.mktemp("coco")), n_train=8, n_val=4)
    config = tiny_config(data, compilation_cache, steps=3, batch_size=4, eval_every=3, checkpoint_every=3)
    config.data.image_size = 64
    return config


def _finals(records):
    return {(r["arm"], r["seed"]): {k: v for k, v in r["final"].items() if k not in ("time", "seconds")}
            for r in records}  # fmt: skip


def test_a_ray_sweep_equals_the_serial_sweep(base, tmp_path, capsys):
    grid = sweep.parse_sweep(base, ["loss.localization=smooth_l1,giou"])
    # (Both on every CPU device the suite's XLA_FLAGS make, as the workers inherit them.)
    serial = sweep.run_sweep(base, str(tmp_path / "serial"), grid, [0], experiment.train_and_evaluate)
    launcher = sweep.make_launcher("ray", str(tmp_path / "ray"), cpus_per_arm=1)
    on_ray = sweep.run_sweep(base, str(tmp_path / "ray"), grid, [0], experiment.train_and_evaluate, launcher)
    out = capsys.readouterr().out
    assert "sweep: 2/2 done, 0 running, 0 queued, 0 failed" in out
    assert all(r["final"].get("AP") is not None and r["error"] is None for r in on_ray)
    # Bit for bit: the same computation in another process, and the two arms differ.
    ray_finals = _finals(on_ray)
    assert ray_finals == _finals(serial) and len(set(map(str, ray_finals.values()))) == 2
    # Each run had its own process, its output in its own train.log.
    pids = {json.load(open(os.path.join(r["workdir"], "sweep_task.json")))["pid"] for r in on_ray}
    assert len(pids) == 2 and os.getpid() not in pids
    assert "done in" in open(os.path.join(on_ray[0]["workdir"], "train.log")).read()
    import ray

    assert not ray.is_initialized()  # the local instance the sweep started is stopped


def test_slurm_launcher_under_submitit_local_retries_then_marks_a_failing_arm(base, tmp_path, capsys):
    grid = sweep.parse_sweep(base, ["train.batch_size=4,-4"])
    launcher = sweep.make_launcher("slurm", str(tmp_path), cluster="local", timeout_min=10)
    records = sweep.run_sweep(base, str(tmp_path), grid, [0], experiment.train_and_evaluate, launcher, retries=1)
    out = capsys.readouterr().out
    good, bad = records
    assert good["final"].get("AP") is not None and good["error"] is None
    assert "the global batch must be a positive number" in bad["error"] and not bad["final"]
    assert "sweep: train.batch_size=-4 seed 0 failed" in out and "retry 1/1" in out
    md, _ = sweep.write_results(records, str(tmp_path))
    assert "- train.batch_size=-4 seed 0: FAILED: " in open(md).read()
    # Re-running skips the finished arm, whatever launcher ran it.
    sweep.run_sweep(base, str(tmp_path), grid[:1], [0], experiment.train_and_evaluate)
    assert "train.batch_size=4 seed 0 already finished, skipped" in capsys.readouterr().out
