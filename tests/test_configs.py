"""Start-up config checks: bad names and values fail with the valid ones, every shipped
config runs on 1 to 8 devices, and the resume diff."""

import importlib
import json
import os
import re
import subprocess
import sys

import ml_collections
import pytest

from experiments.configs import default
from jaxdet import configs
from jaxdet.detectors import config as model_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"loss.localization": "gious"}, r"unknown localization loss 'gious'.*valid names: .*'giou'"),
        ({"loss.classification": "focal"}, r"valid names: .*'sigmoid_focal'"),
        (
            {"model.name": "yolo9000"},
            r"unknown detector 'yolo9000'.*valid names: \[.*'faster_rcnn'.*'retinanet'.*'yolo'.*\]",
        ),
        ({"model.backbone": "resnet19"}, r"unknown backbone 'resnet19'.*resnet18"),
        ({"optim.name": "lion"}, r"unknown optimizer 'lion'"),
        ({"train.batch_size": 6}, r"batch_size=6 \(global\) is not divisible by the 4 devices"),
    ],
)
def test_bad_config_fails_at_start_up(overrides, message):
    config = default.get_config("tiny")
    config.update_from_flattened_dict(overrides)
    with pytest.raises(ValueError, match=message):
        configs.validate(configs.resolve(config), num_devices=4)


def test_unknown_loss_name_from_the_command_line(tmp_path):
    cmd = [
        sys.executable, "-m", "experiments.train", "--config=experiments/configs/default.py:tiny",
        f"--workdir={tmp_path}", "--config.loss.localization=gious",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "unknown localization loss 'gious'" in proc.stderr and "'ciou'" in proc.stderr
    assert "Traceback" not in proc.stderr  # a message, not a stack


def test_unknown_config_key_from_the_command_line(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "experiments.train",
        "--config=experiments/configs/default.py:tiny",
        f"--workdir={tmp_path}",
        "--config.train.stepz=3",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert "stepz" in proc.stderr


@pytest.mark.parametrize("name", ["default", "yolo", "ssd", "faster_rcnn", "retinanet_r50"])
def test_shipped_configs_run_on_1_2_4_and_8_devices(name):
    """The README's promise: the same command on one device or eight, no batch override."""
    config = configs.resolve(importlib.import_module(f"experiments.configs.{name}").get_config(None))
    for devices in (1, 2, 4, 8):
        configs.validate(config, num_devices=devices)
        assert configs.eval_batch_size(config, devices) % devices == 0


def test_config_diff_lists_changes():
    a = default.get_config().to_dict()
    b = default.get_config()
    b.model.neck_channels = 8
    b.optim.learning_rate = 1.0
    lines = configs.diff(a, b.to_dict(), configs.MODEL_SECTIONS)
    assert lines == ["  model.neck_channels: 64 -> 8"]


def test_eval_batch_is_rounded_up_to_the_devices():
    config = default.get_config()
    config.train.eval_batch_size = 50
    assert [configs.eval_batch_size(config, n) for n in (1, 2, 4, 8, 3)] == [50, 50, 52, 56, 51]


def test_a_run_records_only_its_detectors_section_with_the_loss_implied_fields():
    resolved = configs.resolve(default.get_config())
    model = resolved.model.to_dict()
    assert "retinanet" in model and not {"yolo", "ssd", "faster_rcnn"} & set(model)
    assert model["retinanet"]["background_logit"] is False and model["retinanet"]["quality_branch"] is False
    flat = json.dumps(model)
    for foreign in ("simota_k", "neg_pos_ratio", "rpn_fg_iou", "roi_per_image", "center_radius"):
        assert foreign not in flat
    config = default.get_config()
    config.loss.classification, config.loss.confidence = "softmax_cross_entropy", "iou_binary_cross_entropy"
    section = configs.resolve(config).model.retinanet
    assert section.background_logit and section.quality_branch
    assert configs.resolve(configs.resolve(config)).to_dict() == configs.resolve(config).to_dict()  # idempotent


@pytest.mark.parametrize(
    "overrides, message",
    [
        # A changed field of another detector's section names the detector that reads it.
        ({"model.yolo.simota_k": 5}, r"config.model.yolo.simota_k=5 is read by the yolo detector.*'retinanet'"),
        ({"model.faster_rcnn.fc_dim": 8}, r"read by the faster_rcnn detector"),
    ],
)
def test_a_foreign_field_fails_at_start_up_naming_its_detector(overrides, message):
    config = default.get_config("tiny")
    config.update_from_flattened_dict(overrides)
    with pytest.raises(ValueError, match=message):
        configs.resolve(config)


def test_unknown_and_moved_model_fields_fail_with_where_they_are_now():
    config = default.get_config()
    config.model.simota_k = 5  # the flat layout's name
    with pytest.raises(ValueError, match=r"config.model.simota_k .*moved to config.model.yolo.simota_k"):
        configs.resolve(config)
    config = default.get_config()
    config.model.fpn_channels = 8
    with pytest.raises(ValueError, match=r"fpn_channels was renamed config.model.neck_channels"):
        configs.resolve(config)
    config = default.get_config()
    config.model.retinanet.simota_k = 5
    with pytest.raises(ValueError, match=r"config.model.retinanet.simota_k: retinanet has no such field.*fg_iou"):
        configs.resolve(config)
    config = default.get_config()
    config.model.retinanet.background_logit = True  # follows the loss: contradicting it is refused
    with pytest.raises(ValueError, match=r"background_logit=True contradicts config.loss"):
        configs.resolve(config)


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.simota_k=5", r"config.model.simota_k is no longer a shared field: it moved to config.model.yolo"),
        ("model.retinanet.simota_k=5", r"retinanet has no such field; it is read as config.model.yolo.simota_k"),
        ("model.retinanet.quality_branch=True", r"follows the losses .*set config.loss instead"),
        ("model.backbone.depth=3", r"config.model.backbone is a value, not a section"),
        ("loss.localisation=l1", r"config.loss has no such field; its fields: \[.*'localization'"),
        ("optimm.lr=1", r"config.optimm: the config has no such field; its fields: \[.*'optim'"),
    ],
)
def test_a_command_line_override_of_a_missing_field_names_where_it_is(override, message):
    from experiments import cli

    argv = ["train", "--config=x.py", "--config.train.steps=3", f"--config.{override}"]
    assert re.search(message, cli.missing_override(default.get_config(), argv))
    assert cli.missing_override(default.get_config(), argv[:3]) is None


def test_the_command_line_reports_a_missing_field_without_a_traceback(tmp_path):
    cmd = [sys.executable, "-m", "experiments.train", "--config=experiments/configs/default.py:tiny",
           f"--workdir={tmp_path}", "--config.model.simota_k=5"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "error: config.model.simota_k is no longer a shared field: it moved to config.model.yolo" in proc.stderr


def test_switching_the_detector_by_flag_fills_its_section(tmp_path):
    config = default.get_config()
    config.model.name = "ssd"
    config.model.ssd.neg_pos_ratio = 5
    resolved = configs.resolve(config)
    assert resolved.model.ssd.neg_pos_ratio == 5 and "retinanet" not in resolved.model


def test_resume_across_a_loss_that_changes_the_parameters_is_refused_naming_the_loss(tmp_path):
    config = configs.resolve(default.get_config("tiny"))
    configs.check_and_record(config, str(tmp_path), resuming=False)
    changed = default.get_config("tiny")
    changed.loss.classification = "softmax_cross_entropy"
    with pytest.raises(ValueError, match=r"(?s)background_logit: False -> True.*softmax config.loss.classification"):
        configs.check_and_record(configs.resolve(changed), str(tmp_path), resuming=True)
    kernels_only = default.get_config("tiny")
    kernels_only.model.kernels = "plain"  # how, not what: resumable
    notes = configs.check_and_record(configs.resolve(kernels_only), str(tmp_path), resuming=True)
    assert "  model.kernels: 'auto' -> 'plain'" in notes


def test_a_config_recorded_before_detector_sections_reads_with_its_values(tmp_path):
    """Workdirs written with the flat model section (jaxdet before per-detector sections)."""
    flat = {
        "name": "ssd", "num_classes": 0, "backbone": "resnet_tiny", "backbone_norm": "batch", "head_norm": "group",
        "sync_batch_norm": False, "fpn_channels": 16, "fpn_extra": "conv", "head_convs": 1, "min_level": 3,
        "max_level": 6, "anchor_size": 2.0, "num_scales": 3, "aspect_ratios": [1.0], "anchor_offset": 0.5,
        "fg_iou": 0.45, "bg_iou": 0.4, "box_weights": [10.0, 10.0, 5.0, 5.0], "pre_nms_topk": 100,
        "score_threshold": 0.05, "nms_iou_threshold": 0.5, "max_detections": 20, "center_radius": 2.5,
        "simota_k": 10, "ssd_min_scale": 0.1, "ssd_max_scale": 0.6, "ssd_aspect_ratios": [[1.0, 2.0, 0.5]],
        "neg_pos_ratio": 3, "rpn_fg_iou": 0.7, "fc_dim": 32, "roi_per_image": 16,
    }  # fmt: skip
    recorded = default.get_config("tiny").to_dict()
    recorded["model"] = flat
    recorded["loss"]["classification"] = "softmax_cross_entropy"
    upgraded = configs.resolve(ml_collections.ConfigDict(model_config.upgrade(json.loads(json.dumps(recorded)))))
    m = upgraded.model
    assert (m.neck_channels, m.ssd.iou_threshold, m.ssd.min_scale, m.ssd.box_weights) == (16, 0.45, 0.1, [10, 10, 5, 5])
    assert m.sync_batch_norm is False and m.ssd.background_logit is True and "faster_rcnn" not in m


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"model.retinanet.anchor_style": "torchvision"}, r"'torchvision' .*offset 0; set .*anchor_offset=0"),
        ({"model.retinanet.anchor_style": "detectron"}, r"'detectron'; valid: \('centred', 'torchvision'\)"),
    ],
)
def test_bad_anchor_style_fails_when_the_detector_is_built(overrides, message):
    from jaxdet import detectors

    config = default.get_config("tiny")
    config.update_from_flattened_dict(overrides)
    with pytest.raises(ValueError, match=message):
        detectors.build_detector(config, 5)
