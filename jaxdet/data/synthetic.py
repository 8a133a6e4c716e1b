"""Synthetic detection batches (numpy only): benchmarks and tests that need no dataset."""

from __future__ import annotations

import numpy as np


def synthetic_batch(batch: int, image_size: int, max_boxes: int, num_classes: int, seed: int = 0) -> dict:
    """A detection batch with `max_boxes // 2` (at least 1) random objects per image;
    `max_boxes` 0 (a config's automatic value, which no dataset resolves here) pads to 16.

    Returns numpy arrays in the pipeline's layout: image [B,S,S,3] 0..255, boxes [B,M,4]
    xyxy pixels, labels [B,M], box_mask [B,M], image_mask [B], image_id [B], scale [B].
    Boxes have sides 5-50% of the image, so every detector finds positives for them.
    """
    rng = np.random.default_rng(seed)
    max_boxes = max_boxes or 16
    n = max(1, max_boxes // 2)
    wh = rng.uniform(0.05, 0.5, (batch, n, 2)) * image_size
    xy = rng.uniform(0, 1, (batch, n, 2)) * (image_size - wh)
    boxes = np.zeros((batch, max_boxes, 4), np.float32)
    boxes[:, :n] = np.concatenate([xy, xy + wh], axis=-1)
    labels = np.zeros((batch, max_boxes), np.int32)
    labels[:, :n] = rng.integers(0, num_classes, (batch, n))
    box_mask = np.zeros((batch, max_boxes), bool)
    box_mask[:, :n] = True
    return {
        "image": rng.uniform(0, 255, (batch, image_size, image_size, 3)).astype(np.float32),
        "boxes": boxes,
        "labels": labels,
        "box_mask": box_mask,
        "image_mask": np.ones((batch,), bool),
        "image_id": np.arange(batch, dtype=np.int64),
        "scale": np.ones((batch,), np.float32),
    }


def clustered_boxes(
    rng: np.random.Generator, shape: tuple[int, ...], image_size: float, clusters: int = 6
) -> np.ndarray:
    """Boxes [*shape, 4] xyxy (float32, inside the image) jittered around a few objects, as
    RPN proposals or dense detections are before NMS: long chains of overlaps."""
    centres = rng.uniform(0, image_size, (clusters, 2))
    sides = rng.uniform(0.05, 0.3, (clusters, 2)) * image_size
    k = rng.integers(0, clusters, shape)
    ctr = centres[k] + rng.normal(0, 0.02 * image_size, (*shape, 2))
    wh = sides[k] * rng.uniform(0.7, 1.3, (*shape, 2))
    return np.clip(np.concatenate([ctr - wh / 2, ctr + wh / 2], axis=-1), 0, image_size).astype(np.float32)
