"""Pictures of boxes: ground truth and predictions drawn on images (PIL); used by data
inspection, evaluation and prediction alike."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

_PALETTE = [
    (230, 25, 75),
    (60, 180, 75),
    (255, 225, 25),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
    (70, 240, 240),
    (240, 50, 230),
    (210, 245, 60),
    (250, 190, 212),
]


def draw_boxes(
    image: np.ndarray,
    pred_boxes: np.ndarray,
    pred_classes: np.ndarray,
    pred_scores: np.ndarray,
    class_names: Sequence[str],
    gt_boxes: np.ndarray | None = None,
    upscale: int = 1,
) -> np.ndarray:
    """Draws predictions (coloured by class, labelled with name and score) and ground truth
    (thin white) on `image` [H, W, 3]; boxes are xyxy in the image's pixels. Returns uint8
    [H * upscale, W * upscale, 3]."""
    img = Image.fromarray(np.clip(image, 0, 255).astype(np.uint8))
    if upscale != 1:
        img = img.resize((img.width * upscale, img.height * upscale), Image.NEAREST)
    draw = ImageDraw.Draw(img)
    if gt_boxes is not None:
        for box in np.asarray(gt_boxes) * upscale:
            draw.rectangle([float(v) for v in box], outline=(255, 255, 255), width=1)
    for box, cls, score in zip(np.asarray(pred_boxes) * upscale, pred_classes, pred_scores):
        colour = _PALETTE[int(cls) % len(_PALETTE)]
        draw.rectangle([float(v) for v in box], outline=colour, width=2)
        label = f"{class_names[int(cls)]} {float(score):.2f}"
        draw.text((float(box[0]) + 2, float(box[1]) + 1), label, fill=colour)
    return np.asarray(img)
