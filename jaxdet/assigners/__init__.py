"""Label assignment with static shapes (matching.py: max-IoU, SimOTA, task-aligned, FCOS and the
sampling helpers; atss.py: ATSS), and the table that picks one by name from a detector's
section (registry.py)."""

from jaxdet.assigners.matching import (  # noqa: F401  (the package's names)
    IGNORE,
    NEGATIVE,
    POSITIVE,
    Assignment,
    fcos_assign,
    hard_negative_mask,
    max_iou_assign,
    sample_balanced,
    simota_assign,
    task_aligned_assign,
    top_k_mask,
)
