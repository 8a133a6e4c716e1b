"""One training or evaluation example from global position k: read (an unreadable image
named, or replaced with data.skip_bad), augmented, resized, padded to fixed shapes.

Runs in the input workers (`jaxdet.data.pipeline` maps it over positions with Grain).
The image at position k is `permutation(seed, k // n)[k % n]` and every random draw
comes from `np.random.default_rng([seed, purpose, k])`: a pure function of (seed, k).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxdet.data import augment
from jaxdet.data.decode import BadImage
from jaxdet.errors import ConfigError

# With data.skip_bad, an unreadable image is replaced by the next readable one in the split;
# this many unreadable images in a row means the data (or its mount) is broken, not one file.
MAX_REPLACEMENTS = 64


@dataclasses.dataclass(frozen=True)
class Augmentation:
    """Training augmentation, applied per example (see docs/data.md: flip, scale jitter, crop, colour, mosaic)."""

    hflip: bool = True
    scale_range: tuple[float, float] = (1.0, 1.0)
    mosaic_prob: float = 0.0
    crop_prob: float = 0.0
    crop_min: float = 0.5
    color_jitter: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    # (degrees, translate, scale, shear): ultralytics' random affine after mosaic (augment.random_affine).
    affine: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    mixup_prob: float = 0.0  # mixup with a second (mosaic) example, ratio ~ Beta(32, 32)
    mosaic_until: int | None = None  # global positions from this one on get no mosaic (close_mosaic)
    # Multi-scale training: each global batch's canvas side drawn from these (empty: image_size),
    # per step = global position // global_batch, so every example of a batch has one size.
    sizes: tuple[int, ...] = ()
    global_batch: int = 1


class Examples:
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

    def size_at(self, k: int) -> int:
        """The canvas side of global position k: image_size, or with multi-scale training the
        size its step draws (`train_size(seed, step, sizes)`)."""
        if not self.aug.sizes:
            return self.size
        return train_size(self.seed, k // self.aug.global_batch, self.aug.sizes)

    def _unreadable(self, j: int, error: BadImage, why: str) -> ConfigError:
        return ConfigError(
            f"image {self.source.where(j)} {error} (found when reading it for {why}); fix or remove it, or set "
            "--config.data.skip_bad=True (training then replaces such images by the next readable one, evaluation "
            "leaves them out of the metrics; both counted in the logs and metrics.jsonl)"
        )

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
                    raise self._unreadable(j, e, why) from None
                bad = j if bad < 0 else bad
        raise ConfigError(
            f"{MAX_REPLACEMENTS + 1} unreadable images in a row from {self.source.where(idx)} on: "
            "is the image folder complete and readable?"
        )

    def _augmented(self, ex, rng: np.random.Generator, size: int):
        """One example cropped, resized (scale jitter) to a `size` canvas, colour-jittered, padded and maybe flipped."""
        a = self.aug
        image, boxes = ex.image, ex.boxes
        draw, crop_draw, color_draw = rng.random(4), rng.random(5), rng.random(4)
        if a.crop_prob > 0 and crop_draw[4] < a.crop_prob:
            image, boxes = augment.random_crop(image, boxes, crop_draw[:4], a.crop_min)
        lo, hi = a.scale_range
        image, boxes, scale = augment.resize(image, boxes, size, lo + (hi - lo) * draw[0])
        if any(a.color_jitter):
            image = augment.color_jitter(image, color_draw, *a.color_jitter)
        image, boxes = augment.crop_and_pad(image, boxes, size, draw[1], draw[2])
        if a.hflip and draw[3] < 0.5:
            image, boxes = augment.hflip(image, boxes)
        return image, boxes, ex.labels, scale

    def train(self, k: int) -> dict[str, np.ndarray]:
        why, size = f"training example {k}", self.size_at(k)
        image, boxes, labels, scale, bad, dropped, image_id = self._composed(self.index(k), k, 0, why, size)
        if self.aug.mixup_prob > 0 and self._rng(10, k).random() < self.aug.mixup_prob:
            other = int(self._rng(11, k).integers(0, len(self.source)))
            second = self._composed(other, k, 100, why, size)
            ratio = float(self._rng(12, k).beta(32.0, 32.0))
            image, boxes, labels = augment.mixup((image, boxes, labels), second[:3], ratio)
            bad, dropped = bad if bad >= 0 else second[4], dropped + second[5]
        return self.finish(image, boxes, labels, image_id, scale, True, bad, dropped)

    def uses_mosaic(self, k: int, offset: int = 0) -> bool:
        """Whether example k (its mixup partner with offset 100) is a mosaic: a pure function of (seed, k)."""
        a = self.aug
        if a.mosaic_prob <= 0 or (a.mosaic_until is not None and k >= a.mosaic_until):
            return False
        return self._rng(8 + offset, k).random() < a.mosaic_prob

    def _composed(self, idx: int, k: int, offset: int, why: str, size: int):
        """Image idx for position k on a `size` canvas, mosaic or alone, then the random affine: (image, boxes,
        labels, scale, unreadable index or -1, boxes dropped, image id). `offset` shifts every
        random purpose (0 for the example itself, as before mixup existed; 100 for its partner)."""
        ex, bad = self.read(idx, why)
        dropped = 0
        if self.uses_mosaic(k, offset):
            others = self._rng(2 + offset, k).integers(0, len(self.source), 3)
            tiles = [self._augmented(ex, self._rng(3 + offset, k), size)]
            for j, other in enumerate(others):
                tile_ex, tile_bad = self.read(int(other), why)
                bad = tile_bad if bad < 0 else bad
                tiles.append(self._augmented(tile_ex, self._rng(4 + j + offset, k), size))
            corner = self._rng(7 + offset, k).uniform(0.25, 0.75, 2)
            image, boxes, labels = augment.mosaic([t[:3] for t in tiles], size, corner)
            dropped += sum(len(t[1]) for t in tiles) - len(boxes)
            scale = tiles[0][3]
        else:
            image, boxes, labels, scale = self._augmented(ex, self._rng(1 + offset, k), size)
        if any(self.aug.affine):
            draw = self._rng(9 + offset, k).random(6)
            image, boxes, keep = augment.random_affine(image, boxes, draw, *self.aug.affine)
            boxes, labels, dropped = boxes[keep], labels[keep], dropped + int((~keep).sum())
        return image, boxes, labels, scale, bad, dropped, ex.image_id

    def eval(self, k: int) -> dict[str, np.ndarray]:
        """Example k of the split (k >= n: padding, image_mask False), resized and padded."""
        n = len(self.source)
        idx = min(k, n - 1)
        try:
            ex = self.source.read(idx)
        except BadImage as e:
            if not self.skip_bad:
                raise self._unreadable(idx, e, "evaluation") from None
            blank = np.zeros((self.size, self.size, 3), np.uint8)
            no_boxes = np.zeros((0, 4), np.float32), np.zeros(0, np.int32)
            return self.finish(blank, *no_boxes, self.source.image_id(idx), 1.0, False, idx, 0)
        image, boxes, scale = augment.resize(ex.image, ex.boxes, self.size)
        image, boxes = augment.crop_and_pad(image, boxes, self.size)
        return self.finish(image, boxes, ex.labels, ex.image_id, scale, k < n, -1, 0)

    def finish(self, image, boxes, labels, image_id, scale, image_ok, bad, dropped) -> dict[str, np.ndarray]:
        """Pads the boxes to max_boxes; a box squeezed below one pixel no longer shows an
        object and is dropped. `dropped_boxes` counts those and the `dropped` before (cut by
        mosaic or the affine)."""
        wh = boxes[:, 2:] - boxes[:, :2]
        keep = (wh[:, 0] >= 1.0) & (wh[:, 1] >= 1.0)
        boxes, labels, dropped = boxes[keep], labels[keep], dropped + int((~keep).sum())
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
            "dropped_boxes": np.int32(dropped),
            "bad_image": np.int64(bad),
        }


def train_size(seed: int, step: int, sizes: tuple[int, ...]) -> int:
    """The canvas side of training step `step` with multi-scale training: one of `sizes`,
    drawn uniformly as a pure function of (seed, step) (the same on every process and resume)."""
    return int(sizes[np.random.default_rng([seed & 0xFFFFFFFF, 13, step]).integers(len(sizes))])
