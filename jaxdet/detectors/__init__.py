"""The `DETECTORS` registry: config.model.name -> its definition (config section, neck,
builder, loss-implied architecture). A new detector is one file here plus one line below.
"""

from __future__ import annotations

from jaxdet import kernels as kernel_policy
from jaxdet.detectors import detr, faster_rcnn, fcos, retinanet, ssd, yolo, yolov8
from jaxdet.detectors.base import BuildContext, DetectorDef
from jaxdet.errors import ConfigError

DETECTORS: dict[str, DetectorDef] = {
    module.DEFINITION.name: module.DEFINITION for module in (retinanet, yolo, ssd, faster_rcnn, fcos, yolov8, detr)
}


def get_definition(name: str) -> DetectorDef:
    if name not in DETECTORS:
        raise ConfigError(f"unknown detector {name!r} (config.model.name); valid names: {sorted(DETECTORS)}")
    return DETECTORS[name]


def build_detector(
    config, num_classes: int, axis_name: str | None = "data", platform: str | None = None, num_devices: int = 1
):
    """Builds `DETECTORS[config.model.name]` for a mesh of `num_devices` devices of `platform`.

    BatchNorm synchronises over `axis_name` when config.model.sync_batch_norm and the mesh
    has more than one device (on one device it is the same computation, and the local form
    is faster); the kernel policy config.model.kernels resolves against `platform` (None:
    the default backend's).
    """
    from jaxdet.detectors.config import resolve  # (imports this module's registry)

    config = resolve(config)  # idempotent: the chosen section, checked, defaults filled in
    m = config.model
    platform = platform or kernel_policy.platform()
    sync = m.sync_batch_norm and num_devices > 1 and axis_name is not None
    ctx = BuildContext(num_classes, axis_name if sync else None, kernel_policy.resolve(m.kernels, platform))
    return get_definition(m.name).build(config, ctx)
