"""What every absl main here does the same way: argument check, quiet logs, user errors.

A `ConfigError` (a bad config, data or workdir: the user's to fix) prints `error: ...`
without a traceback and exits 1; `Preempted` (SIGTERM / Ctrl-C after the checkpoint was
saved) exits 128 + the signal, so a scheduler or `train && eval` sees the run did not end.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from absl import app, flags, logging

from jaxdet.errors import ConfigError
from jaxdet.training import preemption


def start(argv: list[str], quiet: bool = True) -> None:
    """Refuses stray positional arguments; with `quiet`, absl logs at WARNING unless
    --verbosity was given (orbax logs every save at INFO)."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if quiet and not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """ConfigError -> `error: message` (exit 1); Preempted -> exit 128 + signal; no tracebacks."""
    try:
        yield
    except preemption.Preempted as e:
        raise SystemExit(e.exit_code) from None
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None
