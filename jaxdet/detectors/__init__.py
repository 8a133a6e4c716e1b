"""The `DETECTORS` registry: config.model.name -> its definition (config section, neck,
builder, loss terms, loss-implied architecture, torchvision converter).

A detector is one module in this package that calls `base.register(DEFINITION)` when
imported; every module here is imported below, so a new detector file registers itself
and nothing else changes.
"""

from __future__ import annotations

import importlib
import pkgutil

import jax
import jax.numpy as jnp
import ml_collections

from jaxdet import kernels
from jaxdet.detectors.base import DETECTORS, BuildContext, DetectorDef, get_definition
from jaxdet.errors import ConfigError

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")

__all__ = ["DETECTORS", "BuildContext", "DetectorDef", "build_at_sizes", "build_detector", "get_definition"]


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


def build_at_sizes(
    config,
    sizes,
    field: str,
    num_classes: int,
    axis_name: str | None = "data",
    platform: str | None = None,
    num_devices: int = 1,
) -> dict:
    """{size: the detector built for size x size inputs (its anchors, points, clipping)} for
    config.data.image_size and each of `sizes`. They share one set of weights, so a detector
    whose parameter shapes depend on the input size is refused (ConfigError naming `field`,
    the config field that asked for the sizes)."""
    base = config.data.image_size
    built = {base: build_detector(config, num_classes, axis_name, platform, num_devices)}
    reference = _param_shapes(built[base], base)
    for size in sorted(set(sizes) - {base}):
        at = ml_collections.ConfigDict(config.to_dict())
        at.data.image_size = size
        built[size] = det = build_detector(at, num_classes, axis_name, platform, num_devices)
        if _shapes(_param_shapes(det, size)) != _shapes(reference):
            raise ConfigError(
                f"{field}: {config.model.name}'s parameters at {size} px differ in shape from those at "
                f"data.image_size={base} px (its weights depend on the input size), so one set of weights cannot "
                f"run at both; leave {field} empty"
            )
    return built


def _param_shapes(detector, size: int):
    """The shapes and dtypes of `detector`'s parameters for size x size inputs, not computed."""
    rng = jax.random.key(0)
    dummy = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    return jax.eval_shape(lambda x: detector.module.init({"params": rng, "sampling": rng}, x, train=False), dummy)[
        "params"
    ]


def _shapes(tree) -> list:
    return [(path, leaf.shape) for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]]
