"""Ablation: two recipe features RT-DETR and Scenic's DETR are trained with, on `detr.py`
(3000 x 16, 128 px), 3 seeds: the backbone at a tenth of the learning rate against the
recipe's one rate, as a sweep; and an exponential moving average of the weights, on
against off, from the same runs:

    python -m experiments.sweep --config=experiments/configs/ablations/detr_recipe.py \
        --workdir=runs/ablations/detr_recipe --seeds=0-2 --launcher=ray --cpus_per_arm=1 \
        "--sweep=optim.param_groups=(),(('^ResNet_0/',0.1,1.0,False),)"
    python -m experiments.sweep_eval --workdir=runs/ablations/detr_recipe --sweep='eval.weights=trained,model'

`^ResNet_0/` is the backbone's parameter paths (stem and stages; weight decay unchanged).
Every run keeps an EMA, which never feeds back into training, so `eval.weights=trained`
(the weights a run without the EMA has, up to float rounding) against `model` (the EMA)
pairs EMA off and on on one trajectory, for both learning-rate arms, at no training cost.
RT-DETR's decay 0.9999 with a 2000-update ramp is sized for ~500k updates; as in
`yolov8_recipe.py` this keeps its form `decay * (1 - exp(-updates / ema_warmup))` with an
average over ~17% of training: decay 0.998 (~500 updates) and a 300-update ramp.
Results: docs/ablations/detr_recipe/.
"""

from experiments.configs import detr


def get_config(arg: str | None = None):
    config = detr.get_config(arg)
    config.optim.ema_decay = 0.998
    config.optim.ema_warmup = 300
    return config
