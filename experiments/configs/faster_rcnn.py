"""Faster R-CNN + FPN (P2-P5) on `jaxdet_shapes`, sized for 2 CPU cores.

    python -m experiments.train --config=experiments/configs/faster_rcnn.py --workdir=runs/faster_rcnn

`:tiny` is a seconds-long variant for tests. The standard recipe (anchors 4 x stride
with ratios 1:2, 1:1, 2:1; 1000 proposals, 512 RoIs per image, 1024-wide FC layers) is
config.model.faster_rcnn's defaults; this config lowers the counts for small images on a CPU.
"""

from experiments.configs import default
from jaxdet.detectors.config import use_detector


def get_config(arg: str | None = None):
    config = default.get_config(arg)
    use_detector(config, "faster_rcnn")
    config.model.min_level = 2
    config.model.max_level = 5
    f = config.model.faster_rcnn
    config.loss.classification = "softmax_cross_entropy"
    config.loss.localization = "smooth_l1"
    config.loss.smooth_l1_beta = 1 / 9
    config.loss.confidence = "sigmoid_binary_cross_entropy"  # RPN objectness
    config.loss.localization_weight = 1.0
    if arg == "tiny":
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
