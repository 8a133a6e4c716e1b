"""Data parallelism across devices and processes: same parameters, clear set-up errors."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from experiments.configs import default
from jaxdet import experiment

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _env(devices: int) -> dict:
    flags = f"--xla_force_host_platform_device_count={devices} --xla_backend_optimization_level=0"  # (see conftest)
    return {**os.environ, "XLA_FLAGS": flags, "PYTHONPATH": ROOT}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _restore(workdir: str, step: int, like=None) -> dict:
    """A checkpoint's items merged ({"params", "batch_stats", "step", "opt_state"}) as arrays
    on this process's first device.

    `like` gives the tree's shapes for a checkpoint written on other devices (orbax
    refuses to guess a topology it did not save from)."""
    out = {}
    for item in ("model", "train"):
        path = os.path.join(workdir, "checkpoints", str(step), item)
        if like is None:
            out.update(ocp.StandardCheckpointer().restore(path))
            continue
        one_device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        shapes = {k: like[k] for k in (("params", "batch_stats") if item == "model" else ("step", "opt_state"))}
        target = jax.tree_util.tree_map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=one_device), shapes)
        out.update(ocp.StandardCheckpointer().restore(path, target))
    return out


@pytest.mark.slow  # (the default suite stays under 15 minutes on 2 cores; CI skips slow)
def test_one_four_and_eight_devices_give_the_same_parameters():
    proc = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tests", "scaling_helper.py")],
        capture_output=True, text=True, env=_env(8), cwd=ROOT, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr[-3000:]
    assert "ok: 1, 4 and 8 devices agree" in proc.stdout


def _overrides(tfds_dir: str, **extra) -> list[str]:
    flags = {
        "data.data_dir": tfds_dir,
        "data.train_split": "train[:256]",
        "data.workers": 0,  # input workers change no batch (test_input_pipeline); here they only cost start-up
        "train.steps": 6,
        "train.checkpoint_every": 6,
        "train.eval_every": 6,
        "train.log_every": 5,
        "train.num_prediction_images": 0,
        "train.compilation_cache_dir": "",
        # SGD: Adam divides by sqrt(v), which turns float-noise gradients (the head's conv
        # biases before GroupNorm get ~1e-9) into lr-sized steps, and the cross-process
        # all-reduce sums in another order than one process does.
        "optim.name": "sgd",
        "optim.learning_rate": 0.01,
        **extra,
    }
    return [f"--config.{k}={v}" for k, v in flags.items()]


def _launch(workdir: str, port: int, pid: int, overrides: list[str], timeout: int = 60) -> subprocess.Popen:
    cmd = [
        sys.executable, "-m", "experiments.train", "--config=experiments/configs/default.py:tiny",
        f"--workdir={workdir}", f"--jax_coordinator_address=127.0.0.1:{port}", "--jax_num_processes=2",
        f"--jax_process_id={pid}", f"--jax_initialization_timeout={timeout}", *overrides,
    ]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(2), cwd=ROOT)


def test_two_processes_equal_one_process_with_four_devices(tfds_dir, tmp_path):
    overrides = _overrides(tfds_dir)
    two = str(tmp_path / "two_processes")
    port = _free_port()
    procs = [_launch(two, port, pid, overrides) for pid in (0, 1)]
    outs = [p.communicate(timeout=600) for p in procs]
    for pid, (p, (out, err)) in enumerate(zip(procs, outs)):
        assert p.returncode == 0, f"process {pid} exited {p.returncode}:\n{out}\n{err[-3000:]}"
    assert "step 6/6" in outs[0][0] and "step 6/6" not in outs[1][0]  # progress from process 0 only

    # The same config in this (pytest) process on its 4 devices.
    config = default.get_config("tiny")
    for flag in overrides:
        key, value = flag.removeprefix("--config.").split("=", 1)
        section, field = key.split(".")
        config[section][field] = type(config[section][field])(value)
    one = str(tmp_path / "one_process")
    experiment.train_and_evaluate(config, one, jax.devices()[:4])

    a = _restore(one, 6)
    b = _restore(two, 6, like=a)
    leaves = jax.tree_util.tree_leaves
    assert int(a["step"]) == int(b["step"]) == 6
    for x, y in zip(leaves(a["params"]), leaves(b["params"]), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    # Only process 0 wrote metrics: each (split, step) row once, one TensorBoard file.
    rows = [json.loads(line) for line in open(os.path.join(two, "metrics.jsonl"))]
    keys = [(r["split"], r["step"]) for r in rows]
    assert len(keys) == len(set(keys)) and ("eval", 6) in keys
    assert len(os.listdir(os.path.join(two, "tensorboard"))) == 1


def test_processes_with_different_configs_are_refused(tfds_dir, tmp_path):
    port = _free_port()
    procs = [
        _launch(str(tmp_path / "w"), port, pid, _overrides(tfds_dir, **{"optim.learning_rate": 0.001 * (pid + 1)}))
        for pid in (0, 1)
    ]
    for pid, p in enumerate(procs):
        out, err = p.communicate(timeout=300)
        assert p.returncode != 0, f"process {pid} should have failed:\n{out}"
        assert "different configs" in err, err[-2000:]


def test_unreachable_coordinator_is_an_error_not_a_hang(tmp_path):
    p = _launch(str(tmp_path / "w"), _free_port(), 1, [], timeout=3)
    out, err = p.communicate(timeout=120)
    assert p.returncode != 0
    assert "could not reach the coordinator 127.0.0.1" in err and "within 3s" in err


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--jax_num_processes=2"], "missing: --jax_coordinator_address, --jax_process_id"),
        (["--jax_coordinator_address=h:1", "--jax_num_processes=2", "--jax_process_id=2"], "must be in [0,"),
    ],
)
def test_incomplete_multi_process_flags(tmp_path, flags, message):
    cmd = [sys.executable, "-m", "experiments.train", "--config=experiments/configs/default.py:tiny",
           f"--workdir={tmp_path}", *flags]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(1), cwd=ROOT, timeout=120)
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr[-2000:]


def test_cpu_devices_splits_the_cpu_before_jax_starts_and_refuses_after():
    from jaxdet.errors import ConfigError
    from jaxdet.training import runtime

    # A fresh process: 2 devices, whatever XLA_FLAGS says (here 1).
    code = "from jaxdet.training import runtime; import jax; print(runtime.set_cpu_devices(2), jax.device_count())"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(1), cwd=ROOT)
    assert proc.returncode == 0 and proc.stdout.split() == ["2", "2"], proc.stderr[-2000:]
    # This process's backend is up (conftest's 4 devices): the same count or 0 is fine, another is refused.
    have = len(jax.devices("cpu"))
    assert runtime.set_cpu_devices(0) == runtime.set_cpu_devices(have) == have
    with pytest.raises(ConfigError, match=f"already runs with {have} device"):
        runtime.set_cpu_devices(have + 1)
    with pytest.raises(ConfigError, match="must be an int >= 0"):
        runtime.set_cpu_devices(-1)
