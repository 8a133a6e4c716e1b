"""Ablation: an exponential moving average of YOLOv8's weights (evaluated and checkpointed in
their place), off against two decays, on `yolov8.py` (n size, 128 px, 1000 steps), 3 seeds:

    python -m experiments.sweep --config=experiments/configs/ablations/yolov8_ema.py \
        --workdir=runs/ablations/yolov8_ema --seeds=0-2 \
        --sweep='optim.ema_decay=0,0.98,0.995' --launcher=ray --cpus_per_arm=1

ultralytics' 0.9999 with a 2000-update ramp is sized for ~500k updates (its average spans
~2% of training and the ramp the first 0.4%); at 1000 steps 0.9999 would average nothing
but the initial weights' ramp. The arms keep ultralytics' ramp form
`decay * (1 - exp(-updates / ema_warmup))` with a 100-update ramp and averages spanning
~50 and ~200 steps (5% and 20% of training). Results: docs/ablations/yolov8_ema/.
"""

from experiments.configs import yolov8


def get_config(arg: str | None = None):
    config = yolov8.get_config(arg)
    config.optim.ema_warmup = 100
    return config
