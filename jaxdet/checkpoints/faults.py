"""What goes wrong with checkpoint files, told once and plainly.

- A checkpoint whose bytes cannot be read back (`CorruptCheckpoint`) is told apart from
  one of another model (`layout` differs): the first is set aside, the second refused.
- A full disk (`disk_full`) is one message: the path, the free space, what a checkpoint needs.
- When a save or restore fails, orbax logs the failure from its threads and abandons
  its other reads and writes, which then fail one by one at exit: hundreds of tracebacks
  for one error that reaches the main thread anyway. Those echoes are dropped here (log
  filters, `sys.unraisablehook`, a warnings filter), installed on import.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import warnings
from typing import Any

import jax

from jaxdet.errors import ConfigError


class CorruptCheckpoint(Exception):
    """A checkpoint whose files cannot be read back (truncated, missing, undecodable)."""

    def __init__(self, step: int, reason: str):
        super().__init__(f"checkpoint {step}: {reason}")
        self.step, self.reason = step, reason


class DiskFull(ConfigError):
    """No space left on the checkpoint's file system (printed as one `error:` line)."""


# Words in orbax / TensorStore / JSON errors that say a checkpoint's bytes are bad, not the model.
CORRUPT = ("DATA_LOSS", "OUT_OF_RANGE", "NOT_FOUND", "decod", "truncat", "checksum", "Expecting", "Unterminated",
            "JSONDecodeError", "error while reading", "No such file", "corrupt")  # fmt: skip


def chain(e: BaseException) -> str:
    """The messages of an exception and its causes, for classifying it."""
    parts, seen = [], set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        parts.append(f"{type(e).__name__}: {e}")
        e = e.__cause__ or e.__context__
    return " | ".join(parts)


def root(e: BaseException) -> str:
    """The innermost cause's message: what actually failed (a TensorStore read, a JSON parse)."""
    seen = set()
    while (e.__cause__ or e.__context__) is not None and id(e) not in seen:
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return f"{type(e).__name__}: {e}"


def short(text: str, n: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3] + "..."


def _key(k) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def layout(tree: Any) -> dict[str, tuple[int, ...]]:
    """{"params/conv/kernel": shape} for every leaf: what must agree for a restore to fit."""
    return {
        "/".join(_key(k) for k in path): tuple(getattr(leaf, "shape", ()))
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
    }


def size_on_disk(path: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def disk_full(e: BaseException, directory: str, step: int | None, complete: list[int], state_bytes: int):
    """The DiskFull message for `e` (a failed save to `directory`), or None if it is another error."""
    text = chain(e)
    if "No space left on device" not in text and "os_error_code='28'" not in text:
        return None
    free = shutil.disk_usage(directory).free
    need = max([state_bytes] + [size_on_disk(os.path.join(directory, str(s))) for s in complete[-1:]])
    return DiskFull(
        f"no space left on device while writing checkpoint {step} to {directory}: {_mb(free)} free on "
        f"that file system, a checkpoint needs about {_mb(need)}. The checkpoints already written "
        f"({complete or 'none'}) are intact; free some space (or use a --workdir on a larger disk) and run the "
        "same command again to resume (the partial checkpoint is removed then)"
    )


def _mb(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def _quiet_abandoned_io(unraisable) -> None:
    """sys.unraisablehook: when a save or restore fails, orbax abandons its other reads and
    writes, whose coroutines and TensorStore callbacks then fail one by one (hundreds of
    tracebacks, "Event loop is closed") after the failure was already reported once. Those
    are dropped; every other unraisable exception goes to the default hook."""
    value, obj = unraisable.exc_value, repr(unraisable.object)
    tb = unraisable.exc_traceback
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    where = tb.tb_frame.f_code.co_filename if tb is not None else ""
    abandoned = (isinstance(value, RuntimeError) and "Event loop is closed" in str(value)) or (
        obj.startswith("<coroutine") and "orbax" in where
    )
    if not abandoned:
        sys.__unraisablehook__(unraisable)


sys.unraisablehook = _quiet_abandoned_io


def _through_orbax(exc_info) -> bool:
    """True when an exception's traceback passes through orbax's code."""
    tb = exc_info[2] if exc_info else None
    while tb is not None:
        if "orbax" in tb.tb_frame.f_code.co_filename:
            return True
        tb = tb.tb_next
    return False


class _ReportedOnce(logging.Filter):
    """Drops the error logs that echo an orbax failure: orbax's own (from its save threads,
    with a traceback each) and asyncio's "Task / Future exception was never retrieved" for
    the writes it abandoned. The same exception reaches the main thread, where `save` / `wait`
    turn it into one message (DiskFull) or re-raise it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR:
            return True
        message = record.getMessage()
        carried = record.exc_info is not None or "raised an exception" in message
        # asyncio's "Future/Task exception was never retrieved" for a write into a checkpoint's
        # temporary directory (the items of one step are written concurrently; one fails first).
        abandoned = record.name == "asyncio" and "never retrieved" in message and "orbax-checkpoint-tmp" in message
        return not (("orbax" in record.pathname and carried) or _through_orbax(record.exc_info) or abandoned)


for _name in ("absl", "asyncio"):
    logging.getLogger(_name).addFilter(_ReportedOnce())
# The same echo as a warning at exit: orbax's abandoned write/read coroutines, never awaited.
warnings.filterwarnings(
    "ignore", r"coroutine '(async_serialize_from_host|_read_array_index_and_device_put)", RuntimeWarning
)
