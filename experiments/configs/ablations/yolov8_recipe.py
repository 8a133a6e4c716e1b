"""Ablation: two of the recipe features YOLOv8 is published with, on `yolov8.py` (n size,
128 px, 1000 steps), 3 seeds: ultralytics' augmentations (mosaic with `close_mosaic`,
mixup, random affine) against today's recipe (flip + scale jitter), as a sweep; and an
exponential moving average of the weights, on against off, from the same runs:

    python -m experiments.sweep --config=experiments/configs/ablations/yolov8_recipe.py \
        --workdir=runs/ablations/yolov8_recipe --seeds=0-2 --launcher=ray --cpus_per_arm=1 \
        --sweep='data.mosaic_prob,data.mixup_prob,data.affine_translate,data.affine_scale,data.close_mosaic_steps=(0,0,0,0,0),(1,0.1,0.1,0.5,100)'
    python -m experiments.sweep_eval --workdir=runs/ablations/yolov8_recipe --sweep='eval.weights=trained,model'

The sweep's axis is linked (its fields change together): ultralytics' mosaic 1.0, mixup
0.1 (its m/l/x value), translate 0.1, scale 0.5, and mosaic off for the last 10% of the
steps (close_mosaic 10 of 100 epochs). Every run keeps an EMA, which never feeds back into
training, so `eval.weights=trained` (the weights a run without the EMA has, up to float
rounding) against `model` (the EMA) pairs EMA off and on on one trajectory, for both
augmentation arms, at no training cost. ultralytics' decay 0.9999 with a 2000-update ramp
is sized for ~500k updates; at 1000 steps it would average little but the ramp, so this
keeps its form `decay * (1 - exp(-updates / ema_warmup))` with a 100-update ramp and a
0.995 decay (an average over ~200 steps, 20% of training). Results:
docs/ablations/yolov8_recipe/.
"""

from experiments.configs import yolov8


def get_config(arg: str | None = None):
    config = yolov8.get_config(arg)
    config.optim.ema_decay = 0.995
    config.optim.ema_warmup = 100
    return config
