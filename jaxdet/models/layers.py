"""Small building blocks shared by backbones, necks and heads."""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxdet.errors import ConfigError

NORMS = ("batch", "group", "none")


def make_norm(kind: str, train: bool, dtype: Any, axis_name: str | None = None, groups: int = 32):
    """A norm-layer factory: kind in NORMS.

    BatchNorm keeps running statistics in the `batch_stats` collection; with
    `axis_name` set, its batch statistics are averaged over that mesh axis (sync BN).
    GroupNorm has no state, so it is independent of the per-device batch.
    """
    if kind == "batch":
        return functools.partial(
            nn.BatchNorm,
            use_running_average=not train,
            momentum=0.9,
            epsilon=1e-5,
            dtype=dtype,
            axis_name=axis_name,
        )
    if kind == "group":
        return lambda name=None: _GroupNormAuto(groups=groups, dtype=dtype, name=name)
    if kind == "none":
        return lambda name=None: _identity
    raise ConfigError(f"unknown norm {kind!r}; valid: {NORMS}")


class _GroupNormAuto(nn.Module):
    """GroupNorm with min(groups, channels) groups, so narrow test models still work."""

    groups: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        channels = x.shape[-1]
        g = self.groups
        while channels % g:
            g //= 2
        return nn.GroupNorm(num_groups=max(g, 1), dtype=self.dtype)(x)


def _identity(x):
    return x


conv3x3 = functools.partial(nn.Conv, kernel_size=(3, 3), padding="SAME", use_bias=False)
conv1x1 = functools.partial(nn.Conv, kernel_size=(1, 1), padding="SAME", use_bias=False)
