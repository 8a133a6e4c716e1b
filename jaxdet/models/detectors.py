"""The `DETECTORS` table: config.model.name -> builder of a detector.

A detector is a frozen dataclass holding a Flax `module` (images -> dict of raw head
outputs) and pure methods: `loss_fn(outputs, batch, rng, axis_name) -> (total, terms)`
with terms `classification`, `localization`, `confidence`; and `predict(outputs) ->
postprocess.Detections` with static shapes. One trainer drives them all.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jaxdet.errors import ConfigError
from jaxdet.models.heads.faster_rcnn import build_faster_rcnn
from jaxdet.models.heads.retinanet import build_retinanet
from jaxdet.models.heads.ssd import build_ssd
from jaxdet.models.heads.yolo import build_yolo

DETECTORS: dict[str, Callable[..., Any]] = {
    "retinanet": build_retinanet,
    "yolo": build_yolo,
    "ssd": build_ssd,
    "faster_rcnn": build_faster_rcnn,
}


def build_detector(config, num_classes: int, axis_name: str | None = "data"):
    """Builds `DETECTORS[config.model.name]`, failing with the list of valid names."""
    name = config.model.name
    if name not in DETECTORS:
        raise ConfigError(f"unknown detector {name!r} (config.model.name); valid names: {sorted(DETECTORS)}")
    return DETECTORS[name](config, num_classes, axis_name)
