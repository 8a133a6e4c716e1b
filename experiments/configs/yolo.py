"""YOLO (YOLOX-style: decoupled head, objectness, SimOTA) on `jaxdet_shapes`, for 2 CPU cores.

    python -m experiments.train --config=experiments/configs/yolo.py --workdir=runs/yolo

`--config=experiments/configs/yolo.py:tiny` is a seconds-long variant for tests.
"""

from experiments.configs import default
from jaxdet.detectors.config import use_detector


def get_config(arg: str | None = None):
    config = default.get_config(arg)
    use_detector(config, "yolo")  # neck "pan", SimOTA: config.model.yolo's defaults
    config.loss.classification = "sigmoid_binary_cross_entropy"
    config.loss.localization = "giou"
    config.loss.confidence = "sigmoid_binary_cross_entropy"  # objectness
    config.loss.localization_weight = 5.0  # YOLOX's IoU-loss weight
    if arg == "tiny":
        config.model.yolo.head_convs = 1
    return config
