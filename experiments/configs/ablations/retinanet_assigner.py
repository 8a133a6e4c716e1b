"""Ablation: how RetinaNet chooses its positives. The default experiment (ATSS since these results) with max-IoU
(0.5 / 0.4, torchvision's), ATSS (Zhang et al. 2020) and task-aligned assignment (TOOD):

    python -m experiments.sweep --config=experiments/configs/ablations/retinanet_assigner.py \
        --workdir=runs/ablations/retinanet_assigner --seeds=0-2 \
        --sweep='model.retinanet.assigner=max_iou,atss,task_aligned' --launcher=ray --cpus_per_arm=1

The loss, anchors and schedule stay the default's; only the targets change (task-aligned
also makes the classification targets soft). Results: docs/ablations/retinanet_assigner/.
"""

from experiments.configs import default


def get_config(arg: str | None = None):
    return default.get_config(arg)
