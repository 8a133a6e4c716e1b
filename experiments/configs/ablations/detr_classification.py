"""Ablation: DETR's classification loss, sigmoid focal (the recipe's) against varifocal,
on `detr.py` (3000 steps of batch 16), 3 seeds so far:

    python -m experiments.sweep --config=experiments/configs/ablations/detr_classification.py \
        --workdir=runs/ablations/detr_classification --seeds=0-2 \
        --sweep='loss.classification=sigmoid_focal,varifocal'

Paired by seed, varifocal loses 0.04 AP on average with a seed-to-seed spread of 0.1: not
detectable with 3 seeds (34 would be needed): docs/ablations/detr_classification/.
"""

from experiments.configs import detr


def get_config(arg: str | None = None):
    return detr.get_config(arg)
