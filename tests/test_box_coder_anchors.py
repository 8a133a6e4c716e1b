"""Box encodings invert each other; anchor grids have the documented order and sizes."""

import numpy as np
import pytest

from jaxdet import anchors, box_coder


def test_deltas_roundtrip_and_identity():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 100, (20, 2))
    a = np.concatenate([xy, xy + rng.uniform(4, 60, (20, 2))], axis=1)
    xy2 = rng.uniform(0, 100, (20, 2))
    g = np.concatenate([xy2, xy2 + rng.uniform(2, 80, (20, 2))], axis=1)
    for w in [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)]:
        d = box_coder.encode_deltas(a, g, w)
        np.testing.assert_allclose(box_coder.decode_deltas(a, d, w), g, rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(box_coder.encode_deltas(a, a), 0.0, atol=1e-6)


def test_deltas_finite_for_zero_size_boxes():
    a = np.array([[0.0, 0.0, 10.0, 10.0]])
    g = np.array([[5.0, 5.0, 5.0, 5.0]])
    assert np.all(np.isfinite(np.asarray(box_coder.encode_deltas(a, g))))
    # A huge predicted scale is clamped instead of overflowing.
    assert np.all(np.isfinite(np.asarray(box_coder.decode_deltas(a, np.array([[0.0, 0.0, 1e4, 1e4]])))))


def test_ltrb_roundtrip():
    pts = np.array([[10.0, 10.0], [3.0, 7.0]])
    b = np.array([[0.0, 2.0, 20.0, 30.0], [1.0, 1.0, 5.0, 9.0]])
    d = box_coder.encode_ltrb(pts, b, stride=np.array([8.0, 4.0]))
    np.testing.assert_allclose(d[0], [10 / 8, 8 / 8, 10 / 8, 20 / 8])
    np.testing.assert_allclose(box_coder.decode_ltrb(pts, d, stride=np.array([8.0, 4.0])), b, rtol=1e-6)


def test_anchor_grid_order_sizes_and_centres():
    levels = [3, 4]
    scales, ratios = (1.0, 2.0), (0.5, 1.0, 2.0)
    grid = anchors.anchor_grid(64, levels, 4.0, scales, ratios, offset=0.5)
    per = anchors.anchors_per_location(scales, ratios)
    assert per == 6
    assert grid.shape == ((8 * 8 + 4 * 4) * per, 4)
    first = grid[:per]
    centres = (first[:, :2] + first[:, 2:]) / 2
    np.testing.assert_allclose(centres, 4.0)  # (0 + 0.5) * stride 8
    areas = (first[:, 2] - first[:, 0]) * (first[:, 3] - first[:, 1])
    np.testing.assert_allclose(areas, np.tile([32.0**2, 64.0**2], 3), rtol=1e-5)
    ratio = (first[:, 3] - first[:, 1]) / (first[:, 2] - first[:, 0])
    np.testing.assert_allclose(ratio, np.repeat([0.5, 1.0, 2.0], 2), rtol=1e-5)
    # Second position on P3 is one stride to the right (row-major over y, x).
    np.testing.assert_allclose((grid[per, 0] + grid[per, 2]) / 2, 12.0)
    # P4 starts after all P3 anchors, with stride 16.
    p4 = grid[8 * 8 * per]
    np.testing.assert_allclose((p4[:2] + p4[2:]) / 2, [8.0, 8.0])


# torchvision 0.29.1: AnchorGenerator(((32, 40, 50),), ((0.5, 1.0, 2.0),)).cell_anchors[0]
TORCHVISION_P3_CELL = [
    [-23, -11, 23, 11], [-28, -14, 28, 14], [-35, -18, 35, 18],
    [-16, -16, 16, 16], [-20, -20, 20, 20], [-25, -25, 25, 25],
    [-11, -23, 11, 23], [-14, -28, 14, 28], [-18, -35, 18, 35],
]  # fmt: skip


def test_torchvision_anchor_style_is_torchvisions_generator():
    """Integer sizes (int(32 * 2^(1/3)) = 40), rounded corners, ratio-major order; centres
    at i * (image // grid): at 96 px P6 has 2 cells 48 px apart (not 64) and P7 one at 0.
    (tests/test_torchvision_losses.py compares whole grids with torchvision's when torch is installed.)"""
    scales = (1.0, 2 ** (1 / 3), 2 ** (2 / 3))
    cell = anchors.cell_anchors(32.0, scales, (0.5, 1.0, 2.0), "torchvision")
    np.testing.assert_array_equal(cell, TORCHVISION_P3_CELL)
    centred = anchors.cell_anchors(32.0, scales, (0.5, 1.0, 2.0))
    assert 0.1 < np.abs(centred - cell).max() < 1.0  # jaxdet's own: exact sides, not rounded
    grid = anchors.anchor_grid(96, [6, 7], 4.0, (1.0,), (1.0,), 0.0, "torchvision")
    np.testing.assert_array_equal(grid[:, :2] + grid[:, 2:], np.array([[0, 0], [96, 0], [0, 96], [96, 96], [0, 0]]))
    assert len(grid) == 5  # 2 x 2 cells on P6, 1 on P7
    with pytest.raises(ValueError, match="offset 0"):
        anchors.anchor_grid(96, [6], 4.0, (1.0,), (1.0,), 0.5, "torchvision")
