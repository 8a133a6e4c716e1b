"""DETR family (RT-DETR-style: query selection from the encoder, iterative box refinement,
auxiliary losses, no NMS) on `jaxdet_shapes`, for 2 CPU cores.

    python -m experiments.train --config=experiments/configs/detr.py --workdir=runs/detr

ResNet-small + FPN P3-P5 (64 channels), one encoder layer on P5, 3 decoder layers, 50
queries (the images hold at most 8 objects), no denoising queries. Losses: focal
classification (weight 2), 5 x L1 + 2 x GIoU on the matched boxes; the same costs
match. `:tiny` is for tests.
"""

from experiments.configs import default
from jaxdet.detectors.config import use_detector


def get_config(arg: str | None = None):
    if arg not in (None, "tiny"):
        raise ValueError(f"unknown config variant {arg!r}; valid: 'tiny' or none")
    config = default.get_config(arg)
    use_detector(config, "detr")
    d = config.model.detr
    d.num_queries = 50
    # d.denoising = 1 adds a group of denoising queries (8 positive + 8 negative noised boxes
    # per image): +10% step time; its effect at 1500 steps is in docs/ablations/detr_denoising.
    config.data.max_boxes = 8  # the dataset's most objects in an image (jaxdet.data.shapes.MAX_OBJECTS)
    config.loss.classification = "sigmoid_focal"
    config.loss.localization = "5*l1+2*giou"
    config.loss.confidence = "none"
    config.loss.classification_weight = 2.0
    config.loss.localization_weight = 1.0
    config.optim.learning_rate = 1e-3
    config.optim.grad_clip_norm = 0.1  # DETR's
    config.train.steps = 2000
    config.train.eval_every = 2000  # (an evaluation costs ~25 s here; the run's budget is 20 minutes)
    config.train.checkpoint_every = 1000
    if arg == "tiny":
        d.num_queries, d.decoder_layers, d.ffn_dim = 10, 2, 32  # (queries >= data.max_boxes)
        config.model.max_detections = 20
        config.train.steps = 6
        config.train.eval_every = 6
        config.train.checkpoint_every = 3
    return config
