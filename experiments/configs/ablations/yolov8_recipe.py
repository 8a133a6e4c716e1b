"""Ablation: two of the recipe features YOLOv8 is published with, as a 2 x 2 grid on
`yolov8.py` (n size, 128 px, 1000 steps), 3 seeds: an exponential moving average of the
weights (evaluated and checkpointed in their place) and ultralytics' augmentations (mosaic
with `close_mosaic`, mixup, random affine), against today's recipe (flip + scale jitter):

    python -m experiments.sweep --config=experiments/configs/ablations/yolov8_recipe.py \
        --workdir=runs/ablations/yolov8_recipe --seeds=0-2 --launcher=ray --cpus_per_arm=1 \
        --sweep='optim.ema_decay=0,0.995' \
        --sweep='data.mosaic_prob,data.mixup_prob,data.affine_translate,data.affine_scale,data.close_mosaic_steps=(0,0,0,0,0),(1,0.1,0.1,0.5,100)'

The second axis is linked (its fields change together): ultralytics' mosaic 1.0, mixup 0.1
(its m/l/x value), translate 0.1, scale 0.5, and mosaic off for the last 10% of the steps
(close_mosaic 10 of 100 epochs). ultralytics' EMA decay 0.9999 with a 2000-update ramp is
sized for ~500k updates; at 1000 steps it would average little but the ramp, so the EMA arm
keeps its ramp form `decay * (1 - exp(-updates / ema_warmup))` with a 100-update ramp and a
0.995 decay (an average over ~200 steps, 20% of training). Results: docs/ablations/yolov8_recipe/.
"""

from experiments.configs import yolov8


def get_config(arg: str | None = None):
    config = yolov8.get_config(arg)
    config.optim.ema_warmup = 100  # (read only when optim.ema_decay > 0)
    return config
