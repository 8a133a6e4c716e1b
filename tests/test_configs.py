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
from jaxdet import configs, detectors
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
        ({"train.best_metric": "mAP"}, r"config.train.best_metric='mAP': use one of \('AP'"),
        ({"train.batch_size": 6}, r"batch_size=6 \(global\) is not divisible by the 4 devices"),
    ],
)
def test_bad_config_fails_at_start_up(overrides, message):
    """The checks a run makes before it reads data: the config's, the optimizer's names
    (training), the best-checkpoint metric's name (evaluation)."""
    from jaxdet.evaluation import coco
    from jaxdet.training import optim

    config = default.get_config("tiny")
    config.update_from_flattened_dict(overrides)
    with pytest.raises(ValueError, match=message):
        resolved = configs.resolve(config)
        configs.validate(resolved, num_devices=4)
        optim.check(resolved.optim)
        coco.check_metric(resolved.train.best_metric)


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


SHIPPED = sorted(
    os.path.relpath(os.path.join(d, f), os.path.join(ROOT, "experiments", "configs"))[:-3].replace(os.sep, ".")
    for d, _, files in os.walk(os.path.join(ROOT, "experiments", "configs"))
    for f in files
    if f.endswith(".py") and f != "__init__.py"
)


def test_the_shipped_config_list_is_read_from_the_folder():
    assert {"default", "detr", "ablations.detr_denoising", "ablations.localization_loss"} <= set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_configs_run_on_1_2_4_and_8_devices(name):
    """The README's promise: the same command on one device or eight, no batch override;
    every recipe and ablation config under experiments/configs/ resolves."""
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
    for foreign in ("reg_max", "neg_pos_ratio", "rpn_fg_iou", "roi_per_image", "regress_range"):
        assert foreign not in flat
    config = default.get_config()
    config.loss.classification, config.loss.confidence = "softmax_cross_entropy", "iou_binary_cross_entropy"
    section = configs.resolve(config).model.retinanet
    assert section.background_logit and section.quality_branch
    assert configs.resolve(configs.resolve(config)).to_dict() == configs.resolve(config).to_dict()  # idempotent


@pytest.mark.parametrize(
    "section, field, value, message",
    [
        # A changed field of another detector's section names the detector that reads it.
        ("yolo", "simota_k", 5, r"config.model.yolo.simota_k=5 is read by the yolo detector.*'retinanet'"),
        ("faster_rcnn", "fc_dim", 8, r"read by the faster_rcnn detector"),
    ],
)
def test_a_foreign_section_fails_at_start_up_naming_its_detector(section, field, value, message):
    config = default.get_config("tiny")
    config.model[section] = ml_collections.ConfigDict(detectors.get_definition(section).section())
    config.model[section][field] = value
    with pytest.raises(ValueError, match=message):
        configs.resolve(config)


def test_a_recipe_holds_its_own_detectors_section_only():
    assert {"retinanet"} == set(default.get_config().model) & set(detectors.DETECTORS)
    config = model_config.use_detector(default.get_config("tiny"), "ssd")
    assert {"ssd"} == set(config.model) & set(detectors.DETECTORS) and config.model.backbone == "resnet_tiny"
    assert config.model.ssd.to_dict() == detectors.get_definition("ssd").section()


def test_unknown_model_fields_fail_naming_who_reads_them():
    config = default.get_config()
    config.model.reg_max = 5  # a yolov8 field, not a shared one
    with pytest.raises(
        ValueError, match=r"config.model.reg_max is not a shared field: it is read as config.model.yolov8"
    ):
        configs.resolve(config)
    config = default.get_config()
    config.model.fpn_channels = 8
    with pytest.raises(ValueError, match=r"fpn_channels: no detector reads it; shared fields: \[.*'neck_channels'"):
        configs.resolve(config)
    config = default.get_config()
    config.model.retinanet.reg_max = 5
    with pytest.raises(ValueError, match=r"config.model.retinanet.reg_max: retinanet has no such field.*fg_iou"):
        configs.resolve(config)
    config = default.get_config()
    config.model.retinanet.background_logit = True  # follows the loss: contradicting it is refused
    with pytest.raises(ValueError, match=r"background_logit=True contradicts config.loss"):
        configs.resolve(config)


@pytest.mark.parametrize(
    "override, message",
    [
        ("model.reg_max=5", r"config.model.reg_max is not a shared field: it is read as config.model.yolov8"),
        ("model.ssd.neg_pos_ratio=5", r"config.model.ssd.neg_pos_ratio is read by the ssd detector, but "
         r"config.model.name='retinanet'.*start from a config for ssd"),
        ("model.retinanet.reg_max=5", r"retinanet has no such field; it is read as config.model.yolov8.reg_max"),
        ("model.retinanet.quality_branch=True", r"follows the losses .*set config.loss instead"),
        ("model.backbone.depth=3", r"config.model.backbone is a value, not a section"),
        ("loss.localisation=l1", r"config.loss has no such field; its fields: \[.*'localization'"),
        ("loss.terms.roi_box=giou", r"retinanet has no loss term 'roi_box'; its terms: \['classification'"),
        ("optimm.lr=1", r"config.optimm: the config has no such field; its fields: \[.*'optim'"),
    ],
)  # fmt: skip
def test_a_command_line_override_of_a_missing_field_names_where_it_is(override, message):
    from experiments import cli

    argv = ["train", "--config=x.py", "--config.train.steps=3", f"--config.{override}"]
    assert re.search(message, cli.missing_override(default.get_config(), argv))
    assert cli.missing_override(default.get_config(), argv[:3]) is None


def test_the_command_line_reports_a_missing_field_without_a_traceback(tmp_path):
    cmd = [sys.executable, "-m", "experiments.train", "--config=experiments/configs/default.py:tiny",
           f"--workdir={tmp_path}", "--config.model.reg_max=5"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    assert "error: config.model.reg_max is not a shared field: it is read as config.model.yolov8" in proc.stderr


def test_switching_the_detector_by_flag_fills_its_section(tmp_path):
    config = default.get_config()
    config.model.name = "ssd"
    resolved = configs.resolve(config)
    assert resolved.model.ssd.to_dict() == {**detectors.get_definition("ssd").section(), **_implied(resolved)}
    assert "retinanet" not in resolved.model


def _implied(config) -> dict:
    return {k: config.model.ssd[k] for k in ("background_logit", "quality_branch")}


def test_resume_across_a_loss_that_changes_the_parameters_is_refused_naming_the_loss(tmp_path):
    config = configs.resolve(default.get_config("tiny"))
    configs.record(config, str(tmp_path))
    changed = default.get_config("tiny")
    changed.loss.classification = "softmax_cross_entropy"
    with pytest.raises(ValueError, match=r"(?s)background_logit: False -> True.*softmax config.loss.classification"):
        configs.check_resume(configs.resolve(changed), str(tmp_path), resuming=True)
    kernels_only = default.get_config("tiny")
    kernels_only.model.kernels = "plain"  # how, not what: resumable
    notes = configs.check_resume(configs.resolve(kernels_only), str(tmp_path), resuming=True)
    assert "  model.kernels: 'auto' -> 'plain'" in notes


def test_a_config_recorded_before_detector_sections_is_refused_saying_what_to_do(tmp_path):
    """Workdirs written with the flat model section (jaxdet before per-detector sections,
    development machines only) are refused, not misread."""
    recorded = default.get_config("tiny").to_dict()
    recorded["model"] = {"name": "ssd", "backbone": "resnet_tiny", "fpn_channels": 16, "simota_k": 10}
    with open(tmp_path / "config.json", "w") as f:
        json.dump(recorded, f)
    with pytest.raises(ValueError, match=r"records a flat config.model .*Train again in a new workdir"):
        configs.load_recorded(str(tmp_path))
    with pytest.raises(ValueError, match=r"records a flat config.model"):
        configs.check_resume(configs.resolve(default.get_config("tiny")), str(tmp_path), resuming=True)


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
