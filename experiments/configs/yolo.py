"""YOLO (YOLOX-style: decoupled head, objectness, SimOTA) on `jaxdet_shapes`, for 2 CPU cores.

    python -m experiments.train --config=experiments/configs/yolo.py --workdir=runs/yolo

`--config=experiments/configs/yolo.py:tiny` is a seconds-long variant for tests.
"""

from experiments.configs import default


def get_config(arg: str | None = None):
    config = default.get_config(arg)
    config.model.name = "yolo"
    config.loss.classification = "sigmoid_binary_cross_entropy"
    config.loss.localization = "giou"
    config.loss.confidence = "sigmoid_binary_cross_entropy"  # objectness
    config.loss.localization_weight = 5.0  # YOLOX's IoU-loss weight
    return config
