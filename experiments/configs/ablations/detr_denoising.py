"""Ablation: RT-DETR-style denoising queries on `detr.py`, none against one group, at 1500
steps of batch 32 (the recipe trains 3000 x 16), 3 seeds so far:

    python -m experiments.sweep --config=experiments/configs/ablations/detr_denoising.py \
        --workdir=runs/ablations/detr_denoising --seeds=0-2 --sweep='model.detr.denoising=0,1'

Paired by seed, one group gains +0.005 AP on average, not detectable with 3 seeds (14
would be needed at that spread): docs/ablations/detr_denoising/.
"""

from experiments.configs import detr


def get_config(arg: str | None = None):
    config = detr.get_config(arg)
    if not arg:
        config.train.steps = 1500
        config.train.batch_size = 32
        config.train.eval_every = 750
        config.train.checkpoint_every = 750
    return config
