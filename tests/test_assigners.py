"""Max-IoU assignment on crafted cases."""

import jax
import numpy as np

from jaxdet import assigners

ANCHORS = np.array(
    [
        [0.0, 0.0, 10.0, 10.0],  # 0: exactly GT 0
        [5.0, 0.0, 15.0, 10.0],  # 1: IoU 1/3 with GT 0 -> ignore band? (< 0.4 -> negative)
        [2.0, 0.0, 12.0, 10.0],  # 2: IoU 8/12 = 0.667 with GT 0 -> positive
        [50.0, 50.0, 60.0, 60.0],  # 3: far away -> negative
        [100.0, 100.0, 140.0, 140.0],  # 4: best (but weak) anchor of GT 1 -> low-quality positive
        [1.0, 0.0, 11.0, 10.0],  # 5: IoU 9/11 with GT 0 -> positive
        [4.0, 0.0, 14.0, 10.0],  # 6: IoU 6/14 = 0.43 -> ignored (between 0.4 and 0.5)
    ]
)
GT = np.array([[0.0, 0.0, 10.0, 10.0], [100.0, 100.0, 110.0, 110.0], [0.0, 0.0, 10.0, 10.0]])


def test_crafted_assignment():
    mask = np.array([True, True, False])  # GT 2 is padding (a copy of GT 0!).
    a = assigners.max_iou_assign(ANCHORS, GT, mask, 0.5, 0.4, allow_low_quality=True)
    label = np.asarray(a.label)
    np.testing.assert_array_equal(label, [1, 0, 1, 0, 1, 1, -1])
    matched = np.asarray(a.matched)
    assert list(matched[[0, 2, 5]]) == [0, 0, 0]
    assert matched[4] == 1
    np.testing.assert_allclose(a.iou[4], 100 / 1600)
    # Padded ground truth is never matched, even where it is a perfect fit.
    assert not np.any((label == 1) & (matched == 2))


def test_without_low_quality_matches_weak_gt_gets_nothing():
    mask = np.array([True, True, False])
    a = assigners.max_iou_assign(ANCHORS, GT, mask, 0.5, 0.4, allow_low_quality=False)
    assert np.asarray(a.label)[4] == 0


def test_empty_image_all_negative():
    mask = np.zeros(3, bool)
    a = assigners.max_iou_assign(ANCHORS, GT, mask)
    np.testing.assert_array_equal(a.label, 0)
    np.testing.assert_array_equal(a.iou, 0.0)


def test_vmaps_over_batch():
    gts = np.stack([GT, GT])
    masks = np.array([[True, True, False], [False, False, False]])
    fn = jax.vmap(lambda g, m: assigners.max_iou_assign(ANCHORS, g, m))
    a = fn(gts, masks)
    assert a.label.shape == (2, len(ANCHORS))
    assert np.asarray(a.label[1]).max() == 0 and np.asarray(a.label[0]).max() == 1
