"""An image file's pixels onto the model's square canvas and detections back: what
evaluation, `predict` and an exported artifact's loader do alike (numpy + OpenCV only, so
a process running an exported detector imports no detector code)."""

from __future__ import annotations

import numpy as np

from jaxdet.data import augment


def preprocess(image: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """uint8 [H, W, 3] -> (uint8 [size, size, 3], scale = model px / original px).

    The longer side becomes `size` and the rest is zero padding at the bottom and right:
    the evaluation pipeline's own functions, so predictions see the pixels evaluation sees.
    """
    no_boxes = np.zeros((0, 4), np.float32)
    resized, _, scale = augment.resize(np.ascontiguousarray(image, np.uint8), no_boxes, size)
    out, _ = augment.crop_and_pad(resized, no_boxes, size)
    return out, scale


def to_original(boxes: np.ndarray, scale: float, height: int, width: int) -> np.ndarray:
    """Model-pixel xyxy boxes -> the original image's pixels, clipped to it."""
    out = np.asarray(boxes, np.float32) / scale
    return np.clip(out, 0.0, [width, height, width, height]).astype(np.float32)
