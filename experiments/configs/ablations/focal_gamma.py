"""Ablation: the focusing parameter gamma of the sigmoid focal loss (gamma=0 is weighted BCE).

    python -m experiments.sweep --config=experiments/configs/ablations/focal_gamma.py \
        --workdir=runs/ablations/focal_gamma --sweep='loss.focal_gamma=0.0,0.5,1.0,2.0,3.0' --seeds=0,1,2
"""

from experiments.configs import default


def get_config(arg: str | None = None):
    config = default.get_config(arg)
    # The recorded results ran with max-IoU positives, the default recipe's until 2026-12-05.
    config.model.retinanet.assigner = "max_iou"
    config.loss.classification = "sigmoid_focal"
    return config
