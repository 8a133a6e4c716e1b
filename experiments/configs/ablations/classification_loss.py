# ruff: noqa: E501  (the launch command in the docstring is meant to be copied whole)
"""Ablation: cross-entropy vs focal vs varifocal vs quality focal classification.

    python -m experiments.sweep --config=experiments/configs/ablations/classification_loss.py \
        --workdir=runs/ablations/classification \
        --sweep='loss.classification=softmax_cross_entropy,sigmoid_binary_cross_entropy,sigmoid_focal,varifocal,quality_focal' \
        --seeds=0,1,2

Softmax cross-entropy adds a background logit to the head; varifocal and quality focal
use the IoU of each positive's predicted box (under stop_gradient) as its target.
"""

from experiments.configs import default


def get_config(arg: str | None = None):
    config = default.get_config(arg)
    # The recorded results ran with max-IoU positives, the default recipe's until 2026-12-05.
    config.model.retinanet.assigner = "max_iou"
    return config
