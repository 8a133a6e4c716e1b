"""RetinaNet-R50-FPN as in the paper and torchvision's `retinanet_resnet50_fpn`, for a GPU.

    python -m experiments.train --config=experiments/configs/retinanet_r50.py --workdir=runs/r50
    python -m experiments.bench --config=experiments/configs/retinanet_r50.py --image_size=640 --batch=16

ResNet-50 (BatchNorm), FPN P3-P7 with 256 channels, a 4-conv head without norm layers,
9 anchors per position (sides 4 * stride * 2^{0,1/3,2/3}, ratios 1:2, 1:1, 2:1), max-IoU
matching 0.5 / 0.4, focal loss + L1 on encoded offsets, SGD 0.01: torchvision's v1 recipe,
so `experiments.bench --compare=torchvision` compares like with like.

`:torchvision` is torchvision's `retinanet_resnet50_fpn` (v1) exactly, for its converted
weights (`--config.model.detector_weights=retinanet_resnet50_fpn.pth`): frozen BatchNorm
in the backbone and torchvision's own anchors (integer sizes 32, 40, 50 on P3, corners
rounded to integers, centres at offset 0) and post-processing (the top 1000 candidates
per level, boxes clipped to the image before NMS), so that the same weights, images and
targets give torchvision's loss terms, gradients and detections
(tests/test_torchvision_*.py). jaxdet's own recipe keeps centred, unrounded anchors
(offset 0.5: each anchor centred on its feature cell).
"""

from experiments.configs import default


def get_config(arg: str | None = None):
    if arg not in (None, "tiny", "torchvision"):
        raise ValueError(f"unknown config variant {arg!r}; valid: 'tiny', 'torchvision' or none")
    config = default.get_config("tiny" if arg == "tiny" else None)
    config.data.image_size = 640
    config.data.max_boxes = 100
    config.model.name = "retinanet"
    config.model.backbone = "resnet50"
    config.model.neck_channels = 256
    config.model.min_level = 3
    config.model.max_level = 7
    config.model.max_detections = 300
    r = config.model.retinanet
    r.head_norm = "none"
    r.head_convs = 4
    r.anchor_size = 4.0
    r.num_scales = 3
    r.aspect_ratios = (0.5, 1.0, 2.0)
    r.assigner = "max_iou"  # the paper's and torchvision's (fg 0.5 / bg 0.4), not default.py's ATSS
    config.loss.classification = "sigmoid_focal"
    config.loss.localization = "l1"
    config.loss.localization_weight = 1.0
    config.optim.name = "sgd"
    config.optim.learning_rate = 0.01
    config.optim.momentum = 0.9
    config.optim.warmup_steps = 500
    config.train.batch_size = 16
    config.train.eval_batch_size = 16  # 640 px inference; divisible by 1, 2, 4, 8 or 16 GPUs
    config.train.steps = 20000
    config.train.eval_every = 2000
    config.train.checkpoint_every = 2000
    if arg == "torchvision":
        config.model.backbone_norm = "frozen_batch"  # torchvision's FrozenBatchNorm2d
        # torchvision's trainable_backbone_layers=3 (its default with weights): stem and layer1 fixed.
        config.model.frozen_stages = 1
        r.anchor_style = "torchvision"
        r.anchor_offset = 0.0
        r.topk_per_level, r.clip_boxes = True, True  # its postprocess_detections
    if arg == "tiny":
        config.data.image_size = 64
        config.data.max_boxes = 16
        config.model.neck_channels = 16
        r.head_convs = 1
        config.model.max_level = 5
        config.train.batch_size = 8
        config.train.steps = 6
    return config
