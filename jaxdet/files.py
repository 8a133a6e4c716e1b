"""Directories a command writes to (a workdir, an evaluation's --out): created and probed
up front, so that a read-only or unwritable place fails at start-up with a message, not
with a traceback after the work was done."""

from __future__ import annotations

import os


def make_writable(directory: str) -> None:
    """Creates `directory` (and parents) and writes and removes a probe file in it.

    Raises OSError (with `strerror`, e.g. "Read-only file system") when that fails; checking
    permission bits is not enough: they do not stop root, and read-only mounts ignore them.
    """
    os.makedirs(directory, exist_ok=True)
    probe = os.path.join(directory, f".write-test-{os.getpid()}")
    with open(probe, "w"):
        pass
    os.remove(probe)
