"""The twin conv towers that dense heads run on every pyramid level (RetinaNet, YOLOX,
FCOS): a classification tower and a box tower of `num_convs` 3x3 convs each, shared
across levels, with a norm per level, or one norm shared too (FCOS, torchvision's heads)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from jax import Array

from jaxdet.models.layers import Conv, make_norm


def twin_towers(
    features: dict[int, Array],
    channels: int,
    num_convs: int,
    norm: str,
    activation: Callable[[Array], Array],
    dtype: Any,
    kernels: str,
    norm_per_level: bool = True,
) -> dict[int, tuple[Array, Array]]:
    """{level: [B, H, W, F]} -> {level: (cls features, box features)}, each [B, H, W, channels].

    Called inside a head's `nn.compact` method: the layers are created in that head's
    scope, named cls_conv{i} / box_conv{i} (shared) and cls_norm{i}_p{level} /
    box_norm{i}_p{level} (`norm_per_level`; else cls_norm{i} / box_norm{i}, shared), so
    the parameter tree is the head's own.
    """
    init = nn.initializers.normal(0.01)
    conv = lambda name: Conv(channels, (3, 3), kernel_init=init, dtype=dtype, kernels=kernels, name=name)  # noqa: E731
    cls_convs = [conv(f"cls_conv{i}") for i in range(num_convs)]
    box_convs = [conv(f"box_conv{i}") for i in range(num_convs)]
    norm_layer = make_norm(norm, True, dtype)
    shared = [(norm_layer(name=f"cls_norm{i}"), norm_layer(name=f"box_norm{i}")) for i in range(num_convs)]
    out = {}
    for lvl in sorted(features):
        c = b = features[lvl]
        for i in range(num_convs):
            if norm_per_level:
                cls_norm, box_norm = norm_layer(name=f"cls_norm{i}_p{lvl}"), norm_layer(name=f"box_norm{i}_p{lvl}")
            else:
                cls_norm, box_norm = shared[i]
            c = activation(cls_norm(cls_convs[i](c)))
            b = activation(box_norm(box_convs[i](b)))
        out[lvl] = (c, b)
    return out


def concat_levels(per_level: list[Array]) -> Array:
    """Per-level [B, N_l, ...] head outputs -> [B, sum N_l, ...] float32 (levels in order)."""
    return jnp.concatenate(per_level, axis=1).astype(jnp.float32)
