"""NMS on crafted cases and against a reference greedy implementation."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxdet import postprocess


def _ref_nms(boxes, scores, thr):
    """torchvision.ops.nms semantics in numpy: greedy by score, suppress IoU > thr."""
    order = np.argsort(-scores, kind="stable")
    keep = []
    for i in order:
        ok = True
        for j in keep:
            b1, b2 = boxes[i], boxes[j]
            iw = max(0.0, min(b1[2], b2[2]) - max(b1[0], b2[0]))
            ih = max(0.0, min(b1[3], b2[3]) - max(b1[1], b2[1]))
            inter = iw * ih
            union = (b1[2] - b1[0]) * (b1[3] - b1[1]) + (b2[2] - b2[0]) * (b2[3] - b2[1]) - inter
            if union > 0 and inter / union > thr:
                ok = False
                break
        if ok:
            keep.append(int(i))
    return keep


def test_crafted_overlaps():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10.5]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.95], np.float32)
    kept = np.asarray(postprocess.nms(boxes, scores, 0.5, 4))
    # Box 3 (0.95) suppresses 0 (IoU 0.95) and 1 (IoU ~0.67); 2 is disjoint.
    np.testing.assert_array_equal(kept, [3, 2, -1, -1])
    # A threshold above every overlap keeps all, in score order.
    np.testing.assert_array_equal(postprocess.nms(boxes, scores, 0.99, 4), [3, 0, 1, 2])
    # Truncation to max_output_size keeps the best.
    np.testing.assert_array_equal(postprocess.nms(boxes, scores, 0.99, 2), [3, 0])


def test_iou_equal_to_threshold_is_not_suppressed():
    boxes = np.array([[0, 0, 2, 1], [1, 0, 3, 1]], np.float32)  # IoU exactly 1/3
    kept = np.asarray(postprocess.nms(boxes, np.array([1.0, 0.5]), 1 / 3 + 1e-7, 2))
    np.testing.assert_array_equal(kept, [0, 1])


@settings(max_examples=30, deadline=None)
# A few sizes only: each new shape is a new compilation.
@given(st.sampled_from([1, 7, 40]), st.sampled_from([0.1, 0.3, 0.5, 0.7, 0.9]), st.integers(0, 10_000))
def test_matches_reference(n, thr, seed):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 50, (n, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + rng.uniform(1, 30, (n, 2)).astype(np.float32)], axis=1)
    scores = rng.permutation(n).astype(np.float32) / n  # distinct scores: the order is unambiguous
    ref = _ref_nms(boxes, scores, thr)
    out = np.asarray(postprocess.nms(boxes, scores, thr, n))
    assert list(out[: len(ref)]) == ref
    assert np.all(out[len(ref) :] == -1)


def test_batched_nms_is_class_aware_and_respects_valid():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    classes = np.array([0, 1, 0, 0])
    valid = np.array([True, True, True, False])
    kept = np.asarray(postprocess.batched_nms(boxes, scores, classes, valid, 0.5, 4))
    np.testing.assert_array_equal(kept, [0, 1, -1, -1])


def test_select_detections_static_shapes():
    scores = np.zeros((6, 3), np.float32)
    scores[0, 1] = 0.9
    scores[1, 1] = 0.8  # overlaps anchor 0 -> suppressed
    scores[2, 2] = 0.7
    boxes = np.array(
        [[0, 0, 10, 10], [0, 0, 10, 11], [30, 30, 40, 40], [0, 0, 1, 1], [0, 0, 1, 1], [0, 0, 1, 1]], np.float32
    )
    d = postprocess.select_detections(
        scores, boxes, pre_nms_topk=10, score_threshold=0.05, iou_threshold=0.5, max_detections=5
    )
    assert d.boxes.shape == (5, 4) and d.valid.shape == (5,)
    np.testing.assert_array_equal(d.valid, [True, True, False, False, False])
    np.testing.assert_array_equal(d.classes[:2], [1, 2])
    np.testing.assert_allclose(d.scores[:2], [0.9, 0.7])
    np.testing.assert_allclose(d.boxes[1], [30, 30, 40, 40])


def test_select_detections_top_k_per_level():
    """With level_sizes the top-k is taken in each level (torchvision's RetinaNet): a level
    of lower scores keeps its candidates, which a top-k over all levels drops."""
    scores = np.zeros((6, 1), np.float32)
    scores[:3, 0] = [0.9, 0.8, 0.7]  # level 0: anchors 0-2
    scores[3:, 0] = [0.3, 0.2, 0.1]  # level 1: anchors 3-5
    boxes = np.array([[20 * i, 0, 20 * i + 10, 10] for i in range(6)], np.float32)  # disjoint: no suppression
    kwargs = dict(pre_nms_topk=2, score_threshold=0.05, iou_threshold=0.5, max_detections=6)
    overall = postprocess.select_detections(scores, boxes, **kwargs)
    per_level = postprocess.select_detections(scores, boxes, level_sizes=(3, 3), **kwargs)
    np.testing.assert_allclose(np.asarray(overall.scores)[np.asarray(overall.valid)], [0.9, 0.8])
    np.testing.assert_allclose(np.asarray(per_level.scores)[np.asarray(per_level.valid)], [0.9, 0.8, 0.3, 0.2])
    with pytest.raises(ValueError, match="sum to 5, not the 6 anchors"):
        postprocess.select_detections(scores, boxes, level_sizes=(3, 2), **kwargs)
