"""SIGTERM / SIGINT: save a checkpoint at the current step, then stop.

Cluster schedulers (SLURM, Kubernetes, preemptible cloud VMs) send SIGTERM some seconds
before they kill a job; a user sends SIGINT (Ctrl-C). Either one makes the training loop
finish the step in flight, save a checkpoint at that step, wait until it is on disk and
stop with `Preempted`; the mains print its message and exit with 128 + the signal
number (the shell convention, so `train && eval` does not go on as if training ended).
A second signal while saving gets the default behaviour (stops at once); the
checkpoints already written stay complete, since orbax renames each one into place
only when it is whole.

Several processes must save the same step. There JAX's preemption service (started by
`jax.distributed.initialize`) catches SIGTERM on any process and agrees on the step
(`multihost_utils.reached_preemption_sync_point`); SIGINT is turned into a SIGTERM to
this process so it takes the same path. Without that service, the processes compare
their flags with a collective at every step (slower, but still in agreement).
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

_HANDLED = (signal.SIGTERM, signal.SIGINT)


class Preempted(Exception):
    """The run stopped on a signal after saving a checkpoint at `step`."""

    def __init__(self, message: str, step: int, signum: int):
        super().__init__(message)
        self.step, self.signum = step, signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _sync_manager_available() -> bool:
    try:  # the preemption service's state is not in jax's public API: a jax change falls back
        from jax._src import distributed

        return distributed.global_state.preemption_sync_manager is not None
    except (ImportError, AttributeError):
        return False


class StopRequests:
    """Catches SIGTERM/SIGINT while a run trains (a context manager; main thread only).

    `should_stop(step)` is called once per step on every process with the same steps;
    it returns True at the step where all processes save and stop.
    """

    def __init__(self, log=print):
        self.log = log
        self.signum: int | None = None  # the signal this process received, if any
        self._announced = False
        self._previous: dict[int, Any] = {}
        self._multi = jax.process_count() > 1
        self._service = self._multi and _sync_manager_available()

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is not threading.main_thread():
            return self  # Python delivers signals to the main thread only: nothing to catch here
        # With the preemption service, SIGTERM belongs to JAX's own handler (installing ours
        # would replace it and the other processes would never hear of the signal).
        for signum in (signal.SIGINT,) if self._service else _HANDLED:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        self._restore()

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}

    def _handle(self, signum: int, frame) -> None:
        # No printing here: the handler may interrupt a print of the main thread (reentrant I/O).
        self.signum = signum
        self._restore()  # a second signal is not caught: it stops the run at once
        if self._service:
            os.kill(os.getpid(), signal.SIGTERM)  # into JAX's preemption service, which tells the others

    def _announce(self) -> None:
        if self.signum is not None and not self._announced:
            self._announced = True
            self.log(
                f"received {signal.Signals(self.signum).name}: saving a checkpoint after the current step, "
                "then stopping (send it again to stop at once)"
            )

    def should_stop(self, step: int) -> bool:
        """True when every process should save at `step` and stop (call at every step)."""
        self._announce()
        if not self._multi:
            return self.signum is not None
        if self._service:
            return bool(multihost_utils.reached_preemption_sync_point(step))
        flags = multihost_utils.process_allgather(np.int32(self.signum is not None))
        return bool(np.any(flags))

    def interrupts_evaluation(self) -> bool:
        """True when an evaluation in progress should be abandoned (single process only:
        several processes must run the same collectives, so they finish it)."""
        self._announce()
        return not self._multi and self.signum is not None

    def reason(self) -> str:
        if self.signum is not None:
            return signal.Signals(self.signum).name
        return "a preemption notice (SIGTERM) received by another process"
