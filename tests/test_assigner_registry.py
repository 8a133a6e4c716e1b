"""The assigner table (jaxdet/assigners/registry.py): every dense detector takes every assigner
whose inputs it has, refuses the others naming what is missing, and trains with it."""

import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import default, fcos, ssd, yolo, yolov8
from jaxdet import detectors
from jaxdet.assigners import POSITIVE
from jaxdet.assigners import registry as assigner_registry
from jaxdet.assigners.atss import atss_assign
from jaxdet.errors import ConfigError
from tests.test_yolov8 import head_outputs, loss_history

RECIPES = {"retinanet": default, "ssd": ssd, "fcos": fcos, "yolo": yolo, "yolov8": yolov8}
# What each detector cannot feed: only FCOS has per-level size ranges.
REFUSED = {(name, "fcos") for name in RECIPES if name != "fcos"}
SIZE = 64
BATCH = {
    "boxes": jnp.array([[[4.0, 6.0, 30.0, 28.0], [20.0, 16.0, 60.0, 58.0], [0.0, 0.0, 0.0, 0.0]]]),
    "labels": jnp.array([[1, 2, 0]]),
    "box_mask": jnp.array([[True, True, False]]),
    "image_mask": jnp.array([True]),
}


def config_for(detector: str, assigner: str):
    config = RECIPES[detector].get_config("tiny")
    config.data.image_size = SIZE
    config.model[detector].assigner = assigner
    return config


@pytest.mark.parametrize("detector", sorted(RECIPES))
def test_every_dense_detector_takes_the_assigners_it_can_feed_and_refuses_the_others(detector):
    for assigner in assigner_registry.TABLE:
        config = config_for(detector, assigner)
        if (detector, assigner) in REFUSED:
            takes = [a for a in assigner_registry.TABLE if (detector, a) not in REFUSED]
            message = (
                rf"config.model.{detector}.assigner='fcos' needs a box-size range per pyramid level "
                rf"\(FCOS's regress_range\), which {detector} does not have; {detector} takes {takes}"
            ).replace("[", r"\[")
            with pytest.raises(ConfigError, match=message):
                detectors.build_detector(config, 3)
        else:
            det = detectors.build_detector(config, 3)
            assert det.assigner.name == assigner and det.assigner.soft == (assigner == "task_aligned")
    config = config_for(detector, "hungarian")
    with pytest.raises(ConfigError, match=rf"config.model.{detector}.assigner='hungarian'; valid: \['atss', "):
        detectors.build_detector(config, 3)


@pytest.mark.parametrize(
    "detector, assigner",
    [
        pytest.param("fcos", "atss", marks=pytest.mark.slow),
        ("yolo", "task_aligned"),
        pytest.param("yolov8", "simota", marks=pytest.mark.slow),
        ("yolov8", "max_iou"),
        ("ssd", "atss"),
        ("retinanet", "simota"),
    ],
)  # (the slow ones: ATSS and SimOTA are swapped in under other detectors in the default suite)
def test_a_swapped_assigner_finds_positives_and_its_loss_descends(detector, assigner):
    det = detectors.build_detector(config_for(detector, assigner), 3)
    outputs = head_outputs(det, SIZE)
    targets = det.assign(BATCH, outputs)
    positive = np.asarray(targets.positive[0])
    assert positive.sum() > 0
    # Positives take only real boxes' labels (never the padded third box's).
    assert set(np.asarray(targets.labels[0])[positive].tolist()) <= {1, 2}
    history = loss_history(det, BATCH, outputs, 3)
    assert np.all(np.isfinite(history)) and history[-1] < history[0], history


def test_atss_on_a_point_detector_uses_squares_of_prior_scale_strides():
    """ATSS's FCOS: one square prior of 8 strides per point."""
    config = config_for("fcos", "atss")
    config.model.fcos.prior_scale = 8.0
    det = detectors.build_detector(config, 3)
    priors = det.assigner.priors
    sides = priors.boxes[:, 2:] - priors.boxes[:, :2]
    np.testing.assert_allclose(sides, 8.0 * np.stack([priors.strides] * 2, axis=1))
    np.testing.assert_allclose(0.5 * (priors.boxes[:, :2] + priors.boxes[:, 2:]), det.points, atol=1e-5)
    direct = atss_assign(jnp.asarray(priors.boxes), priors.level_sizes, BATCH["boxes"][0], BATCH["box_mask"][0], 9)
    targets = det.assign(BATCH, head_outputs(det, SIZE))
    np.testing.assert_array_equal(np.asarray(targets.positive[0]), np.asarray(direct.label) == POSITIVE)


def test_the_default_assigners_are_the_detectors_own():
    # RetinaNet's section default is ATSS since its ablation (docs/ablations/retinanet_assigner);
    # the others keep their authors' rule.
    names = {d: detectors.build_detector(RECIPES[d].get_config("tiny"), 3).assigner.name for d in RECIPES}
    assert names == {"retinanet": "atss", "ssd": "max_iou", "fcos": "fcos", "yolo": "simota",
                     "yolov8": "task_aligned"}  # fmt: skip


def test_assigner_fields_are_checked_naming_the_field():
    config = config_for("yolov8", "atss")
    config.model.yolov8.atss_topk = 0
    with pytest.raises(ConfigError, match=r"config.model.yolov8.atss_topk=0; the atss assigner needs at least 1"):
        detectors.build_detector(config, 3)
    config = config_for("retinanet", "max_iou")
    config.model.retinanet.bg_iou = 0.6
    with pytest.raises(ConfigError, match=r"fg_iou=0.5, bg_iou=0.6; need 0 <= bg_iou <= fg_iou <= 1"):
        detectors.build_detector(config, 3)
