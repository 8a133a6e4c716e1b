"""Per-example image and box transforms (numpy + OpenCV), stateless: every random draw
comes from the caller's `np.random.Generator`, itself a function of (seed, position).

Images are uint8 [H, W, 3] RGB in and out; boxes float32 [K, 4] xyxy pixels. Resizing is
OpenCV's bilinear (half-pixel centres, as TensorFlow's `tf.image.resize` that it
replaces); results are rounded to uint8, as torchvision's and detectron2's pipelines do.
"""

from __future__ import annotations

import cv2
import numpy as np

# tf.image.rgb_to_grayscale's weights (ITU-R 601), used for the contrast mean.
_GRAY = np.array([0.2989, 0.5870, 0.1140], np.float32)


def resize(image: np.ndarray, boxes: np.ndarray, size: int, scale_factor: float = 1.0):
    """Resizes so the longer side is size * scale_factor. Returns (image, boxes, scale).

    Boxes follow the pixels exactly: each axis is scaled by its resized / original length
    (the sizes are rounded to whole pixels); `scale` is the nominal factor, which maps
    detections back to the original image."""
    h, w = image.shape[:2]
    scale = size * scale_factor / max(h, w)
    new_h, new_w = max(1, int(np.round(h * scale))), max(1, int(np.round(w * scale)))
    if (new_h, new_w) != (h, w):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    sx, sy = new_w / w, new_h / h
    return image, boxes * np.array([sx, sy, sx, sy], np.float32), scale


def crop_and_pad(image: np.ndarray, boxes: np.ndarray, size: int, offset_x: float = 0.0, offset_y: float = 0.0):
    """A size x size window at the offsets (fractions of the overhang) of a larger image;
    a smaller one is padded with zeros at the bottom and right. Boxes follow and are clipped."""
    h, w = image.shape[:2]
    ox = int(np.round(offset_x * max(w - size, 0)))
    oy = int(np.round(offset_y * max(h - size, 0)))
    window = image[oy : oy + size, ox : ox + size]
    out = np.zeros((size, size, 3), np.uint8)
    out[: window.shape[0], : window.shape[1]] = window
    boxes = boxes - np.array([ox, oy, ox, oy], np.float32)
    return out, np.clip(boxes, 0.0, float(size))


def random_crop(image: np.ndarray, boxes: np.ndarray, draw: np.ndarray, min_fraction: float):
    """A window of U(min_fraction, 1) of each side at a uniform position (draw: 4 uniforms);
    boxes are shifted and clipped to it (one left wholly outside becomes empty, dropped later)."""
    h, w = image.shape[:2]
    frac = min_fraction + (1.0 - min_fraction) * draw[:2]
    crop_h, crop_w = max(np.round(h * frac[0]), 1.0), max(np.round(w * frac[1]), 1.0)
    y0, x0 = np.floor(draw[2] * (h - crop_h)), np.floor(draw[3] * (w - crop_w))
    image = image[int(y0) : int(y0 + crop_h), int(x0) : int(x0 + crop_w)]
    boxes = boxes - np.array([x0, y0, x0, y0], np.float32)
    return image, np.clip(boxes, 0.0, np.array([crop_w, crop_h, crop_w, crop_h], np.float32))


def hflip(image: np.ndarray, boxes: np.ndarray):
    """Mirrors left-right; boxes follow."""
    w = image.shape[1]
    flipped = np.stack([w - boxes[:, 2], boxes[:, 1], w - boxes[:, 0], boxes[:, 3]], axis=1)
    return np.ascontiguousarray(image[:, ::-1]), flipped.astype(np.float32)


def color_jitter(
    image: np.ndarray, draw: np.ndarray, brightness: float, contrast: float, saturation: float, hue: float
):
    """torchvision's ColorJitter factors (draw: 4 uniforms): brightness and contrast
    x U(1-b, 1+b), saturation x U(1-s, 1+s) (HSV saturation, as tf.image.adjust_saturation),
    hue + U(-h, h) (fraction of a turn), in that order on pixels in [0, 1].

    Fast form, equal to the plain sequence up to rounding (tests/test_augment.py):
    brightness then contrast is one affine map (the contrast mean of the brightened image
    is the brightness factor times the original's), a 256-entry table when nothing else
    follows; saturation and hue change the HSV planes in place."""
    draw = np.asarray(draw, np.float32)
    b = 1.0 - brightness + 2.0 * brightness * float(draw[0]) if brightness else 1.0
    c = 1.0 - contrast + 2.0 * contrast * float(draw[1]) if contrast else 1.0
    offset = 0.0
    if contrast:
        mean = float(np.dot(cv2.mean(image)[:3], _GRAY.astype(np.float64))) / 255.0  # cv2.mean: per channel
        offset = (1.0 - c) * b * mean
    if not (saturation or hue):
        table = np.clip(np.round((b * c * np.arange(256) / 255.0 + offset) * 255.0), 0, 255).astype(np.uint8)
        return cv2.LUT(image, table)
    x = np.clip(image.astype(np.float32) * np.float32(b * c / 255.0) + np.float32(offset), 0.0, 1.0)
    hsv = cv2.cvtColor(x, cv2.COLOR_RGB2HSV)  # H in degrees, S and V in 0..1
    if saturation:  # in place on the strided plane (copying planes out and back costs more)
        sat = hsv[..., 1]
        np.multiply(sat, np.float32(1.0 - saturation + 2.0 * saturation * draw[2]), out=sat)
        np.minimum(sat, np.float32(1.0), out=sat)
    if hue:  # a turn of at most half a circle either way, wrapped by hand (np.mod on floats is slow)
        h = hsv[..., 0]
        h += np.float32(360.0 * (-hue + 2.0 * hue * draw[3]))
        h += np.float32(360.0) * (h < 0) - np.float32(360.0) * (h >= 360.0)
    x = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    return cv2.convertScaleAbs(x, alpha=255.0)  # x >= 0: rounds to nearest and saturates to uint8


def mosaic(tiles, size: int, corner: np.ndarray):
    """YOLOv4's 2x2 mosaic: four (size x size image, boxes, labels) tiles, an image-sized
    window whose corner is `corner` (fractions in [0.25, 0.75]: every tile shows at least a
    quarter). Boxes are clipped; one cut to under a quarter of its area no longer looks
    like itself and is dropped. Returns (image, boxes, labels)."""
    canvas = np.concatenate(
        [np.concatenate([tiles[0][0], tiles[1][0]], axis=1), np.concatenate([tiles[2][0], tiles[3][0]], axis=1)]
    )
    offsets = [(0.0, 0.0), (size, 0.0), (0.0, size), (size, size)]
    boxes = np.concatenate([t[1] + np.array([ox, oy, ox, oy], np.float32) for t, (ox, oy) in zip(tiles, offsets)])
    labels = np.concatenate([t[2] for t in tiles])
    ox, oy = (int(v) for v in np.round(corner * size))
    image = np.ascontiguousarray(canvas[oy : oy + size, ox : ox + size])
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    boxes = np.clip(boxes - np.array([ox, oy, ox, oy], np.float32), 0.0, float(size))
    clipped = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    keep = clipped >= 0.25 * area
    return image, boxes[keep], labels[keep]


def random_affine(image: np.ndarray, boxes: np.ndarray, draw: np.ndarray, degrees: float, translate: float,
                  scale: float, shear: float):  # fmt: skip
    """ultralytics' random_perspective without perspective, on a square image (draw: 6
    uniforms): rotation U(-degrees, degrees) and scale U(1 - scale, 1 + scale) about the
    centre, shear U(-shear, shear) degrees on each axis, translation U(-translate,
    translate) of the side on each axis; pixels from outside the source are 0. Each box
    becomes the bounding box of its four corners, clipped to the image. Returns (image,
    boxes, keep): `keep` marks the boxes still objects by ultralytics' rule (both sides
    over 2 px, over 10% of their scaled area left, aspect ratio under 100); the caller
    drops (and counts) the others."""
    size = image.shape[0]
    u = np.asarray(draw, np.float64) * 2.0 - 1.0  # U(-1, 1) each
    c = np.array([[1.0, 0.0, -size / 2], [0.0, 1.0, -size / 2], [0.0, 0.0, 1.0]])
    s = 1.0 + scale * u[1]
    r = np.eye(3)
    r[:2] = cv2.getRotationMatrix2D((0.0, 0.0), degrees * u[0], s)
    sh = np.eye(3)
    sh[0, 1], sh[1, 0] = np.tan(np.radians(shear * u[2])), np.tan(np.radians(shear * u[3]))
    t = np.eye(3)
    t[0, 2], t[1, 2] = (0.5 + translate * u[4]) * size, (0.5 + translate * u[5]) * size
    m = t @ sh @ r @ c
    if not np.allclose(m, np.eye(3)):
        image = cv2.warpAffine(image, m[:2], (size, size), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
    n = len(boxes)
    corners = np.ones((n * 4, 3))
    corners[:, :2] = boxes[:, [0, 1, 2, 3, 0, 3, 2, 1]].reshape(n * 4, 2)
    xy = (corners @ m.T)[:, :2].reshape(n, 8)
    out = np.stack([xy[:, 0::2].min(1), xy[:, 1::2].min(1), xy[:, 0::2].max(1), xy[:, 1::2].max(1)], 1)
    out = np.clip(out, 0.0, float(size)).astype(np.float32)
    w0, h0 = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    w1, h1 = out[:, 2] - out[:, 0], out[:, 3] - out[:, 1]
    ratio = np.maximum(w1 / (h1 + 1e-16), h1 / (w1 + 1e-16))
    keep = (w1 > 2) & (h1 > 2) & (w1 * h1 / (w0 * h0 * s * s + 1e-16) > 0.1) & (ratio < 100)
    return image, out, keep


def mixup(first, second, ratio: float):
    """YOLOv4 / ultralytics mixup of two (image, boxes, labels) examples of one size: pixels
    ratio * first + (1 - ratio) * second (rounded), both images' boxes kept."""
    image = np.round(first[0].astype(np.float32) * ratio + second[0].astype(np.float32) * (1.0 - ratio))
    return (
        np.clip(image, 0, 255).astype(np.uint8),
        np.concatenate([first[1], second[1]]),
        np.concatenate([first[2], second[2]]),
    )
