"""YOLOv8 (C2f backbone and PAN, DFL box head, task-aligned assignment) on `jaxdet_shapes`,
for 2 CPU cores.

    python -m experiments.train --config=experiments/configs/yolov8.py --workdir=runs/yolov8

The `n` size (`cspdarknet_n`: ultralytics' width 0.25, depth 0.33) at 128 px; `:s` and
`:m` are the larger sizes at 640 px for a GPU; `:tiny` is a seconds-long variant for
tests. Losses and weights are ultralytics' (BCE 0.5, CIoU 7.5, DFL 1.5 = 7.5 x 0.2).
"""

from experiments.configs import default
from jaxdet.detectors.config import use_detector


def get_config(arg: str | None = None):
    if arg not in (None, "tiny", "s", "m"):
        raise ValueError(f"unknown config variant {arg!r}; valid: 'tiny', 's', 'm' or none (n)")
    config = default.get_config("tiny" if arg == "tiny" else None)
    use_detector(config, "yolov8")
    config.model.backbone = "cspdarknet_n"
    config.loss.classification = "sigmoid_binary_cross_entropy"
    config.loss.localization = "ciou+0.2*distribution_focal"
    config.loss.confidence = "none"
    config.loss.classification_weight = 0.5
    config.loss.localization_weight = 7.5
    if arg in ("s", "m"):
        config.model.backbone = f"cspdarknet_{arg}"
        config.data.image_size = 640
        config.data.max_boxes = 100
        config.model.max_detections = 300
        config.data.mosaic_prob = 1.0
        config.train.batch_size = 64
        config.train.eval_batch_size = 64
        config.train.steps = 100_000
        config.train.eval_every = 5000
        config.train.checkpoint_every = 5000
        config.optim.name, config.optim.learning_rate, config.optim.momentum = "sgd", 0.01, 0.937
        config.optim.weight_decay = 5e-4
        config.optim.warmup_steps = 3000
    if arg == "tiny":
        config.model.backbone = "cspdarknet_tiny"
        config.model.yolov8.reg_max = 8
    return config
