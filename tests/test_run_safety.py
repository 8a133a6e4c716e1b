"""A run never eats what it was given: real `experiments.train` processes on a small
COCO-JSON folder, stopped or broken the way users and machines break them (a second run
on the same workdir, kill -9, SIGTERM during evaluation, an unreadable image, a corrupt
checkpoint, a full disk). docs/reliability.md "What jaxdet guarantees" points here.
"""

import json
import os
import signal
import subprocess
import sys

import pytest
from PIL import Image

from tests.coco_folder import run, start, train_command, untrained_workdir, wait_for_line, write_coco


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, str]:
    return write_coco(str(tmp_path_factory.mktemp("coco")))


def _steps(workdir: str) -> list[int]:
    d = os.path.join(workdir, "checkpoints")
    return sorted(int(n) for n in os.listdir(d) if n.isdigit()) if os.path.isdir(d) else []


def _rows(workdir: str, split: str) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [r for r in map(json.loads, f) if r["split"] == split]


def _error_lines(proc) -> list[str]:
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("error:")]


def test_a_second_run_on_a_workdir_is_refused_and_a_dead_owner_is_taken_over(data, tmp_path, compilation_cache):
    workdir, log = str(tmp_path / "run"), str(tmp_path / "first.log")
    first = start(train_command(workdir, data, compilation_cache, **{"train.steps": 100000}), log)
    try:
        wait_for_line(first, log, "first step (compilation included)")
        second = run(train_command(workdir, data, compilation_cache, **{"train.steps": 4}))
        assert second.returncode == 1, second.stderr[-2000:]
        (error,) = _error_lines(second)
        assert f"is in use by another training run (pid {first.pid} on host" in error, error
        assert "Traceback" not in second.stderr
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # The killed run's record is left behind; the next run takes the workdir over and resumes.
    assert json.load(open(os.path.join(workdir, "owner.lock")))["pid"] == first.pid
    third = run(train_command(workdir, data, compilation_cache, **{"train.steps": 2, "train.eval_every": 1000}))
    assert third.returncode == 0, third.stdout[-3000:] + third.stderr[-3000:]
    assert f"taking over {workdir} from a run that ended without releasing it (pid {first.pid}" in third.stdout
    assert "leaked shared_memory" not in third.stderr
    assert open(os.path.join(workdir, "owner.lock")).read() == ""  # released at the end


def test_an_unreadable_image_stops_the_run_but_keeps_its_checkpoint(data, tmp_path, compilation_cache):
    """The validation image that cannot be read stops the run with one error line, after the
    checkpoint of the evaluated step is complete; resuming with data.skip_bad=True is allowed."""
    import shutil

    root = tmp_path / "coco"
    shutil.copytree(os.path.dirname(data["train_annotations"]), root)
    paths = {k: v.replace(os.path.dirname(data["train_annotations"]), str(root)) for k, v in data.items()}
    (root / "images" / "val_3.png").write_bytes(b"\x89PNG\r\n\x1a\n not a png any more")
    workdir = str(tmp_path / "run")
    settings = {"train.steps": 4, "train.eval_every": 2, "train.checkpoint_every": 1}
    proc = run(train_command(workdir, paths, compilation_cache, **settings))
    assert proc.returncode == 1
    (error,) = _error_lines(proc)
    assert "val_3.png is not a readable image" in error and "skip_bad" in error
    assert "cannot schedule new futures" not in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert "leaked shared_memory" not in proc.stderr  # the input workers' batches are freed, not left to exit
    assert _steps(workdir) == [1, 2] and not [n for n in os.listdir(f"{workdir}/checkpoints") if "tmp" in n]
    again = run(train_command(workdir, paths, compilation_cache, **settings, **{"data.skip_bad": True}))
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "data.skip_bad: False -> True" in again.stdout and "resumed from" in again.stdout
    assert [r["unreadable_images"] for r in _rows(workdir, "eval")] == [1.0, 1.0]


@pytest.mark.slow  # (the suite's time; SIGTERM during training: test_resilience.py)
def test_an_evaluation_stopped_by_sigterm_is_done_on_resume(data, tmp_path, compilation_cache):
    workdir, log = str(tmp_path / "run"), str(tmp_path / "first.log")
    settings = {"train.steps": 4, "train.eval_every": 2, "train.checkpoint_every": 2, "train.eval_batch_size": 1}
    first = start(train_command(workdir, data, compilation_cache, **settings), log)
    wait_for_line(first, log, "evaluating at step 2")
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=120) == 128 + signal.SIGTERM, open(log).read()[-3000:]
    text = open(log).read()
    assert "evaluation at step 2 abandoned" in text and "stopped at step 2/4 on SIGTERM" in text, text[-3000:]
    assert not os.path.exists(os.path.join(workdir, "metrics.jsonl")) or not _rows(workdir, "eval")
    again = run(train_command(workdir, data, compilation_cache, **settings))
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "step 2: its evaluation was interrupted; evaluating before training on" in again.stdout
    assert [r["step"] for r in _rows(workdir, "eval")] == [2, 4]  # as an uninterrupted run's
    assert json.load(open(os.path.join(workdir, "best.json")))["evaluated_step"] == 4


def _truncate_a_data_file(checkpoint_dir: str) -> str:
    """Truncates the largest array file of a checkpoint (what a crash of the storage does)."""
    files = [os.path.join(d, f) for d, _, fs in os.walk(checkpoint_dir) for f in fs if "/d/" in os.path.join(d, f)]
    path = max(files, key=os.path.getsize)
    with open(path, "r+b") as f:
        f.truncate(10)
    return path


def test_a_corrupt_latest_checkpoint_is_set_aside_and_the_one_before_restored(data, tmp_path, compilation_cache):
    workdir = str(tmp_path / "run")
    settings = {"train.steps": 4, "train.eval_every": 1000, "train.checkpoint_every": 2}
    assert run(train_command(workdir, data, compilation_cache, **settings)).returncode == 0
    _truncate_a_data_file(f"{workdir}/checkpoints/4/model")  # (the weights: what eval reads too)
    # eval --checkpoint=latest falls back too (and moves nothing: it does not own the workdir).
    ev = run([sys.executable, "-m", "experiments.eval", f"--workdir={workdir}"])
    assert ev.returncode == 0, ev.stdout[-3000:] + ev.stderr[-3000:]
    assert "checkpoint 4 in" in ev.stdout and "is unreadable" in ev.stdout and "latest checkpoint, step 2" in ev.stdout
    config_before = open(f"{workdir}/config.json").read()
    proc = run(train_command(workdir, data, compilation_cache, **{**settings, "train.steps": 6}))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "does not match this model" not in proc.stdout + proc.stderr
    assert f"checkpoint 4 in {workdir}/checkpoints is unreadable" in proc.stdout
    assert f"moved aside to {workdir}/checkpoints/4.corrupt" in proc.stdout
    assert f"resumed from {workdir}/checkpoints at step 2" in proc.stdout
    assert os.path.isdir(f"{workdir}/checkpoints/4.corrupt") and _steps(workdir)[-1] == 6
    assert "Traceback" not in proc.stderr and json.loads(config_before)["train"]["steps"] == 4


def test_truncated_metadata_is_corruption_and_another_tree_a_mismatch(tmp_path):
    """Told apart before restoring: unreadable metadata is a corrupt checkpoint (set aside),
    a readable one of another shape is another model (refused); neither is the other."""
    import jax.numpy as jnp

    from jaxdet import checkpoints
    from jaxdet.errors import ConfigError

    items = {"model": {"params": {"w": jnp.ones((3, 2))}}, "train": {"step": jnp.int32(5)}}
    ckpts = checkpoints.Checkpoints(str(tmp_path / "checkpoints"), keep=3, save_every=1)
    for step in (1, 2):
        ckpts.save(step, items, force=True)
    ckpts.wait()
    with pytest.raises(
        ConfigError, match=r"does not match this model .* params/w: checkpoint \(3, 2\), model \(4, 2\)"
    ):
        ckpts.restore(2, {"model": {"params": {"w": jnp.ones((4, 2))}}})
    with open(tmp_path / "checkpoints" / "2" / "model" / "_METADATA", "r+b") as f:
        f.truncate(100)
    with pytest.raises(checkpoints.CorruptCheckpoint, match="metadata cannot be read"):
        ckpts.restore(2, items)
    lines = []
    restored, step = ckpts.restore_newest(items, ckpts.all_steps(), log=lines.append, move_aside=True)
    assert step == 1 and float(restored["train"]["step"]) == 5 and "moved aside to" in lines[0]
    assert sorted(os.listdir(tmp_path / "checkpoints")) == ["1", "2.corrupt"]
    ckpts.close()


def test_a_model_mismatch_is_refused_before_config_json_is_rewritten(data, tmp_path):
    import jax

    from experiments.configs import default
    from jaxdet import experiment
    from jaxdet.errors import ConfigError

    config = default.get_config("tiny")
    for key, value in data.items():
        config.data[key] = value
    config.train.steps, config.train.num_prediction_images, config.data.workers = 1, 0, 0
    workdir = str(tmp_path / "run")
    experiment.train_and_evaluate(config, workdir, jax.devices()[:1])
    recorded = open(f"{workdir}/config.json").read()
    config.train.allow_config_change, config.model.num_classes = True, 5
    with pytest.raises(ConfigError, match="does not match this model .* entries differ"):
        experiment.train_and_evaluate(config, workdir, jax.devices()[:1])
    assert open(f"{workdir}/config.json").read() == recorded


def _mount_tmpfs(path, size: str) -> None:
    os.makedirs(path, exist_ok=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)]).returncode:
        pytest.skip("needs to mount a small tmpfs (root in CI): the disk-full case runs on a real full file system")


@pytest.mark.slow  # (the suite's time; needs root to mount a tmpfs)
def test_a_full_disk_stops_with_one_error_line_and_keeps_the_checkpoints(data, tmp_path, compilation_cache):
    mount = tmp_path / "small"
    _mount_tmpfs(mount, "9m")  # room for ~3 tiny checkpoints
    try:
        workdir = str(mount / "run")
        settings = {"train.steps": 12, "train.eval_every": 1000, "train.checkpoint_every": 1}
        proc = run(train_command(workdir, data, compilation_cache, **settings))
        assert proc.returncode == 1
        output = proc.stdout + proc.stderr
        (error,) = _error_lines(proc)
        assert "no space left on device while writing checkpoint" in error and f"{workdir}/checkpoints" in error
        assert "MiB free on that file system, a checkpoint needs about" in error
        # Besides the load report and progress lines, that error line is all the run printed.
        others = [line for line in output.splitlines() if not line.startswith(("/", "retinanet/", "step ", "error:"))]
        assert not others, output[-5000:]
        kept = _steps(workdir)
        assert kept and any("orbax-checkpoint-tmp" in n for n in os.listdir(f"{workdir}/checkpoints"))
        # More room: the same command resumes from the last complete checkpoint, clearing the partial one.
        subprocess.run(["mount", "-o", "remount,size=64m", str(mount)], check=True)
        again = run(train_command(workdir, data, compilation_cache, **{**settings, "train.keep_checkpoints": 1}))
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        assert "a partial checkpoint an interrupted save left" in again.stdout
        assert f"resumed from {workdir}/checkpoints at step {kept[-1]}" in again.stdout
    finally:
        subprocess.run(["umount", "-l", str(mount)])


def test_user_mistakes_get_one_error_line(data, tmp_path, compilation_cache):
    """A workdir that is a file or read-only, a predict --out that is a file, a missing
    --config file, a negative batch: each one `error:` line, no traceback."""
    afile = tmp_path / "afile"
    afile.write_text("x")
    Image.new("RGB", (8, 8)).save(tmp_path / "im.png")
    cases = {
        "is a file, not a directory": train_command(str(afile), data, compilation_cache),
        "no such file; pass a config file": [
            sys.executable,
            "-m",
            "experiments.train",
            "--config=nope.py",
            "--workdir=w",
        ],
        "the global batch must be a positive number": train_command(
            str(tmp_path / "w"), data, compilation_cache, **{"train.batch_size": -8}
        ),
        "--out=": [
            sys.executable,
            "-m",
            "experiments.predict",
            f"--workdir={tmp_path}",
            f"--images={tmp_path}/im.png",
            f"--out={afile}",
        ],  # fmt: skip
        "--variance runs its own factorial": [
            sys.executable,
            "-m",
            "experiments.sweep",
            "--config=experiments/configs/default.py:tiny",
            f"--workdir={tmp_path}/sweep",
            "--variance=3",
            "--sweep=loss.focal_gamma=1.0,2.0",
        ],
    }
    for expected, cmd in cases.items():
        proc = run(cmd)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr, (expected, proc.stderr[-3000:])
        (error,) = _error_lines(proc)
        assert expected in error, (expected, error)
    # Read-only: a file system mounted read-only (permissions alone do not stop root).
    mount = tmp_path / "ro"
    _mount_tmpfs(mount, "64m")
    try:
        workdir = untrained_workdir(str(mount / "run"))
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        train = run(train_command(workdir, data, compilation_cache, **{"train.steps": 4}))
        ev = run([sys.executable, "-m", "experiments.eval", f"--workdir={workdir}"])
        for proc, expected in ((train, "cannot be written (Read-only file system)"), (ev, "pass --out=DIR")):
            assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
            assert expected in _error_lines(proc)[0]
    finally:
        subprocess.run(["umount", "-l", str(mount)])
