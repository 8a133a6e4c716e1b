"""Runs that survive: kill -9 at any moment, SIGTERM, kills during a save; each re-run of
the same command resumes, and the run ends with the parameters of an uninterrupted one.

The runs are real `python -m experiments.train` processes on the tiny config (one CPU
device each), saving a checkpoint at every step so that a kill can land in a save.
"""

import os
import random
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import psutil
import pytest

from tests.coco_folder import wait_until

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 12


def _command(workdir: str, tfds_dir: str, cache: str, **extra) -> list[str]:
    flags = {
        "data.data_dir": tfds_dir,
        "train.steps": STEPS,
        "train.checkpoint_every": 1,  # a save at every step: kills often land in one
        "train.keep_checkpoints": 3,
        "train.eval_every": STEPS,
        "train.log_every": 1,
        "train.num_prediction_images": 0,
        "train.compilation_cache_dir": cache,  # re-launches load the compiled step
        "data.eval_max_images": 8,
        "data.train_split": "train[:256]",  # loads in a fraction of a second at every re-launch
        **extra,
    }
    return [
        sys.executable, "-m", "experiments.train", "--config=experiments/configs/default.py:tiny",
        f"--workdir={workdir}", *(f"--config.{k}={v}" for k, v in flags.items()),
    ]  # fmt: skip


def _start(cmd: list[str], log_path: str) -> subprocess.Popen:
    flags = "--xla_force_host_platform_device_count=1 --xla_backend_optimization_level=0"  # (see conftest)
    env = {**os.environ, "XLA_FLAGS": flags, "PYTHONPATH": ROOT}
    log = open(log_path, "w")
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)


def _complete_steps(workdir: str) -> list[int]:
    d = os.path.join(workdir, "checkpoints")
    return sorted(int(n) for n in os.listdir(d) if n.isdigit()) if os.path.isdir(d) else []


def _saving(workdir: str) -> bool:
    """True while orbax writes a checkpoint (its temporary directory exists)."""
    d = os.path.join(workdir, "checkpoints")
    return os.path.isdir(d) and any("tmp" in n for n in os.listdir(d))


def _params(workdir: str, step: int) -> list[np.ndarray]:
    """Every array a checkpoint holds (both items: the model's variables, the step and optimizer)."""
    trees = [ocp.StandardCheckpointer().restore(os.path.join(workdir, "checkpoints", str(step), item))
             for item in ("model", "train")]  # fmt: skip
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(trees)]


def test_killed_and_preempted_run_ends_with_the_uninterrupted_parameters(tfds_dir, tmp_path):
    rng = random.Random()
    seed = rng.randrange(1 << 30)
    rng.seed(seed)  # printed in failures: a failing kill schedule can be replayed
    cache = str(tmp_path / "xla_cache")
    ref_dir, run_dir = str(tmp_path / "uninterrupted"), str(tmp_path / "interrupted")
    # The uninterrupted run goes alongside the interrupted one (the test's time, not its logic).
    ref = _start(_command(ref_dir, tfds_dir, cache), str(tmp_path / "ref.log"))
    cmd = _command(run_dir, tfds_dir, cache)
    logs = []

    def launch() -> subprocess.Popen:
        logs.append(str(tmp_path / f"run{len(logs)}.log"))
        return _start(cmd, logs[-1])

    def tail() -> str:
        return f"(kill schedule seed {seed})\n" + open(logs[-1]).read()[-3000:]

    # 1. kill -9 at a random moment after a random step's checkpoint.
    k = rng.randint(2, STEPS // 2)
    p = launch()
    wait_until(p, lambda: _complete_steps(run_dir) and _complete_steps(run_dir)[-1] >= k, f"checkpoint {k}")
    time.sleep(rng.uniform(0.0, 0.2))
    children = psutil.Process(p.pid).children(recursive=True)  # the input workers (data.workers=-1)
    assert children, tail()
    p.send_signal(signal.SIGKILL)
    p.wait()
    survived = _complete_steps(run_dir)[-1]
    _, alive = psutil.wait_procs(children, timeout=15)
    assert not alive, f"processes outlived the killed trainer: {alive}"

    # 2. Re-run, and kill -9 while a checkpoint is being written (again if the save won the race).
    for attempt in range(3):
        p = launch()
        wait_until(p, lambda: "resumed from" in open(logs[-1]).read(), "the resume")
        assert f"resumed from {run_dir}/checkpoints at step {survived}" in open(logs[-1]).read(), tail()
        wait_until(p, lambda: _saving(run_dir) and _complete_steps(run_dir)[-1] > survived, "a save in progress")
        p.send_signal(signal.SIGKILL)
        p.wait()
        survived = _complete_steps(run_dir)[-1]
        if _saving(run_dir):  # the half-written checkpoint is left behind
            break
    else:
        raise AssertionError("three kills during a save all came after the save had finished")

    # 3. Re-run (restores the newest complete checkpoint, ignoring the partial one), then SIGTERM.
    p = launch()
    wait_until(p, lambda: "first step (compilation included)" in open(logs[-1]).read(), "the first step")
    p.send_signal(signal.SIGTERM)
    assert p.wait(timeout=120) == 128 + signal.SIGTERM, tail()
    log = open(logs[-1]).read()
    assert f"resumed from {run_dir}/checkpoints at step {survived}" in log, tail()
    match = re.search(rf"stopped at step (\d+)/{STEPS} on SIGTERM: checkpoint \1 is saved", log)
    assert match, tail()
    stopped = int(match.group(1))
    assert "Traceback" not in log, tail()
    assert _complete_steps(run_dir)[-1] == stopped and not _saving(run_dir), tail()

    # 4. Re-run to the end: the parameters (and the whole state) equal the uninterrupted run's, bitwise.
    p = launch()
    assert p.wait(timeout=600) == 0, tail()
    assert f"resumed from {run_dir}/checkpoints at step {stopped}" in open(logs[-1]).read(), tail()
    assert ref.wait(timeout=600) == 0, open(tmp_path / "ref.log").read()[-3000:]
    for a, b in zip(_params(ref_dir, STEPS), _params(run_dir, STEPS), strict=True):
        np.testing.assert_array_equal(a, b, err_msg=f"kill schedule seed {seed}")


@pytest.mark.slow
def test_sigint_stops_two_processes_at_the_same_step(tfds_dir, tmp_path):
    """Ctrl-C on one process of two: both save the same step and exit 130 / 143."""
    from tests.test_scaling import _free_port, _launch, _overrides

    port, workdir = _free_port(), str(tmp_path / "w")
    extra = {"train.steps": 400, "train.checkpoint_every": 1000, "train.eval_every": 1000, "train.log_every": 1}
    procs = [_launch(workdir, port, pid, _overrides(tfds_dir, **extra)) for pid in (0, 1)]
    deadline = time.time() + 300
    while not _complete_steps(workdir) and time.time() < deadline:
        # Progress lines come from process 0; wait for a few steps before the signal.
        metrics = os.path.join(workdir, "metrics.jsonl")
        if os.path.exists(metrics) and len(open(metrics).readlines()) >= 3:
            break
        time.sleep(0.05)
    procs[1].send_signal(signal.SIGINT)
    outs = [p.communicate(timeout=300) for p in procs]
    codes = [p.returncode for p in procs]
    assert codes == [128 + signal.SIGTERM, 128 + signal.SIGINT], (codes, outs[0][1][-2000:], outs[1][1][-2000:])
    match = re.search(r"stopped at step (\d+)/400 on a preemption notice", outs[0][0])
    assert match, outs[0][0][-2000:]
    assert _complete_steps(workdir) == [int(match.group(1))]


def test_no_pickle_in_any_loading_path():
    """Checkpoints are orbax (tensorstore + JSON), records JSON; torch files only with weights_only=True."""
    offenders = []
    for top in ("jaxdet", "experiments"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, top)):
            for name in files:
                if not name.endswith(".py"):
                    continue
                path = os.path.join(dirpath, name)
                for i, line in enumerate(open(path), 1):
                    code = line.split("#")[0]
                    bad = re.search(r"\bimport (c?pickle|dill|joblib)\b|allow_pickle\s*=\s*True|pickle\.loads?\(", code)
                    if bad or ("torch.load(" in code and "weights_only=True" not in code):
                        offenders.append(f"{os.path.relpath(path, ROOT)}:{i}: {line.strip()}")
    assert not offenders, "\n".join(offenders)
