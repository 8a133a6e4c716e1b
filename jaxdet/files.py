"""Files a command writes: directories (a workdir, an evaluation's --out) created and
probed up front, so that a read-only or unwritable place fails at start-up with a message,
not with a traceback after the work was done; records written whole or not at all."""

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


def write_atomic(path: str, text: str) -> None:
    """Writes `text` to `path` through a temporary file and a rename: a reader (or a run killed
    mid-write) sees the old file or the new one, never half of one."""
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)
