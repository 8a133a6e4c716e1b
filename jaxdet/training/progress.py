"""What the training loop reports as it goes: progress lines (loss terms, learning rate,
images/s, ETA) and metrics.jsonl rows, input bookkeeping (boxes beyond max_boxes, unreadable
images replaced), and the count of skipped non-finite steps.
"""

from __future__ import annotations

import time

import jax
import numpy as np

from jaxdet import parallel
from jaxdet.console import log
from jaxdet.data.pipeline import model_inputs
from jaxdet.errors import NonFiniteError

# How the progress line names the terms named after their family (others: their own name).
_SHORT = {"classification": "cls", "localization": "loc", "confidence": "conf"}


class Progress:
    """Averages step metrics over `train.log_every` steps and writes the progress line
    (loss terms, learning rate, images/s, ETA). The first step of a start (compilation
    included) counts in the averages but not in images/s, so a resumed run logs the same
    rows as one never stopped."""

    def __init__(self, run):  # a training.run.Run
        self.run, self.cfg = run, run.config
        self.truncated = 0
        self.dropped = 0  # boxes under 1 px after resizing, or cut by mosaic / the affine
        self.replaced = 0  # examples whose image was unreadable (data.skip_bad): replaced by the next one
        self.unreadable: set[int] = set()
        self.restart()

    def restart(self) -> None:
        self.window: list[dict] = []
        self.untimed = 0  # steps in the window whose time is not training time (the compiling one)
        self.t0 = time.time()

    def exclude(self, seconds: float) -> None:
        self.t0 += seconds

    def batch(self, local: dict) -> dict:
        """The global batch for this process's `local` slice; counts boxes lost to max_boxes and
        unreadable images replaced (each named the first time it is met)."""
        self.truncated += int(local["truncated_boxes"].sum())
        self.dropped += int(local["dropped_boxes"].sum())
        bad = local["bad_image"][local["bad_image"] >= 0]
        self.replaced += len(bad)
        for index in sorted(set(int(i) for i in bad) - self.unreadable):
            self.unreadable.add(index)
            where = self.run.train_source.where(index)
            log(f"warning: image {where} is unreadable; replaced by the next readable image (data.skip_bad)")
        return parallel.global_batch(self.run.mesh, model_inputs(local))

    def add(self, done: int, step_metrics: dict, timed: bool = True) -> None:
        """Adds step `done`'s metrics; `timed` False: its time is left out of images/s and
        the ETA (the first step after a start, which compiles), not its values."""
        cfg = self.cfg.train
        self.window.append(step_metrics)
        if not timed:
            self.untimed += 1
            self.t0 = time.time()
        if not (done % cfg.log_every == 0 or done == cfg.steps):
            return
        host = jax.device_get(self.window)
        avg = {k: float(np.mean([m[k] for m in host])) for k in host[0]}
        dt, steps_timed = time.time() - self.t0, len(host) - self.untimed
        speed = {}
        eta_text = ""
        if steps_timed:
            speed = {"images_per_sec": steps_timed * cfg.batch_size / max(dt, 1e-9)}
            eta_text = f"  {speed['images_per_sec']:.1f} img/s  ETA {(cfg.steps - done) * dt / steps_timed:.0f}s"
        counts = {"truncated_boxes": self.truncated, "dropped_boxes": self.dropped, "replaced_images": self.replaced}
        self.run.writer.write(done, "train", {**avg, **speed, **counts})
        if self.truncated:
            log(
                f"warning: {self.truncated} boxes beyond data.max_boxes={self.cfg.data.max_boxes} were not trained "
                "on so far (raise data.max_boxes to keep them)"
            )
        if self.replaced:
            log(f"{self.replaced} examples so far had an unreadable image, replaced (data.skip_bad)")
        terms = "  ".join(f"{_SHORT.get(k, k)} {avg[k]:.4f}" for k in self.run.detector.term_weights)
        log(f"step {done}/{cfg.steps}  loss {avg['loss']:.4f}  {terms}  lr {avg['learning_rate']:.2e}{eta_text}")
        self.restart()


class NonFiniteGuard:
    """Counts skipped (non-finite) steps, one step behind the device so the check does not
    stall the pipeline; raises NonFiniteError after `limit` in a row (0 = never)."""

    def __init__(self, limit: int, terms: list[str]):
        self.limit, self.terms, self.in_a_row, self.total = limit, terms, 0, 0
        self.pending: tuple[int, dict] | None = None

    def push(self, step: int, metrics: dict) -> None:
        self.flush()
        self.pending = (step, metrics)

    def flush(self) -> None:
        if self.pending is None:
            return
        step, metrics = self.pending
        self.pending = None
        if not float(metrics["nonfinite"]):
            self.in_a_row = 0
            return
        self.in_a_row += 1
        self.total += 1
        terms = [k for k in self.terms if float(metrics[f"nonfinite/{k}"])]
        what = f"loss terms {', '.join(terms)}" if terms else "gradients (the loss terms were finite)"
        log(f"step {step}: non-finite {what}; update skipped ({self.in_a_row} in a row, {self.total} in all)")
        if self.limit and self.in_a_row >= self.limit:
            raise NonFiniteError(
                f"stopping at step {step}: {self.in_a_row} consecutive steps with non-finite {what} "
                f"(config.train.max_nonfinite_steps={self.limit}). No update was applied in those steps and "
                "the checkpoints hold the last good state; lower the learning rate, enable gradient clipping "
                "(optim.grad_clip_norm) or check the data, then re-run to resume."
            )
