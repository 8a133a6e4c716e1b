"""Ablation: YOLOv8's box loss. CIoU + DFL (ultralytics') against GIoU alone and L1 on
the expected distances, on `yolov8.py` (n size, 128 px, 1000 steps), 3 seeds:

    python -m experiments.sweep --config=experiments/configs/ablations/yolov8_box_loss.py \
        --workdir=runs/ablations/yolov8_box_loss --seeds=0,1,2 \
        --sweep='loss.localization=ciou+0.2*distribution_focal,giou,0.25*l1'

Every arm keeps the localization weight 7.5 and the same TAL targets (TAL measures
alignment with CIoU whichever loss trains the boxes). "0.25*l1" is L1 averaged over the
four sides (in strides), the reduction DFL uses, so that per-side errors weigh alike;
GIoU and CIoU are per box. Results: docs/ablations/yolov8_box_loss/.
"""

from experiments.configs import yolov8


def get_config(arg: str | None = None):
    return yolov8.get_config(arg)
