"""Ablation: multi-scale training. The default experiment (RetinaNet, 128 px at evaluation)
trained at one canvas size against each step's canvas drawn from 96, 128 and 160 px
(`data.train_sizes`, a pure function of seed and step; one compiled step per size), 3 seeds:

    python -m experiments.sweep --config=experiments/configs/ablations/multiscale.py \
        --workdir=runs/ablations/multiscale --seeds=0-2 \
        --sweep='data.train_sizes=(),(96,128,160)' --launcher=ray --cpus_per_arm=1

The scale jitter (`data.scale_min/max`, 0.8-1.2 of the canvas) stays on in both arms, so the
second arm's objects span 0.6x-1.5x of their 128 px size. Results: docs/ablations/multiscale/.
"""

from experiments.configs import default


def get_config(arg: str | None = None):
    config = default.get_config(arg)
    # The recorded results ran with max-IoU positives, the default recipe's until 2026-12-05.
    config.model.retinanet.assigner = "max_iou"
    return config
