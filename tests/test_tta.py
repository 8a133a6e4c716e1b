"""Test-time augmentation (config.eval.tta="hflip", eval.tta_sizes, eval.tta_merge): mirrored
and resized views map back onto the image, views merge by class-aware NMS or weighted box
fusion, and the TTA eval step is mirror-symmetric: the detections of a mirrored image are
the mirrored detections of the image."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import default
from jaxdet import detectors, parallel, postprocess
from jaxdet.detectors import inference
from jaxdet.errors import ConfigError
from jaxdet.evaluation.session import tta


def _dets(boxes, scores, classes):
    boxes = jnp.asarray(boxes, jnp.float32)[None]
    scores = jnp.asarray(scores, jnp.float32)[None]
    return postprocess.Detections(boxes, scores, jnp.asarray(classes, jnp.int32)[None], scores > 0)


def test_hflip_maps_boxes_back_and_merge_keeps_the_best_of_each_cluster():
    flipped = postprocess.hflip(_dets([[10, 5, 30, 25], [0, 0, 0, 0]], [0.9, 0.0], [1, 0]), 100.0)
    np.testing.assert_array_equal(np.asarray(flipped.boxes[0]), [[70, 5, 90, 25], [0, 0, 0, 0]])
    a = _dets([[10, 10, 50, 50], [60, 60, 90, 90]], [0.8, 0.6], [0, 1])
    b = _dets([[11, 10, 51, 50], [10, 10, 50, 50]], [0.9, 0.7], [0, 2])  # same object, class 0; another class
    merged = postprocess.merge([a, b], iou_threshold=0.5, max_detections=3)
    got = sorted(zip(np.asarray(merged.scores[0]).tolist(), np.asarray(merged.classes[0]).tolist()), reverse=True)
    assert got == [(pytest.approx(0.9), 0), (pytest.approx(0.7), 2), (pytest.approx(0.6), 1)]
    assert bool(merged.valid[0].all())
    np.testing.assert_allclose(np.asarray(merged.boxes[0][0]), [11, 10, 51, 50])


def test_the_tta_eval_step_is_mirror_symmetric():
    config = default.get_config("tiny")
    config.eval.tta = "hflip"
    config.model.score_threshold = 0.0
    det = detectors.build_detector(config, 3)
    mesh = parallel.make_mesh(jax.devices()[:1])
    step = inference.make_eval_step(det, mesh, tta(config, 3, mesh))
    size = config.data.image_size
    variables = jax.device_get(det.module.init({"params": jax.random.key(0)}, jnp.zeros((1, size, size, 3))))
    image = np.random.default_rng(0).uniform(0, 255, (1, size, size, 3)).astype(np.float32)
    batch = {"boxes": np.zeros((1, 2, 4), np.float32), "labels": np.zeros((1, 2), np.int32),
             "box_mask": np.zeros((1, 2), bool), "image_mask": np.ones(1, bool)}  # fmt: skip
    plain, _ = step(variables, parallel.global_batch(mesh, {**batch, "image": image}))
    mirror, _ = step(variables, parallel.global_batch(mesh, {**batch, "image": image[:, :, ::-1].copy()}))
    back = postprocess.hflip(postprocess.Detections(**mirror), float(size))
    plain = postprocess.Detections(**plain)
    assert int(plain.valid.sum()) > 3

    def as_set(d):
        rows = np.concatenate([np.asarray(d.scores)[0, :, None], np.asarray(d.classes)[0, :, None],
                               np.asarray(d.boxes)[0]], axis=1)[np.asarray(d.valid)[0]]  # fmt: skip
        return rows[np.lexsort(rows.T[::-1])]

    np.testing.assert_allclose(as_set(plain), as_set(back), atol=1e-3)
    # Each TTA detection is one of the image's own or one of the mirrored image's mapped
    # back (by the unit-tested hflip), and both views contribute.
    alone = inference.make_eval_step(det, mesh)
    own = as_set(postprocess.Detections(**alone(variables, parallel.global_batch(mesh, {**batch, "image": image}))[0]))
    flipped_only = alone(variables, parallel.global_batch(mesh, {**batch, "image": image[:, :, ::-1].copy()}))[0]
    mapped = as_set(postprocess.hflip(postprocess.Detections(**flipped_only), float(size)))
    found = [(np.abs(own - row).max(1).min() < 1e-3, np.abs(mapped - row).max(1).min() < 1e-3) for row in as_set(plain)]
    assert all(a or b for a, b in found)
    assert any(a and not b for a, b in found) and any(b and not a for a, b in found)


def test_an_unknown_tta_is_refused():
    config = default.get_config("tiny")
    config.eval.tta = "vflip"
    mesh = parallel.make_mesh(jax.devices()[:1])
    with pytest.raises(ConfigError, match=r"config.eval.tta='vflip'; valid: '' \(off\) or 'hflip'"):
        tta(config, 3, mesh)
    config.eval.tta, config.eval.tta_merge = "hflip", "mean"
    with pytest.raises(ConfigError, match=r"config.eval.tta_merge='mean'; valid: \('nms', 'wbf'\)"):
        tta(config, 3, mesh)
    config.eval.tta_merge, config.eval.tta_sizes = "wbf", (64, 80)
    with pytest.raises(ConfigError, match=r"config.eval.tta_sizes=\(64, 80\): each size must be a multiple of the"):
        tta(config, 3, mesh)
    config.eval.tta, config.eval.tta_sizes = "", (64,)  # the evaluation size itself adds no view
    assert tta(config, 3, mesh) is None


def _wbf_reference(views, iou_threshold):
    """Weighted box fusion as jaxdet documents it, in NumPy: greedy class-aware NMS in score
    order gives the clusters' leaders; every box joins the first leader of its class (by score)
    it overlaps by more than the threshold; fused box = score-weighted mean, score = sum of
    scores / max(members, views)."""
    rows = [(float(s), int(c), np.asarray(b, float)) for v in views for b, s, c, ok in
            zip(v.boxes[0], v.scores[0], v.classes[0], v.valid[0]) if ok]  # fmt: skip
    rows.sort(key=lambda r: -r[0])

    def iou(a, b):
        w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
        h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
        inter = w * h
        return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)

    leaders = []
    for s, c, b in rows:
        if all(c != lc or iou(b, lb) <= iou_threshold for _, lc, lb in leaders):
            leaders.append((s, c, b))
    members = {i: [] for i in range(len(leaders))}
    for s, c, b in rows:
        first = next(i for i, (_, lc, lb) in enumerate(leaders) if lc == c and iou(b, lb) > iou_threshold)
        members[first].append((s, b))
    fused = []
    for i, (_, lc, _) in enumerate(leaders):
        total = sum(s for s, _ in members[i])
        box = sum(s * b for s, b in members[i]) / total
        fused.append((total / max(len(members[i]), len(views)), lc, box))
    return sorted(fused, key=lambda r: -r[0])


def test_weighted_box_fusion_by_hand_and_against_a_numpy_reference():
    a = _dets([[10, 10, 50, 50], [60, 60, 90, 90]], [0.8, 0.6], [0, 1])
    b = _dets([[12, 10, 52, 50], [0, 0, 0, 0]], [0.6, 0.0], [0, 0])
    merged = postprocess.merge([a, b], iou_threshold=0.5, max_detections=4, method="wbf")
    assert np.asarray(merged.valid[0]).tolist() == [True, True, False, False]
    np.testing.assert_allclose(np.asarray(merged.scores[0][:2]), [(0.8 + 0.6) / 2, 0.6 / 2], rtol=1e-6)
    np.testing.assert_allclose(
        np.asarray(merged.boxes[0][0]), [(0.8 * 10 + 0.6 * 12) / 1.4, 10, (0.8 * 50 + 0.6 * 52) / 1.4, 50], rtol=1e-6
    )
    rng = np.random.default_rng(0)
    for trial in range(5):
        views = []
        for _ in range(3):  # three views of 12 boxes jittered around 5 objects of 2 classes
            centre = rng.uniform(20, 80, (5, 2))[rng.integers(0, 5, 12)] + rng.normal(0, 3, (12, 2))
            half = rng.uniform(8, 14, (12, 2))
            boxes = np.concatenate([centre - half, centre + half], axis=1)
            views.append(_dets(boxes, rng.uniform(0.1, 1.0, 12), rng.integers(0, 2, 12)))
        got = postprocess.merge(views, iou_threshold=0.55, max_detections=36, method="wbf")
        want = _wbf_reference(views, 0.55)
        n = int(np.asarray(got.valid[0]).sum())
        assert n == len(want), trial
        np.testing.assert_allclose(np.asarray(got.scores[0][:n]), [w[0] for w in want], rtol=1e-5)
        np.testing.assert_array_equal(np.asarray(got.classes[0][:n]), [w[1] for w in want])
        np.testing.assert_allclose(np.asarray(got.boxes[0][:n]), np.stack([w[2] for w in want]), rtol=1e-5, atol=1e-4)


def test_a_resized_view_maps_back_onto_the_evaluation_canvas():
    """eval.tta_sizes=(128,) on a 64 px canvas: every TTA detection is the plain view's or the
    128 px view's (its own detector on the resized image) halved, and both contribute."""
    config = default.get_config("tiny")
    config.eval.tta_sizes = (128,)
    config.model.score_threshold = 0.0
    mesh = parallel.make_mesh(jax.devices()[:1])
    spec = tta(config, 3, mesh)
    det = detectors.build_detector(config, 3)
    assert not spec.flip and [s for s, _ in spec.sizes] == [128]
    variables = jax.device_get(det.module.init({"params": jax.random.key(0)}, jnp.zeros((1, 64, 64, 3))))
    image = np.random.default_rng(1).uniform(0, 255, (1, 64, 64, 3)).astype(np.float32)
    batch = {"image": image, "boxes": np.zeros((1, 2, 4), np.float32), "labels": np.zeros((1, 2), np.int32),
             "box_mask": np.zeros((1, 2), bool), "image_mask": np.ones(1, bool)}  # fmt: skip
    merged = postprocess.Detections(
        **inference.make_eval_step(det, mesh, spec)(variables, parallel.global_batch(mesh, batch))[0]
    )
    plain = postprocess.Detections(
        **inference.make_eval_step(det, mesh)(variables, parallel.global_batch(mesh, batch))[0]
    )
    big_det = spec.sizes[0][1]
    big_image = jax.image.resize(jnp.asarray(image), (1, 128, 128, 3), "linear")
    big = big_det.predict(inference.forward(big_det, variables, {"image": big_image}, jax.random.key(0), False)[0])
    halved = postprocess.rescale(big, 0.5)

    def rows(d):
        ok = np.asarray(d.valid)[0]
        return np.concatenate([np.asarray(d.scores)[0, :, None], np.asarray(d.boxes)[0]], axis=1)[ok]

    own, small = rows(plain), rows(halved)
    found = [(np.abs(own - r).max(1).min() < 1e-3, np.abs(small - r).max(1).min() < 1e-3) for r in rows(merged)]
    assert found and all(a or b for a, b in found)
    assert any(a and not b for a, b in found) and any(b and not a for a, b in found)
