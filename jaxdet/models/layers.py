"""Small building blocks shared by backbones, necks and heads."""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdet.errors import ConfigError

NORMS = ("batch", "frozen_batch", "group", "none")


def make_norm(kind: str, train: bool, dtype: Any, axis_name: str | None = None, groups: int = 32):
    """A norm-layer factory: kind in NORMS.

    BatchNorm keeps running statistics in the `batch_stats` collection; with
    `axis_name` set, its batch statistics are averaged over that mesh axis (sync BN).
    "frozen_batch" is a fixed affine map (torchvision's FrozenBatchNorm2d), for a
    pretrained backbone: its statistics and scale/bias are not trained.
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
    if kind == "frozen_batch":
        return functools.partial(FrozenBatchNorm, epsilon=1e-5, dtype=dtype)
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


class FrozenBatchNorm(nn.Module):
    """y = (x - mean) / sqrt(var + eps) * scale + bias with all four fixed.

    They live in the `batch_stats` collection, which the optimizer never sees and which
    this module never updates, so training leaves them as loaded (see models/convert.py).
    `scale_init` is accepted for interface parity with nn.BatchNorm and ignored.
    """

    epsilon: float = 1e-5
    dtype: Any = jnp.float32
    scale_init: Any = None

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        scale = self.variable("batch_stats", "scale", jnp.ones, (c,), jnp.float32).value
        bias = self.variable("batch_stats", "bias", jnp.zeros, (c,), jnp.float32).value
        mean = self.variable("batch_stats", "mean", jnp.zeros, (c,), jnp.float32).value
        var = self.variable("batch_stats", "var", jnp.ones, (c,), jnp.float32).value
        # Folded into one multiply-add, as FrozenBatchNorm2d does.
        mul = scale * jax.lax.rsqrt(var + self.epsilon)
        return (x * mul.astype(self.dtype) + (bias - mean * mul).astype(self.dtype)).astype(self.dtype)


def _identity(x):
    return x


# Symmetric padding 1 (torchvision's), not "SAME": at stride 2 "SAME" pads only the bottom/right
# and samples a grid shifted by a pixel, so pretrained torchvision weights would not match.
conv3x3 = functools.partial(nn.Conv, kernel_size=(3, 3), padding=1, use_bias=False)
conv1x1 = functools.partial(nn.Conv, kernel_size=(1, 1), padding="SAME", use_bias=False)
