"""NMS (both kernel forms) on crafted cases and against a reference greedy implementation;
select_detections."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jaxdet import postprocess
from jaxdet.data.synthetic import clustered_boxes
from jaxdet.ops import nms as nms_ops

FORMS = pytest.mark.parametrize("form", ["cpu", "plain"])  # sequential, blocked
# Jitted with the static arguments: one compilation per shape and threshold, not per call.
_nms = jax.jit(nms_ops.nms, static_argnums=(2, 3, 4))
_batched_nms = jax.jit(nms_ops.batched_nms, static_argnums=(4, 5, 6))
_grouped_nms = jax.jit(nms_ops.grouped_nms, static_argnums=(3, 4, 5))


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


@FORMS
def test_crafted_overlaps(form):
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 10.5]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.95], np.float32)
    kept = np.asarray(nms_ops.nms(boxes, scores, 0.5, 4, form))
    # Box 3 (0.95) suppresses 0 (IoU 0.95) and 1 (IoU ~0.67); 2 is disjoint.
    np.testing.assert_array_equal(kept, [3, 2, -1, -1])
    # A threshold above every overlap keeps all, in score order.
    np.testing.assert_array_equal(nms_ops.nms(boxes, scores, 0.99, 4, form), [3, 0, 1, 2])
    # Truncation to max_output_size keeps the best.
    np.testing.assert_array_equal(nms_ops.nms(boxes, scores, 0.99, 2, form), [3, 0])


@FORMS
def test_iou_equal_to_threshold_is_not_suppressed(form):
    boxes = np.array([[0, 0, 2, 1], [1, 0, 3, 1]], np.float32)  # IoU exactly 1/3
    kept = np.asarray(nms_ops.nms(boxes, np.array([1.0, 0.5]), 1 / 3 + 1e-7, 2, form))
    np.testing.assert_array_equal(kept, [0, 1])


@settings(max_examples=30, deadline=None)
# A few sizes only: each new shape is a new compilation.
@given(st.sampled_from([1, 7, 40]), st.sampled_from([0.1, 0.3, 0.5, 0.7, 0.9]), st.integers(0, 10_000))
def test_matches_reference(n, thr, seed):
    """Both forms (one block here; test_blocked_form_is_the_sequential_result crosses blocks)."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 50, (n, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + rng.uniform(1, 30, (n, 2)).astype(np.float32)], axis=1)
    scores = rng.permutation(n).astype(np.float32) / n  # distinct scores: the order is unambiguous
    ref = _ref_nms(boxes, scores, thr)
    for form in ("cpu", "plain"):
        out = np.asarray(_nms(boxes, scores, thr, n, form))
        assert list(out[: len(ref)]) == ref, form
        assert np.all(out[len(ref) :] == -1)


@FORMS
def test_batched_nms_is_class_aware_and_respects_valid(form):
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10], [50, 50, 60, 60]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.6], np.float32)
    classes = np.array([0, 1, 0, 0])
    valid = np.array([True, True, True, False])
    kept = np.asarray(nms_ops.batched_nms(boxes, scores, classes, valid, 0.5, 4, form))
    np.testing.assert_array_equal(kept, [0, 1, -1, -1])


@pytest.mark.parametrize("n, block", [(100, 16), (97, 32), (50, 50), (30, 64)])
def test_blocked_form_is_the_sequential_result(n, block):
    """Block edges anywhere in a chain of overlaps, a last partial block, one block."""
    rng = np.random.default_rng(n)
    boxes = jnp.asarray(clustered_boxes(rng, (n,), 200.0))
    valid = jnp.asarray(rng.uniform(size=n) < 0.9)
    for thr in (0.3, 0.5, 0.7):
        seq = nms_ops._keep_sequential(boxes, valid, thr)
        blocked = nms_ops._keep_blocked(boxes, valid, thr, block)
        np.testing.assert_array_equal(blocked, seq)
        assert 1 < int(seq.sum()) < int(valid.sum())  # suppression happened, not everything


@FORMS
def test_grouped_nms_is_batched_nms_with_the_group_as_class(form):
    """Per-group NMS, merged by score, padded groups and an output longer than the boxes."""
    rng = np.random.default_rng(0)
    g, k = 3, 40
    boxes = clustered_boxes(rng, (g, k), 200.0)
    scores = rng.normal(size=(g, k)).astype(np.float32)
    valid = rng.uniform(size=(g, k)) < 0.9
    valid[2, 25:] = False  # a shorter group, padded
    scores[2, 25:] = -np.inf
    groups = np.repeat(np.arange(g), k)
    for size in (10, 60, g * k + 5):
        want = _batched_nms(boxes.reshape(-1, 4), scores.reshape(-1), groups, valid.reshape(-1), 0.5, size)
        got = _grouped_nms(boxes, scores, valid, 0.5, size, form)
        np.testing.assert_array_equal(got, want)
    assert set(np.asarray(got)[np.asarray(got) >= 0] // k) == {0, 1, 2}


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
