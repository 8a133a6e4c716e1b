"""Where a sweep's tasks run: `serial` (one after another in this process, as before), `ray`
(each task a Ray task in a fresh worker process, on a local Ray instance or a cluster) or
`slurm` (each task a task of a SLURM job array through submitit; preempted or timed-out
tasks are requeued and resume from their checkpoints). The driver (runs.py) only submits,
waits and cancels; a launcher holds no sweep state, so a sweep started with one launcher
can be finished with another.

Every launcher but `serial` needs the sweep's workdir on a file system every node sees
(the driver reads each arm's metrics.jsonl there); `ray` with a cluster address checks it.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from typing import Any

from jaxdet.errors import ConfigError
from jaxdet.sweep.tasks import Task, execute

LAUNCHERS = ("serial", "ray", "slurm")


class RayLauncher:
    """Each task a Ray task with `cpus_per_arm` CPUs and `gpus_per_arm` GPUs, in a worker
    process of its own (max_calls=1: clean JAX state). `address` None starts a local Ray
    instance (stopped by `close`); "auto" or HOST:PORT joins a running cluster."""

    capacity = None  # Ray queues tasks until their resources are free

    def __init__(self, workdir: str, address: str | None = None, cpus_per_arm: float = 1, gpus_per_arm: float = 0):
        import ray

        self.ray, self.own = ray, address is None
        if self.own:
            ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
        options = dict(num_cpus=cpus_per_arm, num_gpus=gpus_per_arm, max_calls=1, max_retries=0)
        self._execute = ray.remote(**options)(execute)
        if not self.own:
            _check_shared(ray, workdir)

    def submit_many(self, tasks: Sequence[Task]) -> list[Any]:
        return [self._execute.remote(task) for task in tasks]

    def wait(self, handles: Sequence[Any], timeout: float) -> list[tuple[Any, BaseException | None]]:
        """The handles that finished within `timeout` seconds, each with its error or None."""
        ready, _ = self.ray.wait(list(handles), num_returns=len(handles), timeout=timeout)
        out = []
        for ref in ready:
            try:
                self.ray.get(ref)
                out.append((ref, None))
            except Exception as e:  # a failed task, or its worker killed (WorkerCrashedError)
                out.append((ref, e))
        return out

    def cancel(self, handles: Sequence[Any]) -> None:
        for ref in handles:
            try:
                self.ray.cancel(ref, force=True)
            except Exception:  # already finished
                pass

    def close(self) -> None:
        if self.ray.is_initialized():
            self.ray.shutdown()


def _check_shared(ray, workdir: str) -> None:
    """ConfigError unless every alive node of the cluster sees `workdir`."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    os.makedirs(workdir, exist_ok=True)
    probe = os.path.join(os.path.abspath(workdir), f".sweep_probe_{uuid.uuid4().hex}")
    open(probe, "w").close()
    try:
        seen = ray.remote(num_cpus=0)(os.path.exists)
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        on = [NodeAffinitySchedulingStrategy(n["NodeID"], soft=False) for n in nodes]
        checks = [seen.options(scheduling_strategy=strategy).remote(probe) for strategy in on]
        blind = [n.get("NodeManagerAddress", n["NodeID"]) for n, ok in zip(nodes, ray.get(checks)) if not ok]
    finally:
        os.remove(probe)
    if blind:
        raise ConfigError(
            f"--workdir={workdir}: the Ray nodes {blind} do not see it; a sweep on a cluster needs a workdir on a file "
            "system every node mounts at the same path (NFS, Lustre, a shared volume)"
        )


def _import_submitit():
    """submitit, imported without its logging set-up: by default its import runs
    logging.config.dictConfig, which closes every handler the process already has (the
    driver's, absl's: and absl's closes the stream it wrote to)."""
    os.environ.setdefault("SUBMITIT_LOG_LEVEL", "NOCONFIG")
    import submitit

    return submitit


class _Resumable:
    """The function of a SLURM task: requeued with the same task on preemption or timeout
    (submitit calls `checkpoint`), it resumes from the arm's checkpoints."""

    def __call__(self, task: Task) -> float:
        return execute(task)

    def checkpoint(self, task: Task):
        return _import_submitit().helpers.DelayedSubmission(self, task)


class SubmititLauncher:
    """Each task a SLURM job-array task (`cluster` None: submitit's choice, SLURM where there
    is one; "local": submitit's local executor, one process per task on this machine, at
    most `capacity` at a time). `slurm` passes executor parameters through (partition,
    timeout_min, account, ...: submitit's `slurm_*` names or the generic ones)."""

    def __init__(
        self,
        workdir: str,
        cluster: str | None = None,
        cpus_per_arm: int = 1,
        gpus_per_arm: int = 0,
        timeout_min: int = 240,
        slurm: dict | None = None,
        capacity: int | None = None,
    ):
        submitit = _import_submitit()
        self.executor = submitit.AutoExecutor(folder=os.path.join(workdir, "_submitit", "%j"), cluster=cluster)
        params = dict(
            timeout_min=timeout_min, cpus_per_task=cpus_per_arm, gpus_per_node=gpus_per_arm, name="jaxdet-sweep"
        )
        self.executor.update_parameters(**params, **(slurm or {}))
        local = self.executor.cluster in ("local", "debug")
        self.capacity = capacity or (max(1, (os.cpu_count() or 1) // max(1, cpus_per_arm)) if local else None)

    def submit_many(self, tasks: Sequence[Task]) -> list[Any]:
        if len(tasks) > 1 and self.executor.cluster == "slurm":
            with self.executor.batch():  # one job array
                jobs = [self.executor.submit(_Resumable(), task) for task in tasks]
            return jobs
        return [self.executor.submit(_Resumable(), task) for task in tasks]

    def wait(self, handles: Sequence[Any], timeout: float) -> list[tuple[Any, BaseException | None]]:
        import time

        deadline = time.time() + timeout
        while True:
            done = [job for job in handles if job.done()]
            if done or time.time() >= deadline:
                break
            time.sleep(min(1.0, max(0.0, deadline - time.time())))
        out = []
        for job in done:
            try:
                job.result()
                out.append((job, None))
            except Exception as e:  # submitit's FailedJobError / UncompletedJobError carry the task's traceback
                out.append((job, e))
        return out

    def cancel(self, handles: Sequence[Any]) -> None:
        for job in handles:
            try:
                job.cancel(check=False)
            except Exception:
                pass

    def close(self) -> None:
        pass


def parse_slurm(items: Sequence[str]) -> dict:
    """--slurm KEY=VALUE items -> submitit parameters (partition -> slurm_partition; numbers as numbers)."""
    generic = {"timeout_min", "mem_gb", "nodes", "tasks_per_node", "cpus_per_task", "gpus_per_node", "name"}
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--slurm {item!r}: expected KEY=VALUE, e.g. partition=gpu or timeout_min=600")
        key = key if key in generic or key.startswith("slurm_") else f"slurm_{key}"
        out[key] = int(value) if value.isdigit() else value
    return out


def make_launcher(name: str, workdir: str, **options):
    """`name` in LAUNCHERS -> the launcher (None for serial: the driver runs tasks itself)."""
    if name == "serial":
        return None
    if name == "ray":
        return RayLauncher(workdir, **options)
    if name == "slurm":
        return SubmititLauncher(workdir, **options)
    raise ConfigError(f"--launcher={name!r}; valid: {', '.join(LAUNCHERS)}")
