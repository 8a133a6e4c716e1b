"""Faster R-CNN + FPN (P2-P5) on `jaxdet_shapes`, sized for 2 CPU cores.

    python -m experiments.train --config=experiments/configs/faster_rcnn.py --workdir=runs/faster_rcnn

`:tiny` is a seconds-long variant for tests. The standard recipe's counts (1000
proposals, 512 RoIs per image, 1024-wide FC layers) are the defaults of
`default.py`'s model section; this config lowers them for small images on a CPU.
"""

from experiments.configs import default


def get_config(arg: str | None = None):
    config = default.get_config(arg)
    config.model.name = "faster_rcnn"
    config.model.min_level = 2
    config.model.max_level = 5
    config.model.anchor_size = 4.0  # side = 4 x stride: 16 px on P2 .. 128 px on P5
    config.model.num_scales = 1
    config.model.aspect_ratios = (0.5, 1.0, 2.0)
    config.model.fg_iou = 0.5  # RoI positives
    config.loss.classification = "softmax_cross_entropy"
    config.loss.localization = "smooth_l1"
    config.loss.smooth_l1_beta = 1 / 9
    config.loss.confidence = "sigmoid_binary_cross_entropy"  # RPN objectness
    config.loss.localization_weight = 1.0
    if arg != "tiny":
        config.model.rpn_pre_nms_topk = 300
        config.model.rpn_post_nms_topk = 200
        # <= 8 objects per image: 64 RoIs still hold up to 16 positives, and the RoI head
        # is most of a CPU step, so 64 RoIs x batch 16 sees the most images in 20 minutes.
        config.model.roi_per_image = 64
        config.model.fc_dim = 256
        config.train.batch_size = 16
        config.train.steps = 1500
        config.train.eval_every = 750
        config.train.checkpoint_every = 750
    return config
