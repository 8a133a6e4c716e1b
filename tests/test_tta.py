"""Test-time augmentation (config.eval.tta="hflip"): mirrored detections map back onto the
image, views merge by class-aware NMS, and the TTA eval step is mirror-symmetric: the
detections of a mirrored image are the mirrored detections of the image."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import default
from jaxdet import detectors, parallel, postprocess
from jaxdet.detectors import inference
from jaxdet.errors import ConfigError
from jaxdet.evaluation.session import flip_tta


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
    step = inference.make_eval_step(det, mesh, flip_tta(config))
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
    with pytest.raises(ConfigError, match=r"config.eval.tta='vflip'; valid: '' \(off\) or 'hflip'"):
        flip_tta(config)
