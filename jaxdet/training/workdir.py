"""A run's workdir: made writable at start-up, with one owner at a time.

Two trainings on one workdir would interleave their metrics.jsonl rows and overwrite each
other's config.json, best.json and checkpoints, both exiting 0. So the training run takes
`workdir/owner.lock` (a POSIX record lock: released by the kernel when its process ends,
however it ends, and not inherited by the input workers it forks) and writes who holds
it (pid, host, start time, command). A second run is refused with that record; a record
left by a run that died (kill -9, a reboot) is no lock at all: the next run takes over
and logs whose it was. Multi-process runs share their workdir: process 0 holds the lock
for the run.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import json
import os
import socket
import sys

import jax

from jaxdet import files
from jaxdet.errors import ConfigError

LOCK_NAME = "owner.lock"


def prepare(workdir: str) -> None:
    """Creates `workdir` if needed; ConfigError when it is a file or cannot be written."""
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise ConfigError(f"--workdir={workdir!r} is a file, not a directory; pass a directory (created if missing)")
    try:
        files.make_writable(workdir)
    except OSError as e:
        raise ConfigError(
            f"--workdir={workdir!r} cannot be written ({e.strerror or e}); a run writes its checkpoints, metrics "
            "and pictures there: pass a directory you can write"
        ) from None


class Owner:
    """Holds workdir/owner.lock while a run trains (a context manager; see the module docstring)."""

    def __init__(self, workdir: str, log=print):
        self.path = os.path.join(workdir, LOCK_NAME)
        self.log = log
        self._fd: int | None = None

    def __enter__(self) -> Owner:
        if jax.process_index() != 0:
            return self  # the run's other processes share process 0's workdir
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            holder = _read(fd)
            os.close(fd)
            if e.errno in (errno.EACCES, errno.EAGAIN):
                raise ConfigError(
                    f"{os.path.dirname(self.path)} is in use by another training run ({_describe(holder)}); two runs "
                    "on one workdir would overwrite each other's checkpoints and metrics. Wait for it to finish, "
                    "stop it (it resumes when started again), or use another --workdir"
                ) from None
            # A file system without locks (some network mounts): say so and go on unguarded.
            self.log(f"warning: cannot lock {self.path} ({e.strerror}): a second run on this workdir is not refused")
            return self
        previous = _read(fd)
        if previous:
            self.log(f"taking over {os.path.dirname(self.path)} from a run that ended without releasing it "
                     f"({_describe(previous)}; no longer running)")  # fmt: skip
        record = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": " ".join(sys.argv),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)  # empty: the run ended and released the workdir
            os.close(self._fd)  # (closing releases the lock)
            self._fd = None


def _read(fd: int) -> dict | None:
    try:
        text = os.pread(fd, 1 << 16, 0).decode("utf-8", "replace").strip()
        return json.loads(text) if text else None
    except (OSError, ValueError):
        return {"unreadable record": True}


def _describe(holder: dict | None) -> str:
    if not holder or "pid" not in holder:
        return "owner unknown"
    return f"pid {holder['pid']} on host {holder.get('host', '?')}, started {holder.get('started', '?')}: " + str(
        holder.get("command", "")
    )
