"""The `DETECTORS` registry: config.model.name -> its definition (config section, neck,
builder, loss terms, loss-implied architecture, torchvision converter).

A detector is one module in this package that calls `base.register(DEFINITION)` when
imported; every module here is imported below, so a new detector file registers itself
and nothing else changes.
"""

from __future__ import annotations

import importlib
import pkgutil

from jaxdet import kernels
from jaxdet.detectors.base import DETECTORS, BuildContext, DetectorDef, get_definition

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")

__all__ = ["DETECTORS", "BuildContext", "DetectorDef", "build_detector", "get_definition"]


def build_detector(
    config, num_classes: int, axis_name: str | None = "data", platform: str | None = None, num_devices: int = 1
):
    """Builds `DETECTORS[config.model.name]` for a mesh of `num_devices` devices of `platform`.

    BatchNorm synchronises over `axis_name` when config.model.sync_batch_norm and the mesh
    has more than one device (on one device it is the same computation, and the local form
    is faster); the kernel policy config.model.kernels resolves against `platform` (None:
    the default backend's).
    """
    from jaxdet.detectors.config import is_resolved, resolve  # (imports this module's registry)

    if not is_resolved(config):  # a recipe's or a test's config; a run's was resolved once, by Run
        config = resolve(config)
    m = config.model
    platform = platform or kernels.platform()
    sync = m.sync_batch_norm and num_devices > 1 and axis_name is not None
    ctx = BuildContext(num_classes, axis_name if sync else None, kernels.resolve(m.kernels, platform))
    return get_definition(m.name).build(config, ctx)
