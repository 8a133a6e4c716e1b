"""Losses: elementwise functions (`functions`), the LOSSES table by family (`table`), and
the dense detectors' shared path from assignments to the three named terms (`dense`)."""

from jaxdet.losses.functions import (  # noqa: F401
    centerness_target,
    ciou_loss,
    diou_loss,
    distribution_focal_loss,
    giou_loss,
    iou_loss,
    l1_loss,
    l2_loss,
    quality_focal_loss,
    sigmoid_binary_cross_entropy,
    sigmoid_focal_loss,
    smooth_l1_loss,
    softmax_cross_entropy,
    varifocal_loss,
)
from jaxdet.losses.registry import (  # noqa: F401
    CLASSIFICATION_LOSSES,
    CONFIDENCE_LOSSES,
    LOCALIZATION_LOSSES,
    LOSSES,
    ClassificationLoss,
    ConfidenceLoss,
    LocalizationLoss,
    build_loss,
    get_loss,
)
