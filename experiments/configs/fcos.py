"""FCOS (anchor-free points, centre sampling, centre-ness) on `jaxdet_shapes`, for 2 CPU cores.

    python -m experiments.train --config=experiments/configs/fcos.py --workdir=runs/fcos

`:tiny` is a seconds-long variant for tests. The recipe is torchvision's (focal loss on
every point, GIoU and centre-ness on the positives, each divided by the positives)
scaled to 128 px images: P3-P5 with 64 channels, 2-conv towers, and each level
regressing objects of 2-4 strides (not 4-8: the objects here are 8-60 px, which 4-8
would put almost all on P3).

`:torchvision` is torchvision's `fcos_resnet50_fpn` exactly, for its converted weights
(`--config.model.detector_weights=fcos_resnet50_fpn.pth`): ResNet-50 with frozen
BatchNorm, FPN P3-P7 (P6, P7 by stride-2 convs on P5), 4-conv GroupNorm towers, points
where its anchors' centres are (offset 0, `point_style="torchvision"`), score threshold
0.2, the top 1000 per level, NMS at 0.6, 800 px square input.
"""

from experiments.configs import default
from jaxdet.detectors.config import use_detector


def get_config(arg: str | None = None):
    if arg not in (None, "tiny", "torchvision"):
        raise ValueError(f"unknown config variant {arg!r}; valid: 'tiny', 'torchvision' or none")
    config = default.get_config("tiny" if arg == "tiny" else None)
    use_detector(config, "fcos")
    f = config.model.fcos
    config.loss.classification = "sigmoid_focal"
    config.loss.localization = "giou"
    config.loss.confidence = "centerness"
    config.loss.localization_weight = 1.0
    f.head_convs = 2
    f.regress_range = (2.0, 4.0)
    if arg == "torchvision":
        _torchvision(config)
    elif arg == "tiny":
        f.head_convs = 1
    return config


def _torchvision(config) -> None:
    m, f = config.model, config.model.fcos
    config.data.image_size = 800
    config.data.max_boxes = 100
    m.backbone, m.backbone_norm, m.neck_channels = "resnet50", "frozen_batch", 256
    m.frozen_stages = 1  # torchvision's trainable_backbone_layers=3 (its default with weights)
    m.min_level, m.max_level, m.neck_extra = 3, 7, "conv"
    m.score_threshold, m.nms_iou_threshold, m.max_detections = 0.2, 0.6, 100
    f.head_convs, f.head_norm, f.point_offset, f.point_style = 4, "group", 0.0, "torchvision"
    f.regress_range = (4.0, 8.0)
    config.optim.name, config.optim.learning_rate, config.optim.momentum = "sgd", 0.01, 0.9
    config.train.batch_size = 16
    config.train.eval_batch_size = 16
