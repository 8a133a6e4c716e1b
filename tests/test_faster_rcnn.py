"""Faster R-CNN pieces: balanced sampling counts, RoI sampling never uses padding, proposals."""

import cv2
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import faster_rcnn
from jaxdet import assigners, detectors, parallel
from jaxdet.detectors import inference
from jaxdet.training.step import init_key, init_state, make_train_step, shard_train_step


@pytest.mark.parametrize(
    "num_pos, num_neg, expect_pos, expect_neg",
    [(10, 1000, 10, 246), (200, 1000, 128, 128), (0, 1000, 0, 256), (300, 50, 128, 50)],
)
def test_balanced_sampling_counts(num_pos, num_neg, expect_pos, expect_neg):
    n = 2000
    pos = np.zeros(n, bool)
    neg = np.zeros(n, bool)
    pos[:num_pos] = True
    neg[num_pos : num_pos + num_neg] = True
    p, q = assigners.sample_balanced(jax.random.key(0), pos, neg, 256, 0.5)
    assert int(p.sum()) == expect_pos and int(q.sum()) == expect_neg
    assert not np.any(np.asarray(p) & ~pos) and not np.any(np.asarray(q) & ~neg)
    # Different keys draw different subsets when there is a choice.
    p2, _ = assigners.sample_balanced(jax.random.key(1), pos, neg, 256, 0.5)
    if num_pos > expect_pos:
        assert not np.array_equal(np.asarray(p), np.asarray(p2))


def _outputs(batch, train_mode=True):
    config = faster_rcnn.get_config("tiny")
    config.data.image_size = 64
    det = detectors.build_detector(config, 5)
    key = jax.random.key(0)
    variables = det.module.init({"params": key, "sampling": key}, jnp.zeros((1, 64, 64, 3)), train=False)
    fn = jax.jit(lambda v, b: inference.forward(det, v, b, jax.random.key(1), train=train_mode)[0])
    return det, fn(variables, {k: jnp.asarray(v) for k, v in batch.items()}), config


def test_rois_never_come_from_padded_ground_truth():
    marker = np.array([7.0, 9.0, 41.0, 57.0], np.float32)  # a padded box nothing else will produce
    boxes = np.tile(np.array([[4.0, 4.0, 30.0, 30.0], marker, marker], np.float32), (2, 1, 1))
    mask = np.array([[True, False, False], [False, False, False]])  # image 2 is empty
    batch = {
        "image": np.random.default_rng(0).uniform(0, 255, (2, 64, 64, 3)).astype(np.float32),
        "boxes": boxes,
        "labels": np.array([[2, 1, 1], [1, 1, 1]], np.int32),
        "box_mask": mask,
        "image_mask": np.ones(2, bool),
    }
    det, out, config = _outputs(batch)
    rois = np.asarray(out["roi_boxes"])
    sampled = np.asarray(out["roi_sampled"])
    assert rois.shape == (2, config.model.faster_rcnn.roi_per_image, 4)
    assert not np.any(np.all(np.isclose(rois[sampled], marker), axis=-1))
    positive = np.asarray(out["roi_positive"])
    assert positive[0].any()  # the real box is appended to the proposals, so it is sampled as positive
    assert not positive[1].any()  # the empty image has only background RoIs
    np.testing.assert_array_equal(np.asarray(out["roi_labels"])[1][sampled[1]], 5)
    # Positives are at most a quarter of the RoIs; background labels are num_classes.
    assert positive[0].sum() <= config.model.faster_rcnn.roi_per_image * config.model.faster_rcnn.roi_positive_fraction
    # Proposals: fixed count, clipped to the image, padding marked invalid.
    props, valid = np.asarray(out["proposals"]), np.asarray(out["proposal_valid"])
    assert props.shape == (2, config.model.faster_rcnn.rpn_post_nms_topk, 4)
    assert props.min() >= 0 and props.max() <= 64
    assert np.all(props[~valid] == 0)


def test_eval_path_detects_from_all_proposals():
    batch = {
        "image": np.zeros((1, 64, 64, 3), np.float32),
        "boxes": np.zeros((1, 2, 4), np.float32),
        "labels": np.zeros((1, 2), np.int32),
        "box_mask": np.zeros((1, 2), bool),
        "image_mask": np.ones(1, bool),
    }
    det, out, config = _outputs(batch, train_mode=False)
    assert out["det_cls_logits"].shape[:2] == (1, config.model.faster_rcnn.rpn_post_nms_topk)
    d = det.predict(out)
    assert d.boxes.shape == (1, config.model.max_detections, 4)


def test_train_step_compiles_once_over_real_object_counts():
    """Batches from the input pipeline, over images holding 0, 1, 3 and 12 objects (more than
    max_boxes = 8: truncated), reuse one compiled step. The pipeline pads every batch to
    the same shapes; a change that sized a batch by its real object count would retrace,
    which the counter does catch (shown at the end)."""
    import chex

    from jaxdet.data import pipeline, readers
    from jaxdet.training import optim

    config = faster_rcnn.get_config("tiny")
    config.data.max_boxes = 8
    rng = np.random.default_rng(0)
    counts = [0, 1, 3, 12, 0, 0, 1, 3]  # two batches of four: different counts in each
    images, boxes, labels = [], [], []
    for n in counts:
        xy = rng.uniform(0, 40, (n, 2))
        boxes.append(np.concatenate([xy, xy + rng.uniform(8, 24, (n, 2))], 1).astype(np.float32))
        labels.append(rng.integers(0, 5, n).astype(np.int32))
        images.append(rng.integers(0, 255, (64, 64, 3), np.uint8))
    encoded = [cv2.imencode(".png", im)[1].tobytes() for im in images]
    source = readers.memory_source(encoded, boxes, labels, [f"c{k}" for k in range(5)])
    stream = pipeline.Pipeline(source, 64, config.data.max_boxes, 0, False).train(4, 0, hflip=False)
    batches = [next(stream) for _ in range(2)]
    stream.close()
    per_image = [n for b in batches for n in b["box_mask"].sum(1).tolist()]
    assert sorted(per_image) == [0, 0, 0, 1, 1, 3, 3, 8]  # one epoch: every image once, 12 truncated to 8
    assert {tuple((k, v.shape) for k, v in sorted(b.items())) for b in batches}.__len__() == 1  # one layout

    det = detectors.build_detector(config, 5, parallel.AXIS)
    tx, lr = optim.make_optimizer(config.optim, 10)
    mesh = parallel.make_mesh(jax.devices()[:1])
    state = init_state(det, tx, init_key(0), 64, mesh)
    traced = chex.assert_max_traces(make_train_step(det, tx, lr), n=1)
    step = shard_train_step(traced, mesh)
    losses = []
    for batch in batches + batches:
        state, metrics = step(state, parallel.global_batch(mesh, pipeline.model_inputs(batch)), jax.random.key(0))
        losses.append(float(metrics["loss"]))
    assert np.all(np.isfinite(losses)) and int(state.step) == 4
    # The counter is live: a batch sized by its real object count (here 3) would compile again.
    trimmed = {k: (v[:, :3] if k in ("boxes", "labels", "box_mask") else v) for k, v in batches[0].items()}
    with pytest.raises(AssertionError, match="traced"):
        step(state, parallel.global_batch(mesh, pipeline.model_inputs(trimmed)), jax.random.key(0))
