"""One (arm, seed) of a sweep as a unit of work a launcher can run anywhere: in this
process (serial), or in a fresh process of its own (a Ray task, a SLURM array task).

`execute` is what runs there: it records that the task started (`sweep_task.json`: the
attempt, host and pid, which the driver reads to tell running from queued tasks), sends
the process's output to `<arm workdir>/train.log`, sets the CPU device count before JAX
starts, and calls the training entry point on the arm's config. The arm's workdir holds
its checkpoints, so a retried, requeued or re-run task resumes where the last one stopped.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import sys
import time
from collections.abc import Callable

import ml_collections

MARKER = "sweep_task.json"
TIMING = "sweep_time.json"
ERROR = "sweep_error.json"


@dataclasses.dataclass
class Task:
    arm: str
    overrides: dict
    seed: int
    config: ml_collections.ConfigDict
    workdir: str
    runner: Callable[[ml_collections.ConfigDict, str], object]  # (config, workdir) -> anything
    attempt: int = 0

    @property
    def label(self) -> str:
        return f"{self.arm} seed {self.seed}"


def execute(task: Task, own_process: bool = True) -> float:
    """Runs `task` (in a process of its own when `own_process`: output to train.log, CPU
    devices from the arm's config); returns its wall seconds, also kept in sweep_time.json."""
    os.makedirs(task.workdir, exist_ok=True)
    marker = {"attempt": task.attempt, "host": socket.gethostname(), "pid": os.getpid(), "started": time.time()}
    with open(os.path.join(task.workdir, MARKER), "w") as f:
        json.dump(marker, f)
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(task.workdir, ERROR))
    t0 = time.time()
    with _output_to(os.path.join(task.workdir, "train.log")) if own_process else contextlib.nullcontext():
        if own_process:  # as the training command line does, before JAX starts
            from jaxdet.training import runtime

            runtime.set_cpu_devices(task.config.train.cpu_devices)
            runtime.enable_compilation_cache(task.config.train.compilation_cache_dir)
        try:
            task.runner(task.config, task.workdir)
        except BaseException as e:  # kept beside the run: a launcher's own error wraps it in its logs' paths
            with open(os.path.join(task.workdir, ERROR), "w") as f:
                json.dump({"attempt": task.attempt, "error": f"{type(e).__name__}: {_one_line(str(e))}"}, f)
            raise
    seconds = time.time() - t0
    with open(os.path.join(task.workdir, TIMING), "w") as f:
        json.dump({"seconds": seconds}, f)
    return seconds


def started(task: Task) -> bool:
    """Whether the current attempt of `task` has started running (its marker says so)."""
    try:
        with open(os.path.join(task.workdir, MARKER)) as f:
            return json.load(f)["attempt"] == task.attempt
    except (OSError, ValueError, KeyError):
        return False


@contextlib.contextmanager
def _output_to(path: str):
    """This process's stdout and stderr (file descriptors too: XLA's own logs) appended to `path`."""
    sys.stdout.flush(), sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(path, "a") as log:
        os.dup2(log.fileno(), 1), os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush(), sys.stderr.flush()
            os.dup2(saved[0], 1), os.dup2(saved[1], 2)
            os.close(saved[0]), os.close(saved[1])


def failure(task: Task, error: BaseException) -> str:
    """What made the current attempt of `task` fail, in one line for results.md: the
    exception the run raised (recorded by `execute`), else the launcher's `error` (a worker
    killed, a job cancelled: no Python exception reached the run)."""
    try:
        with open(os.path.join(task.workdir, ERROR)) as f:
            recorded = json.load(f)
        if recorded["attempt"] == task.attempt:
            return recorded["error"]
    except (OSError, ValueError, KeyError):
        pass
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return f"{type(error).__name__}: {_one_line(lines[-1]) if lines else ''}"


def _one_line(text: str) -> str:
    return " ".join(text.split())[:300]
