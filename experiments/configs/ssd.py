"""SSD on `jaxdet_shapes`: default boxes on 4 maps (strides 8..64), hard negative mining.

    python -m experiments.train --config=experiments/configs/ssd.py --workdir=runs/ssd

Variants (`--config=experiments/configs/ssd.py:VARIANT`):
  tiny    seconds-long, for tests.
  ssd300  the SSD300 layout for a GPU: 300x300 images, 6 maps (38, 19, 10, 5, 3, 2),
          ResNet-50 body, scales 0.1..0.9, ratios {1, 2, 1/2} (+{3, 1/3} on the middle maps).
"""

from experiments.configs import default
from jaxdet.detectors.config import use_detector


def get_config(arg: str | None = None):
    config = default.get_config(None if arg == "ssd300" else arg)
    use_detector(config, "ssd")  # neck "ssd_extras", box_weights (10, 10, 5, 5): config.model.ssd's defaults
    config.model.min_level = 3
    config.model.max_level = 6
    config.model.neck_channels = 128  # channels of the extra (stride-2) layers
    config.loss.classification = "softmax_cross_entropy"
    config.loss.localization = "smooth_l1"
    config.loss.smooth_l1_beta = 1.0
    config.loss.localization_weight = 1.0
    if arg == "tiny":
        config.model.neck_channels = 16
    if arg == "ssd300":
        config.data.image_size = 300
        config.model.backbone = "resnet50"
        config.model.max_level = 8
        config.model.neck_channels = 256
        config.model.ssd.min_scale = 0.1
        config.model.ssd.max_scale = 0.9
        wide = (1.0, 2.0, 0.5, 3.0, 1 / 3)
        config.model.ssd.aspect_ratios = ((1.0, 2.0, 0.5), wide, wide, wide, (1.0, 2.0, 0.5), (1.0, 2.0, 0.5))
        config.train.batch_size = 32
    return config
