"""Start-up config checks: bad names and values fail with the valid ones, every shipped
config runs on 1 to 8 devices, and the resume diff."""

import importlib
import os
import subprocess
import sys

import pytest

from experiments.configs import default
from jaxdet import configs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"loss.localization": "gious"}, r"unknown localization loss 'gious'.*valid names: .*'giou'"),
        ({"loss.classification": "focal"}, r"valid names: .*'sigmoid_focal'"),
        (
            {"model.name": "yolo9000"},
            r"unknown detector 'yolo9000'.*valid names: \['faster_rcnn', 'retinanet', 'ssd', 'yolo'\]",
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
        configs.validate(config, num_devices=4)


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
    config = importlib.import_module(f"experiments.configs.{name}").get_config(None)
    for devices in (1, 2, 4, 8):
        configs.validate(config, num_devices=devices)


def test_config_diff_lists_changes():
    a = default.get_config().to_dict()
    b = default.get_config()
    b.model.fpn_channels = 8
    b.optim.learning_rate = 1.0
    lines = configs.diff(a, b.to_dict(), configs.MODEL_SECTIONS)
    assert lines == ["  model.fpn_channels: 64 -> 8"]
