"""Running a sweep's (arm, seed) pairs, each in its own sub-workdir `<workdir>/<arm>/seed<k>`,
so a sweep resumes like a run: finished arms are skipped, a half-done arm resumes."""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Callable, Sequence

import ml_collections

from jaxdet.detectors import get_definition
from jaxdet.errors import ConfigError
from jaxdet.sweep.grid import apply, arm_name
from jaxdet.sweep.tasks import TIMING, Task, execute, failure, started


def _rows(workdir: str) -> list[dict]:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def existing_seeds(workdir: str) -> list[int]:
    """The seeds a sweep in `workdir` has run or started (its `<arm>/seed<k>` directories)."""
    seeds = set()
    for arm in os.listdir(workdir) if os.path.isdir(workdir) else []:
        if os.path.isdir(os.path.join(workdir, arm)):
            seeds |= {int(d[4:]) for d in os.listdir(os.path.join(workdir, arm)) if re.fullmatch(r"seed\d+", d)}
    return sorted(seeds)


def with_added_seeds(workdir: str, seeds: list[int], add: int) -> list[int]:
    """`seeds` and the seeds the sweep already has, then `add` new seeds after the largest."""
    if add < 0:
        raise ConfigError(f"--add_seeds={add}: the number of seeds to add must be >= 0")
    known = sorted(set(seeds) | set(existing_seeds(workdir)))
    return known + list(range(known[-1] + 1, known[-1] + 1 + add)) if add else known


def final_eval(workdir: str, steps: int) -> dict | None:
    evals = [r for r in _rows(workdir) if r["split"] == "eval" and r["step"] == steps and "AP" in r]
    return evals[-1] if evals else None


def run_sweep(
    config: ml_collections.ConfigDict,
    workdir: str,
    grid: list[dict[str, object]],
    seeds: Sequence[int],
    runner: Callable[[ml_collections.ConfigDict, str], object],
    launcher=None,
    retries: int = 0,
    poll_s: float = 2.0,
) -> list[dict]:
    """Runs every (arm, seed) not finished yet; returns one record per (arm, seed).

    launcher None: one after another in this process (an error ends the sweep). A function
    of no arguments: called for the launcher only when a run is left to do (a finished
    sweep starts no Ray instance). Otherwise
    (launchers.py) the tasks run concurrently; a failed one is retried up to `retries`
    times, resuming from its checkpoints, then recorded with its error while the others
    finish; Ctrl-C cancels what is running and keeps what finished. Concurrent launchers
    get the tasks seed by seed (every arm's first seed, then every arm's second): a sweep
    stopped early still holds whole seeds to pair, and an arm's later seeds, rarely
    compiling beside its first, load its train step from the persistent compilation cache."""
    tasks = []
    for overrides in grid:
        for seed in seeds:
            cfg = apply(config, overrides, seed)
            sub = os.path.join(workdir, arm_name(overrides), f"seed{seed}")
            tasks.append(Task(arm_name(overrides), dict(overrides), seed, cfg, sub, runner))
    todo = []
    for task in tasks:
        if final_eval(task.workdir, task.config.train.steps) is None:
            todo.append(task)
        else:
            print(f"sweep: {task.label} already finished, skipped", flush=True)
    errors: dict[tuple[str, int], str] = {}
    if callable(launcher):
        launcher = launcher() if todo else None  # (None: the serial launcher)
    if launcher is None:
        for task in todo:
            print(f"sweep: running {task.label} in {task.workdir}", flush=True)
            execute(task, own_process=False)
    else:
        errors = _drive(launcher, sorted(todo, key=lambda t: seeds.index(t.seed)), retries, poll_s)
    return [_record(task, errors.get((task.arm, task.seed))) for task in tasks]


def _drive(launcher, todo: list[Task], retries: int, poll_s: float) -> dict[tuple[str, int], str]:
    """Submits `todo` through `launcher` (at most its capacity at a time), retries failures,
    prints progress; returns {(arm, seed): the error's last line} of the tasks that failed."""
    queue, running, errors, durations = list(todo), [], {}, []
    shown, shown_at, width = None, 0.0, 1  # width: the most runs seen running at once
    try:
        while queue or running:
            free = len(queue) if launcher.capacity is None else max(0, launcher.capacity - len(running))
            if free and queue:
                batch, queue = queue[:free], queue[free:]
                running += list(zip(launcher.submit_many(batch), batch))
            for handle, error in launcher.wait([h for h, _ in running], poll_s):
                task = next(t for h, t in running if h is handle)
                running = [(h, t) for h, t in running if h is not handle]
                if error is None and final_eval(task.workdir, task.config.train.steps) is None:
                    error = RuntimeError("the run ended without its final evaluation")
                if error is None:
                    durations.append(_seconds(task.workdir))
                    print(f"sweep: {task.label} done", flush=True)
                    continue
                why = failure(task, error)
                if task.attempt < retries:
                    task.attempt += 1
                    print(f"sweep: {task.label} failed ({why}); retry {task.attempt}/{retries}, "
                          "resuming from its checkpoints", flush=True)  # fmt: skip
                    queue.append(task)
                else:
                    errors[(task.arm, task.seed)] = why
                    print(f"sweep: {task.label} failed after {task.attempt + 1} attempt(s): {why}", flush=True)
            width = max(width, sum(started(t) for _, t in running))
            line = _status(todo, queue, running, errors, durations, width)
            if line != shown or time.time() - shown_at > 60:
                print(line, flush=True)
                shown, shown_at = line, time.time()
    except KeyboardInterrupt:
        print(f"sweep: interrupted; cancelling {len(running)} submitted task(s). Finished arms are kept: run the same "
              "command again to resume the others", flush=True)  # fmt: skip
        launcher.cancel([h for h, _ in running])
        raise
    finally:
        launcher.close()
    return errors


def _status(todo, queue, running, errors, durations, width: int) -> str:
    """ "sweep: 3/8 done, 2 running, 3 queued, 0 failed, ETA 4m10s" (ETA: the finished runs'
    mean time for each run left, `width` at a time: the most seen running at once)."""
    active = sum(started(t) for _, t in running)
    waiting = len(queue) + len(running) - active
    done = len(todo) - len(queue) - len(running) - len(errors)
    eta = ""
    if durations and (queue or running):
        left = sum(durations) / len(durations) * (len(queue) + len(running)) / width
        eta = f", ETA {int(left // 60)}m{int(left % 60):02d}s"
    return f"sweep: {done}/{len(todo)} done, {active} running, {waiting} queued, {len(errors)} failed{eta}"


def _seconds(workdir: str) -> float:
    timing = os.path.join(workdir, TIMING)
    return json.load(open(timing))["seconds"] if os.path.exists(timing) else float("nan")


def _record(task: Task, error: str | None) -> dict:
    rows = _rows(task.workdir)
    return {
        "arm": task.arm,
        "overrides": task.overrides,
        "seed": task.seed,
        "workdir": task.workdir,
        "final": final_eval(task.workdir, task.config.train.steps) or {},
        "train": [r for r in rows if r["split"] == "train"],
        "diagnostics": [r for r in rows if r["split"] == "diagnostics"],
        # the arm's detector's named loss terms (a sweep may change the detector)
        "terms": list(get_definition(task.config.model.name).terms),
        "seconds": _seconds(task.workdir),
        "error": error,
    }
