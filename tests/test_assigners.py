"""Max-IoU assignment on crafted cases."""

import jax
import numpy as np

from jaxdet import assigners
from jaxdet.losses import ciou_loss

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


def _points(size=64, stride=8):
    from jaxdet import anchors

    return anchors.point_grid(size, [3])  # stride 8: 8x8 points at (i + 0.5) * 8


def test_simota_assigns_points_near_the_box_and_never_padding():
    points, strides = _points()
    gt = np.array([[16.0, 16.0, 40.0, 40.0], [0.0, 0.0, 64.0, 64.0]], np.float32)
    mask = np.array([True, False])  # the second (image-wide) box is padding
    labels = np.array([2, 0])
    # Predictions equal to the ground truth where the point is inside it: IoU 1 there.
    inside = (points[:, 0] > 16) & (points[:, 0] < 40) & (points[:, 1] > 16) & (points[:, 1] < 40)
    pred = np.where(inside[:, None], gt[0], np.array([0.0, 0.0, 4.0, 4.0], np.float32))
    scores = np.full((len(points), 3), 0.1, np.float32)
    a = assigners.simota_assign(points, strides, pred, scores, gt, labels, mask)
    pos = np.asarray(a.label) == assigners.POSITIVE
    # dynamic k = floor(sum of the 10 best IoUs) = 9 (9 points inside, each IoU 1): exactly those.
    assert pos.sum() == 9
    np.testing.assert_array_equal(pos, inside)
    assert np.all(np.asarray(a.matched)[pos] == 0)
    np.testing.assert_allclose(np.asarray(a.iou)[pos], 1.0, rtol=1e-6)


def test_simota_empty_image_all_negative_and_one_anchor_one_gt():
    points, strides = _points()
    gt = np.array([[10.0, 10.0, 30.0, 30.0], [12.0, 12.0, 32.0, 32.0]], np.float32)
    pred = np.tile(np.array([[10.0, 10.0, 31.0, 31.0]], np.float32), (len(points), 1))
    scores = np.full((len(points), 2), 0.5, np.float32)
    empty = assigners.simota_assign(points, strides, pred, scores, gt, np.array([0, 1]), np.zeros(2, bool))
    assert np.all(np.asarray(empty.label) == assigners.NEGATIVE)
    both = assigners.simota_assign(points, strides, pred, scores, gt, np.array([0, 1]), np.ones(2, bool))
    pos = np.asarray(both.label) == assigners.POSITIVE
    assert pos.sum() >= 2 and set(np.asarray(both.matched)[pos]) == {0, 1}


def test_hard_negative_mask_selects_exactly_the_hardest():
    losses = np.array([0.1, 5.0, 0.3, 2.0, 9.0, 0.2, 4.0, 1.0])
    negatives = np.array([True, True, True, True, False, True, True, True])  # index 4 is positive
    mask = np.asarray(assigners.hard_negative_mask(losses, negatives, 3))
    assert mask.sum() == 3
    np.testing.assert_array_equal(np.nonzero(mask)[0], [1, 3, 6])  # losses 5, 2, 4; never the positive
    # Asking for more than there are negatives gives all of them.
    assert np.asarray(assigners.hard_negative_mask(losses, negatives, 100)).sum() == negatives.sum()
    assert np.asarray(assigners.hard_negative_mask(losses, negatives, 0)).sum() == 0


def test_top_k_mask_with_a_static_bound_is_the_sorted_selection():
    """k_max (a top-k instead of a full sort) selects what the sort does: ties by lower
    index, fewer candidates than k, k = 0, and a k traced under jit."""
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 20, 500).astype(np.float32)  # many ties
    mask = rng.uniform(size=500) < 0.3
    both = jax.jit(lambda k: (assigners.top_k_mask(scores, mask, k), assigners.top_k_mask(scores, mask, k, 64)))
    for k in (0, 1, 17, 64):
        full, bounded = both(k)
        np.testing.assert_array_equal(bounded, full)
        assert int(full.sum()) == k and not np.any(np.asarray(full) & ~mask)
    few = np.zeros(500, bool)
    few[[3, 99, 400]] = True
    np.testing.assert_array_equal(assigners.top_k_mask(scores, few, 64, 64), few)


def test_ssd_default_boxes():
    from jaxdet import anchors

    shapes = anchors.ssd_box_shapes(2, 0.2, 0.6, [(1.0, 2.0), (1.0,)])
    assert [len(s) for s in shapes] == [3, 2]  # ratios + the extra sqrt(s_k s_k+1) square
    w, h = shapes[0][1]
    np.testing.assert_allclose([w, h], [0.2 * np.sqrt(2), 0.2 / np.sqrt(2)])
    np.testing.assert_allclose(shapes[0][2], [np.sqrt(0.2 * 0.6)] * 2)
    boxes = anchors.ssd_default_boxes(64, [4, 5], shapes)
    assert boxes.shape == (4 * 4 * 3 + 2 * 2 * 2, 4)
    assert boxes.min() >= 0 and boxes.max() <= 64
    np.testing.assert_allclose(boxes[0], [8 - 6.4, 8 - 6.4, 8 + 6.4, 8 + 6.4], rtol=1e-5)


def _grid(n=10, step=2.0):
    """Points of an n x n grid (xy), `step` px apart, starting at step / 2."""
    c = (np.arange(n) + 0.5) * step
    return np.stack(np.meshgrid(c, c, indexing="xy"), -1).reshape(-1, 2).astype(np.float32)


def _boxes_around(points, half):
    return np.concatenate([points - half, points + half], -1).astype(np.float32)


def test_task_aligned_takes_the_top_k_by_alignment_inside_the_box():
    points = _grid()  # 100 points in [0, 20]^2
    gt = np.array([[2.0, 2.0, 12.0, 12.0], [0.0, 0.0, 20.0, 20.0]], np.float32)
    mask = np.array([True, False])  # the second box (covering everything) is padding
    rng = np.random.default_rng(0)
    scores = rng.uniform(0.05, 1.0, (100, 3)).astype(np.float32)
    pred = _boxes_around(points, 5.0) + rng.normal(0, 0.5, (100, 4)).astype(np.float32)
    a = assigners.task_aligned_assign(points, pred, scores, gt, np.array([1, 0]), mask, topk=4)
    inside = np.asarray(assigners.matching._inside(points, gt[:1]))[:, 0]
    u = np.clip(1 - np.asarray(ciou_loss(gt[:1], pred)), 0, None)
    t = np.where(inside, scores[:, 1] ** 0.5 * u**6, 0.0)
    expected = np.sort(np.argsort(-t)[:4])
    np.testing.assert_array_equal(np.flatnonzero(np.asarray(a.label) == assigners.POSITIVE), expected)
    assert inside[expected].all() and not (np.asarray(a.matched)[expected] != 0).any()
    # Soft targets: t / max t * the largest overlap among the box's positives.
    np.testing.assert_allclose(np.asarray(a.iou)[expected], t[expected] / t.max() * u[expected].max(), rtol=1e-4)
    assert np.asarray(a.iou)[np.asarray(a.label) != assigners.POSITIVE].max() == 0


def test_task_aligned_point_claimed_twice_keeps_the_box_it_overlaps_most():
    points = np.array([[5.0, 5.0], [7.0, 5.0]], np.float32)
    gt = np.array([[0.0, 0.0, 10.0, 10.0], [4.0, 0.0, 14.0, 10.0]], np.float32)
    pred = np.array([[4.0, 0.0, 14.0, 10.0], [0.5, 0.0, 10.5, 10.0]], np.float32)  # each near the "other" box
    scores = np.full((2, 2), 0.5, np.float32)
    a = assigners.task_aligned_assign(points, pred, scores, gt, np.array([0, 1]), np.array([True, True]), topk=2)
    np.testing.assert_array_equal(a.label, [1, 1])
    np.testing.assert_array_equal(a.matched, [1, 0])  # by overlap, not by index or distance


def test_task_aligned_empty_image_all_negative_and_finite():
    points = _grid(4)
    pred = _boxes_around(points, 1.0)
    scores = np.full((16, 2), 0.5, np.float32)
    for m in (3, 0):  # all padding; no ground-truth slots at all
        gt, mask = np.zeros((m, 4), np.float32), np.zeros(m, bool)
        a = assigners.task_aligned_assign(points, pred, scores, gt, np.zeros(m, int), mask)
        assert (np.asarray(a.label) == assigners.NEGATIVE).all() and np.isfinite(np.asarray(a.iou)).all()


def test_fcos_targets_centre_sampling_size_ranges_and_smallest_box():
    # Two levels: strides 4 (regresses max side distance < 16) and 8 (> 16).
    p4, p8 = _grid(8, 4.0), _grid(4, 8.0)
    points = np.concatenate([p4, p8])
    strides = np.r_[np.full(64, 4.0), np.full(16, 8.0)].astype(np.float32)
    lower = np.r_[np.zeros(64), np.full(16, 16.0)].astype(np.float32)
    upper = np.r_[np.full(64, 16.0), np.full(16, np.inf)].astype(np.float32)
    small = [8.0, 8.0, 20.0, 20.0]  # centre (14, 14), sides 12: level 1
    large = [0.0, 0.0, 32.0, 32.0]  # centre (16, 16), sides 32: level 2
    gt = np.array([small, large, large], np.float32)
    mask = np.array([True, True, False])
    a = assigners.fcos_assign(points, strides, gt, mask, lower, upper, center_radius=1.5)
    label, matched = np.asarray(a.label), np.asarray(a.matched)
    for i, ((x, y), s) in enumerate(zip(points, strides)):
        cands = []
        for j, b in enumerate(gt[:2]):
            d = [x - b[0], y - b[1], b[2] - x, b[3] - y]
            cx, cy = (b[0] + b[2]) / 2, (b[1] + b[3]) / 2
            if min(d) > 0 and max(abs(x - cx), abs(y - cy)) < 1.5 * s and lower[i] < max(d) < upper[i]:
                cands.append(((b[2] - b[0]) * (b[3] - b[1]), j))
        assert label[i] == (assigners.POSITIVE if cands else assigners.NEGATIVE), (i, x, y)
        if cands:
            assert matched[i] == min(cands)[1]
    assert (label[:64] == 1).sum() > 0 and (label[64:] == 1).sum() > 0  # both levels take a box
    assert not (matched[label == 1] == 2).any()  # padding never
