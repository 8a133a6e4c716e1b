"""CenterNet ("Objects as Points") on `jaxdet_shapes`, for 2 CPU cores.

    python -m experiments.train --config=experiments/configs/centernet.py --workdir=runs/centernet

`:tiny` is a seconds-long variant for tests. The paper's losses at output stride 4 (FPN P2,
fed top-down from P3-P5, on ResNet-small): the penalty-reduced focal loss on the class
heatmap (alpha 2 = loss.focal_gamma, beta 4 = loss.heatmap_beta), L1 on the centre offset
and on the size weighted 0.1 (the encoding's size_scale), both divided per coordinate as
the reference (localization_weight 0.5 over the four coordinates' sum); 3x3 max-pool
peaks in place of NMS.
"""

from experiments.configs import default
from jaxdet.detectors.config import use_detector


def get_config(arg: str | None = None):
    if arg not in (None, "tiny"):
        raise ValueError(f"unknown config variant {arg!r}; valid: 'tiny' or none")
    config = default.get_config("tiny" if arg == "tiny" else None)
    use_detector(config, "centernet")
    config.model.min_level, config.model.max_level = 2, 5
    config.loss.classification = "penalty_reduced_focal"
    config.loss.heatmap_beta = 4.0  # the heatmap loss's beta (its alpha is loss.focal_gamma)
    config.loss.localization = "l1"
    config.loss.confidence = "none"
    config.loss.classification_weight = 1.0
    config.loss.localization_weight = 0.5
    if arg == "tiny":
        config.model.centernet.head_channels = 16
    return config
