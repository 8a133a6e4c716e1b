"""Prediction on image files: every detector restored from a workdir (Faster R-CNN's
forward must not need targets), and boxes mapped back to each file's pixels."""

import jax
import numpy as np
import pytest

from experiments.configs import recipe
from jaxdet import detectors, parallel
from jaxdet.training import optim
from jaxdet.training.step import init_state


def _tiny_config(name: str):
    """The detector's own recipe, `:tiny` (experiments/configs/<recipe>.py)."""
    return recipe(name, "tiny")


def test_predict_maps_boxes_back_to_any_image_size(tmp_path):
    """A white square in PNG and JPEG files of other sizes than the model's: preprocessing
    puts it where the scale says, and `to_original` maps model pixels back onto it."""
    from PIL import Image

    from jaxdet.evaluation import predict

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


# The newer detectors restore through the same code (slow: kept out of the 15-minute suite).
_SLOW = ("fcos", "yolov8", "detr")


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) if n in _SLOW else n for n in sorted(detectors.DETECTORS)]
)
def test_predict_restores_every_detector_from_its_workdir(name, tmp_path):
    """`experiments.predict`'s Predictor on a workdir of each detector (config.json,
    classes.json, a checkpoint): restores and detects on an image of another size."""
    import json

    from jaxdet import checkpoints, configs
    from jaxdet.evaluation import predict

    config = configs.resolve(_tiny_config(name))
    workdir = str(tmp_path / name)
    configs.record(config, workdir)
    with open(f"{workdir}/classes.json", "w") as f:
        json.dump([f"c{k}" for k in range(5)], f)
    det = detectors.build_detector(config, 5)
    tx, _ = optim.make_optimizer(config.optim, config.train.steps)
    state = init_state(det, tx, jax.random.key(0), 64, parallel.make_mesh(jax.devices()[:1]))
    ckpts = checkpoints.Checkpoints(f"{workdir}/checkpoints", keep=1, save_every=1)
    ckpts.save(3, state.items(), force=True)
    ckpts.wait()
    ckpts.close()
    predictor = predict.Predictor(workdir)
    dets = predictor(np.full((90, 120, 3), 128, np.uint8))
    assert predictor.step == 3 and dets["boxes"].shape[1:] == (4,) and len(dets["scores"]) == len(dets["classes"])
    assert (
        np.all(dets["boxes"] >= 0)
        and np.all(dets["boxes"][:, [0, 2]] <= 120)
        and np.all(dets["boxes"][:, [1, 3]] <= 90)
    )
