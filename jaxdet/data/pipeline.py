"""Random-access source -> Grain -> fixed-shape numpy batches, in an order that is a pure
function of (seed, global example position).

The training stream's k-th global example is, with n images, image
`permutation(seed, k // n)[k % n]`, augmented with draws from
`np.random.default_rng([seed, purpose, k])`. Step s's global batch is positions
s*G .. s*G + G - 1 and process p reads (and decodes) only its slice
p*B .. (p+1)*B - 1 of it, so the batches after step s are the same whether the run
started at 0 or resumed at s, and whatever the number of processes. Grain maps that
function over the positions: `data.workers` processes each build whole batches
(decode, augment, pad), handed over in order through shared memory.

Batches (per process) are dicts of numpy arrays:
  image [B, S, S, 3] uint8 RGB; boxes [B, M, 4] float32 xyxy pixels; labels [B, M] int32;
  box_mask [B, M] bool; image_mask [B] bool (False: padding that fills the last
  evaluation batch, or an unreadable image left out with data.skip_bad); image_id [B]
  int64; scale [B] float32 (resized / original pixels); truncated_boxes [B] int32 (boxes
  beyond M, not trained on); bad_image [B] int64 (the index of an unreadable image this
  example replaced or left out with data.skip_bad, else -1).
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from collections.abc import Iterator

import grain
import numpy as np
from absl import flags

from jaxdet.data import augment
from jaxdet.data.decode import BadImage
from jaxdet.data.table import AnnotationTable
from jaxdet.errors import ConfigError

# With data.skip_bad, an unreadable image is replaced by the next readable one in the split;
# this many unreadable images in a row means the data (or its mount) is broken, not one file.
MAX_REPLACEMENTS = 64


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """Training augmentation, applied per example (see README: flip, scale jitter, crop, colour, mosaic)."""

    hflip: bool = True
    scale_range: tuple[float, float] = (1.0, 1.0)
    mosaic_prob: float = 0.0
    crop_prob: float = 0.0
    crop_min: float = 0.5
    color_jitter: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)


def default_workers() -> int:
    """Input worker processes when data.workers < 0: half the cores (the rest run the step), at most 16."""
    return max(1, min(16, (os.cpu_count() or 2) // 2))


class _Examples:
    """Picklable: global position k -> one finished example (runs in the input workers)."""

    def __init__(self, source, image_size: int, max_boxes: int, seed: int, aug: Augmentation, skip_bad: bool):
        self.source, self.size, self.max_boxes = source, image_size, max_boxes
        self.seed, self.aug, self.skip_bad = int(seed) & 0xFFFFFFFF, aug, skip_bad
        self._perm: tuple[int, np.ndarray] | None = None

    def __getstate__(self):
        return {**self.__dict__, "_perm": None}

    def index(self, k: int) -> int:
        """The image at global position k: epoch k // n's seeded permutation of the split."""
        n = len(self.source)
        epoch = k // n
        if self._perm is None or self._perm[0] != epoch:
            self._perm = (epoch, np.random.default_rng([self.seed, 0, epoch]).permutation(n))
        return int(self._perm[1][k % n])

    def _rng(self, purpose: int, k: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, purpose, k])

    def read(self, idx: int, why: str):
        """(Example, index of the unreadable image it replaces or -1). Raises ConfigError
        naming the file when the image is unreadable and data.skip_bad is off."""
        n, bad = len(self.source), -1
        for attempt in range(MAX_REPLACEMENTS + 1):
            j = (idx + attempt) % n
            try:
                return self.source.read(j), bad
            except BadImage as e:
                if not self.skip_bad:
                    raise ConfigError(
                        f"image {self.source.where(j)} {e} (found when reading it for {why}); fix or remove it, "
                        "or set --config.data.skip_bad=True to replace such images by the next readable one "
                        "(counted in the logs and metrics.jsonl)"
                    ) from None
                bad = j if bad < 0 else bad
        raise ConfigError(
            f"{MAX_REPLACEMENTS + 1} unreadable images in a row from {self.source.where(idx)} on: "
            "is the image folder complete and readable?"
        )

    def _augmented(self, ex, rng: np.random.Generator):
        """One example cropped, resized (scale jitter), colour-jittered, padded and maybe flipped."""
        a = self.aug
        image, boxes = ex.image, ex.boxes
        draw, crop_draw, color_draw = rng.random(4), rng.random(5), rng.random(4)
        if a.crop_prob > 0 and crop_draw[4] < a.crop_prob:
            image, boxes = augment.random_crop(image, boxes, crop_draw[:4], a.crop_min)
        lo, hi = a.scale_range
        image, boxes, scale = augment.resize(image, boxes, self.size, lo + (hi - lo) * draw[0])
        if any(a.color_jitter):
            image = augment.color_jitter(image, color_draw, *a.color_jitter)
        image, boxes = augment.crop_and_pad(image, boxes, self.size, draw[1], draw[2])
        if a.hflip and draw[3] < 0.5:
            image, boxes = augment.hflip(image, boxes)
        return image, boxes, ex.labels, scale

    def train(self, k: int) -> dict[str, np.ndarray]:
        idx = self.index(k)
        why = f"training example {k}"
        ex, bad = self.read(idx, why)
        if self.aug.mosaic_prob > 0 and self._rng(8, k).random() < self.aug.mosaic_prob:
            others = self._rng(2, k).integers(0, len(self.source), 3)
            tiles = [self._augmented(ex, self._rng(3, k))]
            for j, other in enumerate(others):
                tile_ex, tile_bad = self.read(int(other), why)
                bad = tile_bad if bad < 0 else bad
                tiles.append(self._augmented(tile_ex, self._rng(4 + j, k)))
            corner = self._rng(7, k).uniform(0.25, 0.75, 2)
            image, boxes, labels = augment.mosaic([t[:3] for t in tiles], self.size, corner)
            scale = tiles[0][3]
        else:
            image, boxes, labels, scale = self._augmented(ex, self._rng(1, k))
        return self.finish(image, boxes, labels, ex.image_id, scale, True, bad)

    def eval(self, k: int) -> dict[str, np.ndarray]:
        """Example k of the split (k >= n: padding, image_mask False), resized and padded."""
        n = len(self.source)
        idx = min(k, n - 1)
        try:
            ex = self.source.read(idx)
        except BadImage as e:
            if not self.skip_bad:
                raise ConfigError(
                    f"image {self.source.where(idx)} {e} (found when reading it for evaluation); fix or remove "
                    "it, or set --config.data.skip_bad=True to leave such images out of the metrics (counted)"
                ) from None
            blank = np.zeros((self.size, self.size, 3), np.uint8)
            no_boxes = np.zeros((0, 4), np.float32), np.zeros(0, np.int32)
            return self.finish(blank, *no_boxes, self.source.image_id(idx), 1.0, False, idx)
        image, boxes, scale = augment.resize(ex.image, ex.boxes, self.size)
        image, boxes = augment.crop_and_pad(image, boxes, self.size)
        return self.finish(image, boxes, ex.labels, ex.image_id, scale, k < n, -1)

    def finish(self, image, boxes, labels, image_id, scale, image_ok, bad) -> dict[str, np.ndarray]:
        """Pads the boxes to max_boxes; a box squeezed below one pixel no longer shows an object."""
        wh = boxes[:, 2:] - boxes[:, :2]
        keep = (wh[:, 0] >= 1.0) & (wh[:, 1] >= 1.0)
        boxes, labels = boxes[keep], labels[keep]
        m, k = self.max_boxes, min(len(boxes), self.max_boxes)
        out_boxes = np.zeros((m, 4), np.float32)
        out_labels = np.zeros((m,), np.int32)
        out_boxes[:k], out_labels[:k] = boxes[:k], labels[:k]
        return {
            "image": image,
            "boxes": out_boxes,
            "labels": out_labels,
            "box_mask": np.arange(m) < k,
            "image_mask": np.bool_(image_ok),
            "image_id": np.int64(image_id),
            "scale": np.float32(scale),
            "truncated_boxes": np.int32(len(boxes) - k),
            "bad_image": np.int64(bad),
        }


def _watch_parent(worker_index: int, worker_count: int) -> None:
    """In each input worker: exit when the trainer is gone (e.g. kill -9), instead of
    lingering with its shared memory. Polls the parent pid once a second."""
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="jaxdet-parent-watch").start()


class Batches(Iterator):
    """Iterates a Grain pipeline; maps a dead input worker to an error that names the batch's images."""

    def __init__(self, dataset: grain.MapDataset, workers: int, describe):
        self._describe = describe  # batch number -> the images it holds (for error messages)
        self._count = 0
        ds = dataset.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=2))
        if workers > 0:
            if not flags.FLAGS.is_parsed():  # Grain reads its absl flags; outside an absl main (tests,
                flags.FLAGS.mark_as_parsed()  # notebooks) they keep their defaults
            options = grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=2)
            ds = ds.mp_prefetch(options, worker_init_fn=_watch_parent)
        self._it = iter(ds)

    def __next__(self) -> dict[str, np.ndarray]:
        try:
            batch = next(self._it)
        except RuntimeError as e:
            if "terminated unexpectedly" not in str(e):
                raise
            raise RuntimeError(
                f"an input worker process died ({e}) while preparing batch {self._count} "
                f"({self._describe(self._count)}); if it was killed for memory, lower --config.data.workers"
            ) from e
        self._count += 1
        return batch

    def close(self) -> None:
        close = getattr(self._it, "close", None)
        if close:
            close()


class Pipeline:
    """Train and eval streams over a random-access source (see the module docstring)."""

    def __init__(self, source, image_size: int, max_boxes: int, workers: int = 0, skip_bad: bool = False):
        self.source, self.image_size, self.max_boxes = source, image_size, max_boxes
        self.workers = default_workers() if workers < 0 else workers
        self.skip_bad = skip_bad

    def train(
        self,
        batch_size: int,
        seed: int,
        start_step: int = 0,
        hflip: bool = True,
        scale_range=(1.0, 1.0),
        mosaic_prob: float = 0.0,
        process_index: int = 0,
        process_count: int = 1,
        *,
        crop_prob: float = 0.0,
        crop_min: float = 0.5,
        color_jitter: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0),
    ) -> Batches:
        """Endless augmented batches for steps start_step, start_step + 1, ... (per process).

        `batch_size` is this process's share of the global batch (global = batch_size x
        process_count); process p builds slice p of each global batch (module docstring).
        With probability `mosaic_prob` an example is a 2x2 mosaic (YOLOv4); with
        `crop_prob` an image is first cropped to a random window (sides U(crop_min, 1));
        `color_jitter` = (brightness, contrast, saturation, hue) as torchvision's ColorJitter.
        """
        if len(self.source) == 0:
            raise ConfigError("the training split is empty")
        aug = Augmentation(hflip, tuple(scale_range), mosaic_prob, crop_prob, crop_min, tuple(color_jitter))
        examples = _Examples(self.source, self.image_size, self.max_boxes, seed, aug, self.skip_bad)
        global_bs = batch_size * process_count

        def position(c: int) -> int:  # this process's c-th example -> its position in the global stream
            return (c // batch_size) * global_bs + process_index * batch_size + c % batch_size

        first = start_step * batch_size
        ds = grain.MapDataset.range(first, 2**62).map(lambda c: examples.train(position(c))).batch(batch_size)

        def describe(b: int) -> str:
            step = start_step + b
            idx = [examples.index(position(step * batch_size + i)) for i in range(batch_size)]
            shown = ", ".join(self.source.where(i) for i in idx[:4]) + (" ..." if len(idx) > 4 else "")
            return f"training step {step}: {shown}"

        return Batches(ds, self.workers, describe)

    def eval(self, batch_size: int) -> Batches:
        """Every example once, in order; the last batch is padded with image_mask False."""
        n = len(self.source)
        total = -(-n // batch_size) * batch_size
        examples = _Examples(self.source, self.image_size, self.max_boxes, 0, Augmentation(), self.skip_bad)
        ds = grain.MapDataset.range(total).map(examples.eval).batch(batch_size)

        def describe(b: int) -> str:
            return f"evaluation images {b * batch_size}..{min(n, (b + 1) * batch_size) - 1}"

        return Batches(ds, self.workers, describe)


def coco_ground_truth(table: AnnotationTable, leave_out: set[int] = frozenset()) -> dict:
    """COCO-format ground truth of a split (original pixels; category ids are label + 1),
    without the images whose ids are in `leave_out` (unreadable ones under data.skip_bad)."""
    ids, heights, widths = table.column("image_ids"), table.column("heights"), table.column("widths")
    images, annotations = [], []
    for i, (image_id, h, w) in enumerate(zip(ids, heights, widths)):
        if int(image_id) in leave_out:
            continue
        images.append({"id": int(image_id), "width": int(w), "height": int(h)})
        crowd_boxes, crowd_labels = table.crowd(i)
        for crowd, (bs, ls) in enumerate(((table.boxes(i), table.labels(i)), (crowd_boxes, crowd_labels))):
            for box, label in zip(bs, ls):
                bw, bh = float(box[2] - box[0]), float(box[3] - box[1])
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": int(image_id),
                        "category_id": int(label) + 1,
                        "bbox": [float(box[0]), float(box[1]), bw, bh],
                        "area": bw * bh,
                        "iscrowd": crowd,  # crowd regions: matches to them are neither TP nor FP
                    }
                )
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(table.class_names)]
    return {"images": images, "annotations": annotations, "categories": categories}
