"""The project's console: progress and results go to stdout, from process 0 only, so they
read cleanly under absl's log noise and once per multi-host run."""

from __future__ import annotations

import jax


def log(msg: str) -> None:
    """Prints `msg` on process 0 (flushed: a log tail is current)."""
    if jax.process_index() == 0:
        print(msg, flush=True)
