"""Defaults fitted to the training split, decided at start-up and logged.

`data.max_boxes = 0` (automatic) becomes the most boxes of any training image (x4 with
mosaic, x2 with mixup: an example can hold that many images' boxes), rounded up to a
multiple of 8; an explicit value below that is kept and the boxes it will cut are
counted at start-up (not only as training meets them). `canvas_boxes` gives the split's
boxes as the model sees them on its canvas, for the fit report (detectors/reach.py).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from jaxdet.errors import ConfigError

MULTIPLE = 8  # padded box counts rounded up to this (one compiled shape for nearby counts)


def examples_per_sample(data) -> int:
    """How many source images' boxes one training example can hold with data's augmentation."""
    return (4 if data.get("mosaic_prob", 0.0) > 0 else 1) * (2 if data.get("mixup_prob", 0.0) > 0 else 1)


def percentiles(counts: np.ndarray) -> tuple[int, int, int]:
    """(median, 99th percentile, max) of the boxes per image."""
    if not len(counts):
        return 0, 0, 0
    return int(np.median(counts)), int(np.ceil(np.percentile(counts, 99))), int(counts.max())


def resolve_max_boxes(data, counts: np.ndarray, log: Callable[[str], None] = print) -> int:
    """data.max_boxes for a training split with `counts` [N] boxes per image: the automatic
    value when data.max_boxes == 0, else data.max_boxes (a warning counting the boxes it
    cuts when it is below the split's most). Logs one line either way."""
    if data.max_boxes < 0:
        raise ConfigError(f"config.data.max_boxes must be >= 0 (0 = automatic), got {data.max_boxes}")
    p50, p99, top = percentiles(counts)
    factor = examples_per_sample(data)
    per = f"boxes per training image: median {p50}, 99th percentile {p99}, most {top}"
    if data.max_boxes == 0:
        value = max(MULTIPLE, -(-top * factor // MULTIPLE) * MULTIPLE)
        why = f" x{factor} (mosaic/mixup)" if factor > 1 else ""
        log(f"data.max_boxes = {value} (automatic: the most boxes of one image{why}, rounded up to a multiple of "
            f"{MULTIPLE}; {per})")  # fmt: skip
        return value
    value = int(data.max_boxes)
    cut = np.maximum(counts - value, 0)
    if cut.sum():
        log(f"warning: data.max_boxes={value} is below the {top} boxes of the fullest training image: "
            f"{int(cut.sum())} boxes of {int((cut > 0).sum())} images lie beyond it and are not trained on "
            f"(before augmentation; {per}); data.max_boxes=0 fits it to the data")  # fmt: skip
    else:
        log(f"data.max_boxes = {value} ({per})")
    return value


def canvas_boxes(table, image_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(boxes [K, 4] xyxy in canvas pixels, image index [K], labels [K]) of an
    AnnotationTable's boxes with each image's longer side resized to `image_size`, as
    evaluation resizes it."""
    counts = table.box_counts()
    start, stop = table.arrays["box_start"][table.lo], table.arrays["box_start"][table.hi]
    boxes = np.asarray(table.arrays["boxes"][start:stop], np.float32)
    longer = np.maximum(table.column("heights"), table.column("widths")).astype(np.float32)
    index = np.repeat(np.arange(len(counts)), counts)
    labels = np.asarray(table.arrays["labels"][start:stop])
    return boxes * (image_size / longer)[index, None], index, labels


def padded(boxes: np.ndarray, index: np.ndarray, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The boxes of `images` (indices) as a padded batch: (boxes [B, M, 4], mask [B, M])."""
    lo, hi = np.searchsorted(index, images, "left"), np.searchsorted(index, images, "right")  # (index is sorted)
    m = max(1, int((hi - lo).max(initial=0)))
    out, mask = np.zeros((len(images), m, 4), np.float32), np.zeros((len(images), m), bool)
    for row, (a, b) in enumerate(zip(lo, hi)):
        out[row, : b - a], mask[row, : b - a] = boxes[a:b], True
    return out, mask
