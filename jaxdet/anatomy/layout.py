"""Which pyramid level and cell each head-output location is, read off the locations'
centres: dense heads concatenate their levels in order, each level's cells row-major and
each cell's k anchors together (k may differ per level, as SSD's). Locations that are not
a grid (DETR's queries, Faster R-CNN's sampled RoIs) have no layout: no spatial map."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np


@dataclasses.dataclass(frozen=True)
class Level:
    """Level `level` (stride 2^level) holds locations [start, start + h * w * k)."""

    level: int
    start: int
    h: int
    w: int
    k: int

    @property
    def stop(self) -> int:
        return self.start + self.h * self.w * self.k


def _parse(centers: np.ndarray, image_size: int, levels: Sequence[int]) -> list[Level] | None:
    out, pos, n = [], 0, len(centers)
    for level in levels:
        stride = 2**level
        side = math.ceil(image_size / stride)
        if pos >= n:
            return None
        # A cell's anchors share its centre, up to clipping at the image border (SSD's).
        same = np.all(np.abs(centers[pos:] - centers[pos]) < 0.25 * stride, axis=1)
        k = int(np.argmin(same)) if not same.all() else n - pos
        stop = pos + side * side * k
        if k < 1 or stop > n:
            return None
        grid = centers[pos:stop:k].reshape(side, side, 2)
        if side > 1 and not (np.allclose(np.diff(grid[..., 0], axis=1), stride, atol=1e-2)
                             and np.allclose(np.diff(grid[..., 1], axis=0), stride, atol=1e-2)):  # fmt: skip
            return None
        out.append(Level(level, pos, side, side, k))
        pos = stop
    return out if pos == n else None


def infer(centers: np.ndarray | None, image_size: int, min_level: int, max_level: int) -> list[Level] | None:
    """The levels of locations with `centers` [A, 2] on a square canvas of `image_size`:
    levels min_level..max_level, or min_level alone (CenterNet), whichever fits; None if none."""
    if centers is None or centers.ndim != 2 or len(centers) == 0:
        return None
    centers = np.asarray(centers, np.float64)
    for levels in (range(min_level, max_level + 1), [min_level]):
        found = _parse(centers, image_size, list(levels))
        if found is not None:
            return found
    return None


def level_maps(values: np.ndarray, layout: Sequence[Level]) -> dict[int, np.ndarray]:
    """values [A] (or [..., A]) -> {level: [..., h, w]} summed over each cell's anchors."""
    out = {}
    for lv in layout:
        block = values[..., lv.start : lv.stop]
        out[lv.level] = block.reshape(*values.shape[:-1], lv.h, lv.w, lv.k).sum(-1)
    return out
