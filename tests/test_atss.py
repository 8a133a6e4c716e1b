"""ATSS (jaxdet.assigners.atss) against the paper's procedure written out here in NumPy,
loop by loop: random scenes, distance ties, padded and empty ground truth."""

import jax
import numpy as np
import pytest

from jaxdet.assigners import NEGATIVE, POSITIVE
from jaxdet.assigners.atss import atss_assign


def _iou(a, b):
    lt, rb = np.maximum(a[:2], b[:2]), np.minimum(a[2:], b[2:])
    inter = np.prod(np.clip(rb - lt, 0, None))
    union = np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter
    return inter / union


def _reference(anchors, level_sizes, gts, topk=9, reverse_ties=False):
    """Zhang et al. 2020, Algorithm 1 (mmdetection's ATSSAssigner: sample std, centre inside by 0.01)."""
    n = len(anchors)
    centers = (anchors[:, :2] + anchors[:, 2:]) / 2
    best_iou, matched = np.full(n, -1.0), np.zeros(n, int)
    for g, gt in enumerate(gts):
        c = (gt[:2] + gt[2:]) / 2
        candidates, start = [], 0
        for size in level_sizes:
            d = np.sqrt(((centers[start : start + size] - c) ** 2).sum(1))
            order = np.argsort(d, kind="stable") if not reverse_ties else size - 1 - np.argsort(d[::-1], kind="stable")
            candidates += list(start + order[: min(topk, size)])
            start += size
        ious = np.array([_iou(anchors[i], gt) for i in candidates])
        threshold = ious.mean() + (ious.std(ddof=1) if len(ious) > 1 else 0.0)
        for i, u in zip(candidates, ious):
            x, y = centers[i]
            inside = min(x - gt[0], y - gt[1], gt[2] - x, gt[3] - y) > 0.01
            if u >= threshold and inside and u > best_iou[i]:  # (strictly: the first box keeps a tie)
                best_iou[i], matched[i] = u, g
    positive = best_iou >= 0
    return positive, matched, np.where(positive, best_iou, 0.0)


def _grid(size, stride):
    c = (np.arange(size) + 0.5) * stride
    x, y = np.meshgrid(c, c)
    half = 4 * stride / 2
    return np.stack([x.ravel() - half, y.ravel() - half, x.ravel() + half, y.ravel() + half], 1)


def _check(anchors, level_sizes, gts, mask):
    got = jax.jit(atss_assign, static_argnums=(1, 4))(anchors, tuple(level_sizes), gts, mask, 9)
    positive, matched, iou = _reference(anchors, level_sizes, gts[mask])
    real = np.flatnonzero(mask)
    np.testing.assert_array_equal(np.asarray(got.label), np.where(positive, POSITIVE, NEGATIVE))
    np.testing.assert_array_equal(np.asarray(got.matched)[positive], real[matched[positive]])
    np.testing.assert_allclose(np.asarray(got.iou), iou, rtol=1e-5, atol=1e-6)
    return positive


@pytest.mark.parametrize("seed", range(5))
def test_atss_equals_the_papers_procedure_on_random_scenes(seed):
    rng = np.random.default_rng(seed)
    levels = [_grid(16, 8), _grid(8, 16), _grid(4, 32)]
    anchors = np.concatenate(levels).astype(np.float32)
    m = 6
    xy = rng.uniform(0, 100, (m, 2))
    gts = np.concatenate([xy, xy + rng.uniform(8, 60, (m, 2))], 1).astype(np.float32)
    mask = np.array([True, True, True, True, False, True])  # one padded box
    positive = _check(anchors, [len(x) for x in levels], gts, mask)
    assert positive.sum() >= 3  # (the scenes do assign)


def test_distance_ties_keep_the_lower_anchor_index():
    # Centre (24, 24) on a stride-8 grid: 4 anchors at one distance, then 8 tied at the next;
    # topk=9 takes 5 of those 8, so the tie-break decides which anchors are candidates and
    # so which are positive (the reference with the other tie-break gives other positives).
    anchors = _grid(8, 8).astype(np.float32)
    gts = np.array([[-4, -4, 52, 52]], np.float32)
    lower_first = _check(anchors, [64], gts, np.ones(1, bool))
    assert not np.array_equal(lower_first, _reference(anchors, [64], gts, reverse_ties=True)[0])


def test_an_image_without_boxes_is_all_negative():
    anchors = _grid(4, 8).astype(np.float32)
    for m in (3, 0):  # padded boxes only; no boxes at all
        got = atss_assign(anchors, (16,), np.zeros((m, 4), np.float32), np.zeros(m, bool))
        assert (np.asarray(got.label) == NEGATIVE).all() and (np.asarray(got.iou) == 0).all()


@pytest.mark.slow  # ATSS is RetinaNet's default: every default-suite RetinaNet run trains with it
def test_retinanet_trains_with_atss_targets_by_flag():
    """`model.retinanet.assigner=atss`: RetinaNet's targets are ATSS's on its anchors, level
    by level; the loss is finite and falls under gradient steps; other names are refused."""
    import jax.numpy as jnp
    from test_yolov8 import head_outputs, loss_history

    from experiments.configs import default
    from jaxdet import detectors
    from jaxdet.errors import ConfigError

    config = default.get_config("tiny")
    config.model.retinanet.assigner = "atss"
    config.data.image_size = 32
    det = detectors.build_detector(config, 3)
    batch = {
        "boxes": jnp.array([[[2.0, 2.0, 20.0, 18.0], [8.0, 4.0, 30.0, 30.0]]]),
        "labels": jnp.array([[1, 2]]),
        "box_mask": jnp.array([[True, True]]),
        "image_mask": jnp.array([True]),
    }
    sizes, topk = det.assigner.priors.level_sizes, dict(det.assigner.fields)["atss_topk"]
    direct = atss_assign(jnp.asarray(det.anchors), sizes, batch["boxes"][0], batch["box_mask"][0], topk)
    targets = det.assign(batch)
    np.testing.assert_array_equal(np.asarray(targets.positive[0]), np.asarray(direct.label) == POSITIVE)
    assert int(np.asarray(targets.positive).sum()) > 0
    history = loss_history(det, batch, head_outputs(det, 32), 3)
    assert np.all(np.isfinite(history)) and history[-1] < history[0], history
    config.model.retinanet.assigner = "atts"
    with pytest.raises(
        ConfigError, match=r"assigner='atts'; valid: \['atss', 'fcos', 'max_iou', 'simota', 'task_aligned'\]"
    ):
        detectors.build_detector(config, 3)
