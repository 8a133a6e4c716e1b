"""Anchor grids for feature pyramids, as static numpy arrays computed once per config.

Anchors are ordered level by level, then row-major over the feature map (y, x), then
by anchor type: the order in which a head's [B, H, W, A * K] output is flattened to
[B, H * W * A, K]. They are numpy (not traced) so shapes stay static inside jit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from jaxdet.errors import ConfigError


def level_shapes(image_size: int, levels: Sequence[int]) -> list[tuple[int, int]]:
    """Feature-map (height, width) per pyramid level for a square image, rounding up as convs do."""
    return [(math.ceil(image_size / 2**lvl), math.ceil(image_size / 2**lvl)) for lvl in levels]


# How anchors are laid out: "centred" (jaxdet's: sides exactly size * scale, centres at
# (i + offset) * stride) or "torchvision" (torchvision's AnchorGenerator, so that a converted
# torchvision detector sees its own anchors: integer sizes, base anchors rounded to integer
# corners, centres at i * (image_size // H), i.e. offset 0).
ANCHOR_STYLES = ("centred", "torchvision")


def cell_anchors(
    size: float, scales: Sequence[float], aspect_ratios: Sequence[float], style: str = "centred"
) -> np.ndarray:
    """Anchors centred on the origin: [len(aspect_ratios) * len(scales), 4] xyxy.

    `aspect_ratio` is height / width (torchvision's convention); area is (size * scale)^2.
    With style="torchvision", `int(size * scale)` is the side and the corners are rounded
    (half to even) after the same float32 products as `AnchorGenerator.generate_anchors`.
    """
    if style == "torchvision":
        sides = np.asarray([int(size * scale) for scale in scales], np.float32)
        h_ratios = np.sqrt(np.asarray(aspect_ratios, np.float32))
        w_ratios = np.float32(1.0) / h_ratios
        ws = (w_ratios[:, None] * sides[None, :]).reshape(-1)
        hs = (h_ratios[:, None] * sides[None, :]).reshape(-1)
        return np.round(np.stack([-ws, -hs, ws, hs], axis=1) / np.float32(2.0))
    if style != "centred":
        raise ValueError(f"unknown anchor style {style!r}; valid: {ANCHOR_STYLES}")
    out = []
    for ratio in aspect_ratios:
        for scale in scales:
            area = (size * scale) ** 2
            w = math.sqrt(area / ratio)
            h = w * ratio
            out.append([-w / 2, -h / 2, w / 2, h / 2])
    return np.asarray(out, np.float32)


def anchor_grid(
    image_size: int,
    levels: Sequence[int],
    size_per_stride: float = 4.0,
    scales: Sequence[float] = (1.0, 2 ** (1 / 3), 2 ** (2 / 3)),
    aspect_ratios: Sequence[float] = (0.5, 1.0, 2.0),
    offset: float = 0.5,
    style: str = "centred",
) -> np.ndarray:
    """All anchors of a pyramid: [sum_l H_l * W_l * A, 4] xyxy pixels.

    Level l has stride 2**l and base size `size_per_stride * stride` (RetinaNet: 4, so
    32 px on P3). Centres sit at (i + offset) * stride; with style="torchvision" at
    i * (image_size // H_l), as torchvision places them (the same where 2**l divides the
    image size; `offset` must then be 0).
    """
    if style == "torchvision" and offset != 0:
        raise ValueError(f"torchvision's anchors sit at offset 0 (got anchor offset {offset})")
    grids = []
    for lvl, (h, w) in zip(levels, level_shapes(image_size, levels)):
        base = cell_anchors(size_per_stride * 2**lvl, scales, aspect_ratios, style)  # [A, 4]
        stride_y, stride_x = (image_size // h, image_size // w) if style == "torchvision" else (2**lvl, 2**lvl)
        ys = (np.arange(h, dtype=np.float32) + offset) * stride_y
        xs = (np.arange(w, dtype=np.float32) + offset) * stride_x
        cy, cx = np.meshgrid(ys, xs, indexing="ij")
        centres = np.stack([cx, cy, cx, cy], axis=-1).reshape(h * w, 1, 4)
        grids.append((centres + base[None]).reshape(-1, 4))
    return np.concatenate(grids, axis=0)


def anchors_per_level(image_size: int, levels: Sequence[int], per_location: int) -> tuple[int, ...]:
    """How many anchors each level of `anchor_grid` holds, in order (H_l * W_l * A)."""
    return tuple(h * w * per_location for h, w in level_shapes(image_size, levels))


def anchors_per_location(scales: Sequence[float], aspect_ratios: Sequence[float]) -> int:
    """Number of anchor types A at each feature-map position."""
    return len(scales) * len(aspect_ratios)


def point_grid(
    image_size: int, levels: Sequence[int], offset: float = 0.5, style: str = "centred"
) -> tuple[np.ndarray, np.ndarray]:
    """Anchor-free grid points in head-output order: (points [P, 2] xy pixels, strides [P]).

    The centres of the `style` anchors of side one stride (`anchor_grid`), so that points
    and anchors share one layout: "centred" at (i + offset) * stride, "torchvision" where
    torchvision's FCOS puts them. A point's stride (2^level) is the unit of its distances.
    """
    cells = anchor_grid(image_size, levels, 1.0, (1.0,), (1.0,), offset, style)
    return centers(cells), (cells[:, 2] - cells[:, 0]).astype(np.float32)


def centers(boxes: np.ndarray) -> np.ndarray:
    """Centres [A, 2] of boxes [A, 4] xyxy (where a point-based target is measured)."""
    return (0.5 * (boxes[:, :2] + boxes[:, 2:])).astype(np.float32)


def octave_scales(num_scales: int) -> tuple[float, ...]:
    """Anchor scales 2^(i / num_scales), i < num_scales: RetinaNet's three octave steps."""
    return tuple(2.0 ** (i / num_scales) for i in range(num_scales))


def check_style(style: str, offset: float, style_field: str, offset_field: str) -> None:
    """ConfigError (naming the config fields) unless `style` is a layout this module draws and
    a torchvision layout sits at offset 0."""
    if style not in ANCHOR_STYLES:
        raise ConfigError(f"{style_field}={style!r}; valid: {ANCHOR_STYLES}")
    if style == "torchvision" and offset != 0:
        raise ConfigError(
            f"{style_field}='torchvision' places them as torchvision does, at offset 0; set {offset_field}=0 "
            f"(it is {offset})"
        )


def ssd_box_shapes(
    num_levels: int, min_scale: float, max_scale: float, aspect_ratios: Sequence[Sequence[float]]
) -> list[list[tuple[float, float]]]:
    """SSD default-box (width, height) per level as fractions of the image (Liu et al. 2016).

    Level k has scale s_k, linear from min_scale to max_scale; each level gets a box per
    aspect ratio r (w = s_k sqrt(r), h = s_k / sqrt(r); r = width / height, as SSD) plus
    an extra square box of scale sqrt(s_k s_{k+1}).
    """
    if len(aspect_ratios) != num_levels:
        raise ValueError(f"need one aspect-ratio list per level: {num_levels} levels, got {len(aspect_ratios)}")
    scales = [min_scale + (max_scale - min_scale) * k / max(num_levels - 1, 1) for k in range(num_levels)]
    scales.append(1.0 if num_levels == 1 else min(1.0, scales[-1] + (scales[-1] - scales[-2])))
    shapes = []
    for k in range(num_levels):
        level = [(scales[k] * math.sqrt(r), scales[k] / math.sqrt(r)) for r in aspect_ratios[k]]
        extra = math.sqrt(scales[k] * scales[k + 1])
        level.append((extra, extra))
        shapes.append(level)
    return shapes


def ssd_default_boxes(
    image_size: int, levels: Sequence[int], box_shapes: Sequence[Sequence[tuple[float, float]]], offset: float = 0.5
) -> np.ndarray:
    """SSD default boxes [sum_l H_l W_l A_l, 4] xyxy pixels, clipped to the image as in SSD."""
    grids = []
    for lvl, (h, w), shapes in zip(levels, level_shapes(image_size, levels), box_shapes):
        stride = 2**lvl
        cy, cx = np.meshgrid((np.arange(h) + offset) * stride, (np.arange(w) + offset) * stride, indexing="ij")
        wh = np.asarray(shapes, np.float32) * image_size  # [A_l, 2]
        centres = np.stack([cx, cy], axis=-1).reshape(-1, 1, 2)
        boxes = np.concatenate([centres - wh / 2, centres + wh / 2], axis=-1)  # [HW, A_l, 4]
        grids.append(boxes.reshape(-1, 4))
    return np.clip(np.concatenate(grids), 0.0, image_size).astype(np.float32)
