"""The project's console: progress and results go to stdout, from process 0 only, so they
read cleanly under absl's log noise and once per multi-host run."""

from __future__ import annotations

import time

import jax


def log(msg: str) -> None:
    """Prints `msg` on process 0 (flushed: a log tail is current)."""
    if jax.process_index() == 0:
        print(msg, flush=True)


# Seconds between progress lines of long passes (evaluation, prediction, audit): a steady
# cadence as training's step lines, plain lines only (no bars or carriage returns in CI logs).
PROGRESS_EVERY_S = 10.0


class Progress:
    """`<what>: done/total images, N images/s, ETA Ts` every PROGRESS_EVERY_S seconds (or
    `every_s`) as `update` is told the images done, and `<what>: total images in Ts (N
    images/s)` at `finish`; printed through `out` (default `log`: process 0)."""

    def __init__(self, what: str, total: int, every_s: float | None = None, out=None):
        self._clock = time.perf_counter
        self.what, self.total, self.done = what, int(total), 0
        self.every_s = PROGRESS_EVERY_S if every_s is None else every_s
        self.out = out or log
        self.start = self.last = self._clock()

    def update(self, done: int) -> None:
        self.done = min(int(done), self.total) if self.total else int(done)
        now = self._clock()
        if now - self.last >= self.every_s and self.done < self.total:
            rate = self.done / max(now - self.start, 1e-9)
            eta = (self.total - self.done) / max(rate, 1e-9)
            self.out(f"{self.what}: {self.done}/{self.total} images, {rate:.1f} images/s, ETA {eta:.0f}s")
            self.last = now

    def finish(self) -> None:
        took = self._clock() - self.start
        self.out(f"{self.what}: {self.done} images in {took:.1f}s ({self.done / max(took, 1e-9):.1f} images/s)")
