"""RoIAlign against known answers and a loop-by-loop reference of torchvision's algorithm."""

import numpy as np
import pytest
from jax.test_util import check_grads

from jaxdet.ops.roi_align import fpn_levels, multilevel_roi_align, roi_align, roi_align_per_image


def _bilinear(fm, y, x):
    """torchvision's bilinear_interpolate (roi_align_kernel.cpp), one channel-vector."""
    h, w = fm.shape[:2]
    if y < -1.0 or y > h or x < -1.0 or x > w:
        return np.zeros(fm.shape[2])
    y, x = max(y, 0.0), max(x, 0.0)
    y_lo, x_lo = int(y), int(x)
    if y_lo >= h - 1:
        y_hi = y_lo = h - 1
        y = float(y_lo)
    else:
        y_hi = y_lo + 1
    if x_lo >= w - 1:
        x_hi = x_lo = w - 1
        x = float(x_lo)
    else:
        x_hi = x_lo + 1
    ly, lx = y - y_lo, x - x_lo
    hy, hx = 1 - ly, 1 - lx
    return hy * hx * fm[y_lo, x_lo] + hy * lx * fm[y_lo, x_hi] + ly * hx * fm[y_hi, x_lo] + ly * lx * fm[y_hi, x_hi]


def _reference(features, rois, out, scale, ratio, aligned):
    res = np.zeros((len(rois), out, out, features.shape[-1]))
    off = 0.5 if aligned else 0.0
    for k, (b, x1, y1, x2, y2) in enumerate(rois):
        sx, sy = x1 * scale - off, y1 * scale - off
        rw, rh = x2 * scale - off - sx, y2 * scale - off - sy
        if not aligned:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        bh, bw = rh / out, rw / out
        for ph in range(out):
            for pw in range(out):
                acc = 0.0
                for iy in range(ratio):
                    y = sy + ph * bh + (iy + 0.5) * bh / ratio
                    for ix in range(ratio):
                        x = sx + pw * bw + (ix + 0.5) * bw / ratio
                        acc = acc + _bilinear(features[int(b)], y, x)
                res[k, ph, pw] = acc / (ratio * ratio)
    return res


ROIS = np.array(
    [
        [0, 2.0, 3.0, 10.0, 9.0],  # inside
        [1, -4.0, -3.0, 5.0, 6.0],  # over the top-left border
        [0, 12.0, 10.0, 20.0, 18.0],  # beyond the bottom-right border (map is 16 x 14 px at scale 1)
        [1, 5.0, 5.0, 5.0, 5.0],  # zero size
        [0, -30.0, -30.0, -20.0, -20.0],  # entirely outside
    ],
    np.float32,
)


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("scale, ratio", [(1.0, 2), (0.5, 1), (0.5, 3)])
def test_matches_reference_algorithm(aligned, scale, ratio):
    rng = np.random.default_rng(0)
    features = rng.normal(size=(2, 14, 16, 3)).astype(np.float32)
    ours = np.asarray(roi_align(features, ROIS, 4, scale, ratio, aligned))
    ref = _reference(features, ROIS, 4, scale, ratio, aligned)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-5)


def test_constant_map_gives_the_constant_inside_and_less_outside():
    features = np.full((1, 8, 8, 2), 3.0, np.float32)
    out = np.asarray(roi_align(features, np.array([[0, 1.0, 1.0, 6.0, 6.0], [0, -20.0, -20.0, -10.0, -10.0]]), 2))
    np.testing.assert_allclose(out[0], 3.0, rtol=1e-6)
    np.testing.assert_allclose(out[1], 0.0)


def test_linear_map_is_interpolated_exactly():
    # f(y, x) = 2x + 3y + 1 at pixel centres; bilinear sampling reproduces it exactly inside.
    ys, xs = np.mgrid[0:20, 0:20].astype(np.float32)
    features = (2 * xs + 3 * ys + 1)[None, :, :, None]
    roi = np.array([[0, 4.0, 6.0, 12.0, 10.0]], np.float32)  # 8 wide, 4 high -> 2 x 2 bins
    out = np.asarray(roi_align(features, roi, 2, 1.0, 2, aligned=True))[0, :, :, 0]
    # aligned: pixel coordinates = box coordinates - 0.5; bin centres at x 5.5/9.5 - 0.5, y 7/9 - 0.5.
    expect = np.array([[2 * (6 - 0.5) + 3 * (7 - 0.5) + 1, 2 * (10 - 0.5) + 3 * (7 - 0.5) + 1],
                       [2 * (6 - 0.5) + 3 * (9 - 0.5) + 1, 2 * (10 - 0.5) + 3 * (9 - 0.5) + 1]])  # fmt: skip
    np.testing.assert_allclose(out, expect, rtol=1e-5)


def test_gradient_with_respect_to_features():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(2, 6, 7, 2)).astype(np.float64)
    fn = lambda f: roi_align(f, ROIS[:3] / 2, 3, 1.0, 2, True)
    check_grads(fn, (features,), order=1, modes=["rev"], atol=1e-2, rtol=1e-2)


def test_fpn_levels_and_multilevel():
    boxes = np.array([[0, 0, 224, 224], [0, 0, 112, 112], [0, 0, 32, 32], [0, 0, 2000, 2000]], np.float32)
    np.testing.assert_array_equal(fpn_levels(boxes, 2, 5), [4, 3, 2, 5])
    rng = np.random.default_rng(2)
    pyramid = {lvl: rng.normal(size=(1, 64 // 2**lvl, 64 // 2**lvl, 2)).astype(np.float32) for lvl in (2, 3)}
    rois = np.array([[0, 0.0, 0.0, 16.0, 16.0], [0, 0.0, 0.0, 160.0, 160.0]], np.float32)  # -> P2, P3
    out = np.asarray(multilevel_roi_align(pyramid, rois[None, :, 1:], 2))[0]
    np.testing.assert_allclose(out[0], np.asarray(roi_align(pyramid[2], rois[:1], 2, 1 / 4))[0], rtol=1e-6)
    np.testing.assert_allclose(out[1], np.asarray(roi_align(pyramid[3], rois[1:], 2, 1 / 8))[0], rtol=1e-6)


@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("scale, ratio", [(1.0, 2), (0.5, 3)])
def test_per_image_matmul_form_matches_reference(aligned, scale, ratio):
    """The gather-free form used by Faster R-CNN: same values, boxes grouped per image."""
    rng = np.random.default_rng(3)
    features = rng.normal(size=(2, 14, 16, 3)).astype(np.float32)
    # Image 0 and image 1 each get the border, outside and zero-size cases of ROIS.
    boxes = np.stack([ROIS[:, 1:], ROIS[::-1, 1:]])  # [2, 5, 4]
    flat = np.concatenate([np.repeat([[0.0], [1.0]], 5, axis=0), boxes.reshape(-1, 4)], axis=1)
    ours = np.asarray(roi_align_per_image(features, boxes, 4, scale, ratio, aligned))
    ref = _reference(features, flat, 4, scale, ratio, aligned).reshape(2, 5, 4, 4, 3)
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_per_image_gradient():
    rng = np.random.default_rng(4)
    features = rng.normal(size=(2, 6, 7, 2)).astype(np.float64)
    boxes = np.stack([ROIS[:3, 1:], ROIS[1:4, 1:]]) / 2
    fn = lambda f: roi_align_per_image(f, boxes, 3, 1.0, 2, True)
    check_grads(fn, (features,), order=1, modes=["rev"], atol=1e-2, rtol=1e-2)


def test_multilevel_assigned_level_gathers_equal_the_matrix_form():
    """The "cpu" form pools each box from its own level by gathers; "plain" pools every level
    in the matrix form and selects: same values and gradients, for boxes of every level."""
    import jax

    from jaxdet.ops import roi_align as module

    rng = np.random.default_rng(5)
    pyramid = {lvl: rng.normal(size=(2, 128 // 2**lvl, 120 // 2**lvl, 3)).astype(np.float32) for lvl in (2, 3, 4, 5)}
    xy = rng.uniform(-10, 100, (2, 12, 2))
    sides = np.resize([20.0, 60.0, 150.0, 300.0, 600.0], (2, 12, 1)) * rng.uniform(0.8, 1.2, (2, 12, 2))
    boxes = np.concatenate([xy, xy + sides], -1).astype(np.float32)
    boxes[0, 0] = [30, 30, 30, 30]  # zero size
    assert set(np.asarray(module.fpn_levels(boxes.reshape(-1, 4), 2, 5)).tolist()) == {2, 3, 4, 5}

    def run(form):
        loss = lambda p: jax.numpy.sum(multilevel_roi_align(p, boxes, 7, kernels=form) ** 2)
        return multilevel_roi_align(pyramid, boxes, 7, kernels=form), jax.grad(loss)(pyramid)

    (matrix, g_matrix), (gathered, g_gathered) = run("plain"), run("cpu")
    np.testing.assert_allclose(np.asarray(gathered), np.asarray(matrix), rtol=1e-5, atol=1e-5)
    for lvl in pyramid:
        np.testing.assert_allclose(np.asarray(g_gathered[lvl]), np.asarray(g_matrix[lvl]), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="consecutive pyramid levels"):
        multilevel_roi_align({2: pyramid[2], 4: pyramid[4]}, boxes, 7)
