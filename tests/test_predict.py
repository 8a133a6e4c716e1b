"""Prediction on image files: the forward on images alone, and boxes mapped back to each file's pixels."""

import jax
import numpy as np
import pytest

from experiments.configs import default
from jaxdet import optim, train
from jaxdet.models import detectors


@pytest.mark.parametrize("name", ["faster_rcnn"])  # the one that reads targets; retinanet: the end-to-end test
def test_prediction_forward_takes_images_alone(name):
    """What `experiments.predict` runs: the eval forward and post-processing on a batch of
    images with no targets (Faster R-CNN used to sample RoIs from absent boxes: KeyError)."""
    config = default.get_config("tiny")
    config.model.name = name
    if name == "faster_rcnn":
        config.loss.confidence = "sigmoid_binary_cross_entropy"  # its RPN objectness
    det = detectors.build_detector(config, 5)
    tx, _ = optim.make_optimizer(config.optim, config.train.steps)
    state = train.init_state(det, tx, jax.random.key(0), 64, train.make_mesh(jax.devices()[:1]))
    variables = {"params": state.params, "batch_stats": state.batch_stats}
    images = np.zeros((1, 64, 64, 3), np.uint8)
    outputs, _ = train.forward(det, variables, {"image": images}, jax.random.key(0), train=False)
    dets = det.predict(outputs)._asdict()
    assert dets["boxes"].shape[:2] == dets["scores"].shape[:2] == (1, config.model.max_detections)


def test_predict_maps_boxes_back_to_any_image_size(tmp_path):
    """A white square in PNG and JPEG files of other sizes than the model's: preprocessing
    puts it where the scale says, and `to_original` maps model pixels back onto it."""
    from PIL import Image

    from jaxdet import predict

    for (h, w), fmt in (((150, 200), "PNG"), ((160, 90), "JPEG")):
        image = np.zeros((h, w, 3), np.uint8)
        image[30:70, 20:60] = 255  # the known object: x 20..60, y 30..70
        path = str(tmp_path / f"im.{fmt.lower()}")
        Image.fromarray(image).save(path, format=fmt, quality=95)
        loaded = np.asarray(Image.open(path).convert("RGB"))
        x, scale = predict.preprocess(loaded, 64)
        assert x.shape == (64, 64, 3) and scale == pytest.approx(64 / max(h, w))
        ys, xs = np.nonzero(x.mean(-1) > 127)
        model_box = np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32)
        np.testing.assert_allclose(predict.to_original(model_box, scale, h, w)[0], [20, 30, 60, 70], atol=3.5)
        assert np.all(x[round(h * scale) + 1 :] == 0) and np.all(x[:, round(w * scale) + 1 :] == 0)  # padding
