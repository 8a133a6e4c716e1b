"""Box ops against hand-computed values, including degenerate boxes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet import boxes as B

A = np.array([[0.0, 0.0, 2.0, 2.0]])
OVERLAP = np.array([[1.0, 1.0, 3.0, 3.0]])
DISJOINT = np.array([[2.0, 2.0, 3.0, 3.0]])  # vs [0,0,1,1]
UNIT = np.array([[0.0, 0.0, 1.0, 1.0]])
TOUCHING = np.array([[1.0, 0.0, 2.0, 1.0]])  # shares an edge with UNIT
POINT = np.array([[1.0, 1.0, 1.0, 1.0]])  # zero area, inside A


def test_overlapping_boxes_hand_computed():
    # inter 1, union 7, hull 3x3 = 9, centres (1,1) and (2,2): distance^2 2, hull diagonal^2 18.
    iou = 1 / 7
    np.testing.assert_allclose(B.box_iou(A, OVERLAP), [[iou]], rtol=1e-6)
    np.testing.assert_allclose(B.generalized_box_iou(A, OVERLAP), [[iou - 2 / 9]], rtol=1e-6)
    np.testing.assert_allclose(B.distance_box_iou(A, OVERLAP), [[iou - 2 / 18]], rtol=1e-6)
    # Same aspect ratio: CIoU's aspect term vanishes.
    np.testing.assert_allclose(B.complete_box_iou(A, OVERLAP), [[iou - 2 / 18]], rtol=1e-6)


def test_ciou_aspect_term():
    wide = np.array([[0.0, 0.0, 4.0, 2.0]])
    iou = 4 / 8  # inter 2x2 with A, union 8
    v = 4 / np.pi**2 * (np.arctan(2.0) - np.arctan(1.0)) ** 2
    alpha = v / (1 - iou + v + 1e-7)
    dist2, diag2 = 1.0, 16 + 4
    np.testing.assert_allclose(B.complete_box_iou(A, wide), [[iou - dist2 / diag2 - alpha * v]], rtol=1e-5)


def test_disjoint_and_touching():
    np.testing.assert_allclose(B.box_iou(UNIT, DISJOINT), [[0.0]])
    np.testing.assert_allclose(B.generalized_box_iou(UNIT, DISJOINT), [[-7 / 9]], rtol=1e-6)
    np.testing.assert_allclose(B.box_iou(UNIT, TOUCHING), [[0.0]])
    np.testing.assert_allclose(B.generalized_box_iou(UNIT, TOUCHING), [[0.0]], atol=1e-7)


def test_identical_boxes():
    for fn in (B.box_iou, B.generalized_box_iou, B.distance_box_iou, B.complete_box_iou):
        np.testing.assert_allclose(fn(A, A), [[1.0]], rtol=1e-6)


def test_zero_area_boxes_are_finite():
    for fn in (B.box_iou, B.generalized_box_iou, B.distance_box_iou, B.complete_box_iou):
        out = np.asarray(fn(np.concatenate([POINT, A]), np.concatenate([POINT, A])))
        assert np.all(np.isfinite(out)), fn.__name__
        # A point inside a box has zero overlap; two identical points have an empty union -> 0.
        assert out[0, 1] == pytest.approx(0.0, abs=1e-6) or fn is not B.box_iou
    np.testing.assert_allclose(B.box_iou(POINT, POINT), [[0.0]])


@pytest.mark.parametrize("name", ["elementwise_iou", "elementwise_giou", "elementwise_diou", "elementwise_ciou"])
def test_gradients_finite_on_degenerate_pairs(name):
    fn = getattr(B, name)
    pairs = [
        (A, A),
        (POINT, POINT),
        (UNIT, DISJOINT),
        (UNIT, TOUCHING),
        (POINT, A),
        (np.zeros((1, 4)), np.zeros((1, 4))),
    ]
    for a, b in pairs:
        g = jax.grad(lambda x: jnp.sum(fn(x, b)))(jnp.asarray(a, jnp.float32))
        assert np.all(np.isfinite(np.asarray(g))), (name, a, b)


def test_pairwise_shapes_and_symmetry():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 50, (7, 2))
    b1 = np.concatenate([xy, xy + rng.uniform(1, 30, (7, 2))], axis=1)
    b2 = b1[:5] + 3.0
    out = np.asarray(B.box_iou(b1, b2))
    assert out.shape == (7, 5)
    np.testing.assert_allclose(out, np.asarray(B.box_iou(b2, b1)).T, rtol=1e-6)
    assert np.all((out >= 0) & (out <= 1))
    g = np.asarray(B.generalized_box_iou(b1, b2))
    assert np.all(g <= out + 1e-6) and np.all(g >= -1)


def test_format_conversions_roundtrip():
    boxes = np.array([[1.0, 2.0, 5.0, 10.0]])
    c = B.xyxy_to_cxcywh(boxes)
    np.testing.assert_allclose(c, [[3.0, 6.0, 4.0, 8.0]])
    np.testing.assert_allclose(B.cxcywh_to_xyxy(c), boxes)
    np.testing.assert_allclose(B.box_area(boxes), [32.0])
    np.testing.assert_allclose(B.clip_boxes(np.array([[-5.0, 3.0, 20.0, 40.0]]), 30, 10), [[0.0, 3.0, 10.0, 30.0]])
