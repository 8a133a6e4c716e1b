"""Faster R-CNN + FPN (P2-P5) on `jaxdet_shapes`, sized for 2 CPU cores.

    python -m experiments.train --config=experiments/configs/faster_rcnn.py --workdir=runs/faster_rcnn

`:tiny` is a seconds-long variant for tests. The standard recipe (anchors 4 x stride
with ratios 1:2, 1:1, 2:1; 1000 proposals, 512 RoIs per image, 1024-wide FC layers) is
config.model.faster_rcnn's defaults; this config lowers the counts for small images on a CPU.

`:torchvision` is torchvision's `fasterrcnn_resnet50_fpn` (v1) exactly, for its converted
weights (`--config.model.detector_weights=fasterrcnn_resnet50_fpn.pth`): ResNet-50 with
frozen BatchNorm, FPN P2-P6 (P6 pooled), torchvision's anchors (32 px on P2 .. 512 on P6,
integer corners, offset 0), its RPN and RoI-head counts at evaluation (1000 proposals per
level before NMS, 1000 after), RoIAlign without the half-pixel shift, 800 px square input
(what torchvision's transform makes of a square image).
"""

from experiments.configs import default
from jaxdet.detectors.config import use_detector


def get_config(arg: str | None = None):
    if arg not in (None, "tiny", "torchvision"):
        raise ValueError(f"unknown config variant {arg!r}; valid: 'tiny', 'torchvision' or none")
    config = default.get_config("tiny" if arg == "tiny" else None)
    use_detector(config, "faster_rcnn")
    config.model.min_level = 2
    config.model.max_level = 5
    f = config.model.faster_rcnn
    config.loss.classification = "softmax_cross_entropy"
    config.loss.localization = "smooth_l1"
    config.loss.smooth_l1_beta = 1 / 9
    config.loss.confidence = "sigmoid_binary_cross_entropy"  # RPN objectness
    config.loss.localization_weight = 1.0
    if arg == "torchvision":
        _torchvision(config)
    elif arg == "tiny":
        f.rpn_pre_nms_topk, f.rpn_post_nms_topk, f.roi_per_image, f.fc_dim = 50, 20, 16, 32
    else:
        f.rpn_pre_nms_topk = 300
        f.rpn_post_nms_topk = 200
        # <= 8 objects per image: 64 RoIs still hold up to 16 positives, and the RoI head
        # is most of a CPU step, so 64 RoIs x batch 16 sees the most images in 20 minutes.
        f.roi_per_image = 64
        f.fc_dim = 256
        config.train.batch_size = 16
        config.train.steps = 1500
        config.train.eval_every = 750
        config.train.checkpoint_every = 750
    return config


def _torchvision(config) -> None:
    """torchvision's fasterrcnn_resnet50_fpn: the counts are config.model.faster_rcnn's
    defaults (torchvision's evaluation values) except the anchors and the pooler."""
    m, f = config.model, config.model.faster_rcnn
    config.data.image_size = 800
    config.data.max_boxes = 100
    m.backbone, m.backbone_norm, m.neck_channels = "resnet50", "frozen_batch", 256
    m.frozen_stages = 1  # torchvision's trainable_backbone_layers=3 (its default with weights)
    m.min_level, m.max_level, m.neck_extra = 2, 6, "pool"
    m.max_detections = 100
    f.anchor_size, f.anchor_offset, f.anchor_style = 8.0, 0.0, "torchvision"  # 32 px on P2
    f.roi_aligned = False  # torchvision's MultiScaleRoIAlign: aligned=False
    config.optim.name, config.optim.learning_rate, config.optim.momentum = "sgd", 0.02, 0.9
    config.train.batch_size = 16
    config.train.eval_batch_size = 16
