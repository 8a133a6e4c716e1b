"""YOLOv8's architecture against ultralytics' published sizes, its box decoding, odd image
sizes, and the task-aligned assigner as a RetinaNet option."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import default, yolov8
from jaxdet import detectors
from jaxdet.detectors.config import use_detector


@pytest.mark.parametrize("size, ultralytics", [(None, 3_157_200), ("s", 11_166_560), ("m", 25_902_640)])
def test_yolov8_sizes_have_ultralytics_parameter_counts(size, ultralytics):
    """80 classes: ultralytics' model summaries (yolov8n/s/m.yaml) count 16 more, its DFL
    layer's fixed bin-value conv (jaxdet takes the expectation with a constant)."""
    config = yolov8.get_config(size)
    det = detectors.build_detector(config, 80)
    s = config.data.image_size
    shapes = jax.eval_shape(lambda: det.module.init({"params": jax.random.key(0)}, jnp.zeros((1, s, s, 3))))
    assert sum(x.size for x in jax.tree_util.tree_leaves(shapes["params"])) == ultralytics - 16


def test_yolov8_decodes_the_expected_distance_and_runs_at_odd_sizes():
    config = yolov8.get_config("tiny")
    config.data.image_size = 100  # P3-P5: 13, 7, 4 cells; the neck's upsampling is cropped
    det = detectors.build_detector(config, 3)
    images = jnp.zeros((2, 100, 100, 3))
    variables = det.module.init({"params": jax.random.key(0)}, images)
    out = det.module.apply(variables, images)
    assert out["box_dist"].shape == (2, 13 * 13 + 7 * 7 + 4 * 4, 4, 8) == (2, len(det.points), 4, 8)
    # All mass on bin 3 of every side: a box 3 strides from its point on each side.
    dist = jnp.full(out["box_dist"].shape, -1e4).at[..., 3].set(0.0)
    boxes = np.asarray(det.decode(det.distances(dist)))[0]
    expected = np.concatenate([det.points - 3 * det.strides[:, None], det.points + 3 * det.strides[:, None]], 1)
    np.testing.assert_allclose(boxes, expected, atol=1e-4)
    # encode is decode's inverse inside the bins' range, and clips beyond it.
    gt = np.broadcast_to(np.array([10.0, 20.0, 40.0, 50.0], np.float32), boxes.shape)
    enc = np.asarray(det.encode(jnp.asarray(gt)))
    assert enc.min() >= 0 and enc.max() <= 8 - 1.01
    inside = (enc > 0).all(1) & (enc < 6.99).all(1)
    np.testing.assert_allclose(np.asarray(det.decode(jnp.asarray(enc)))[inside], gt[inside], atol=1e-3)
    dets = det.predict(out)
    assert dets.boxes.shape == (2, config.model.max_detections, 4)


def test_retinanet_with_the_task_aligned_assigner():
    """`model.retinanet.assigner=task_aligned`: soft targets from the predictions, positives
    only inside boxes, a finite loss whose gradient steps on the head outputs lower it."""
    config = default.get_config("tiny")
    use_detector(config, "retinanet")
    config.model.retinanet.assigner = "task_aligned"
    config.data.image_size = 32
    det = detectors.build_detector(config, 3)
    batch = {
        "boxes": jnp.array([[[2.0, 2.0, 20.0, 18.0], [0.0, 0.0, 0.0, 0.0]]]),
        "labels": jnp.array([[1, 0]]),
        "box_mask": jnp.array([[True, False]]),
        "image_mask": jnp.array([True]),
    }
    outputs = head_outputs(det, 32)
    t = det.assign(batch, outputs)
    centers = 0.5 * (det.anchors[:, :2] + det.anchors[:, 2:])
    pos = np.asarray(t.positive[0])
    assert 0 < pos.sum() <= config.model.retinanet.tal_topk
    assert ((centers[pos] > [2, 2]) & (centers[pos] < [20, 18])).all()
    assert np.asarray(t.quality[0])[pos].max() > 0 and np.asarray(t.quality[0])[~pos].max() == 0
    history = loss_history(det, batch, outputs, 5)
    assert np.all(np.isfinite(history)) and min(history[1:]) < history[0], history


def head_outputs(det, size: int) -> dict:
    """The head outputs of a freshly initialised `det` on one random size x size image."""
    variables = det.module.init({"params": jax.random.key(0)}, jnp.zeros((1, size, size, 3)))
    return det.module.apply(variables, jnp.asarray(np.random.default_rng(0).uniform(0, 1, (1, size, size, 3))))


def loss_history(det, batch: dict, outputs: dict, steps: int) -> list[float]:
    """The loss before and after each of `steps` gradient steps (0.1) on the head outputs themselves."""
    loss = jax.jit(lambda o: det.loss_fn(o, batch, jax.random.key(0))[0])
    grad = jax.jit(jax.grad(lambda o: det.loss_fn(o, batch, jax.random.key(0))[0]))
    history = [float(loss(outputs))]
    for _ in range(steps):
        g = grad(outputs)
        outputs = {k: v - 0.1 * g[k] for k, v in outputs.items()}
        history.append(float(loss(outputs)))
    return history
