"""The runs docs/backprop.md measures: the default recipe, short (300 steps of 16 images),
with every term's gradient norms and cosines logged every 25 steps and a checkpoint every
100 steps, for `experiments.anatomy` to read.

    python -m experiments.sweep --config=experiments/configs/ablations/backprop.py \
        --workdir=runs/backprop --seeds=0-2 --launcher=ray --cpus_per_arm=1 \
        --sweep='loss.focal_gamma,optim.name,optim.learning_rate,optim.momentum,loss.localization,model.retinanet.assigner=(2.0,adamw,0.002,0.9,giou,atss),(0.0,adamw,0.002,0.9,giou,atss),(1.0,adamw,0.002,0.9,giou,atss),(2.0,sgd,0.02,0.9,giou,atss),(2.0,rmsprop,0.001,0.0,giou,atss),(2.0,adamw,0.002,0.9,smooth_l1,atss),(2.0,adamw,0.002,0.9,giou,max_iou)'

The first arm (the default recipe) is every other arm's baseline: each changes one thing.
"""

from experiments.configs import default


def get_config(arg: str | None = None):
    config = default.get_config(arg)
    if arg == "tiny":
        return config
    config.train.steps = 300
    config.train.batch_size = 16
    config.train.eval_every = 300
    config.train.checkpoint_every = 100
    config.train.keep_checkpoints = 3
    config.train.term_grad_norms_every = 25
    config.train.num_prediction_images = 8
    return config
