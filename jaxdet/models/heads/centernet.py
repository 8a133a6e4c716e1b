"""CenterNet's head (Zhou et al. 2019, "Objects as Points"): on the finest pyramid level,
one branch per output, each a 3x3 conv + ReLU + 1x1 conv: the class heatmap's logits, the
sub-stride centre offset and the box size (and, with a confidence loss, a quality logit)."""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from jax import Array

from jaxdet.models.layers import Conv as Conv_


class CenterNetHead(nn.Module):
    """{level: [B, H, W, F]} -> on the lowest level (stride s, A = H x W locations):
    cls_logits [B, A, K], box_raw [B, A, 4] = (offset x, offset y) in strides and
    size_scale x (width, height) in strides, and with `quality_branch` quality_logits [B, A]."""

    num_logits: int
    channels: int = 64
    prior_prob: float = 0.1  # CenterNet's heatmap bias -2.19
    size_bias: float = 0.4  # initial size output: size_scale x 4 strides, so boxes start positive
    quality_branch: bool = False
    dtype: Any = jnp.float32
    kernels: str = "plain"

    @nn.compact
    def __call__(self, features: dict[int, Array]) -> dict[str, Array]:
        x = features[min(features)]
        b = x.shape[0]
        Conv = functools.partial(Conv_, dtype=self.dtype, kernels=self.kernels)  # noqa: N806

        def branch(name: str, out: int, bias: float = 0.0) -> Array:
            y = nn.relu(Conv(self.channels, (3, 3), name=f"{name}_conv")(x))
            init = nn.initializers.constant(bias)
            y = Conv(out, (1, 1), kernel_init=nn.initializers.normal(0.001), bias_init=init, name=name)(y)
            return y.reshape(b, -1, out).astype(jnp.float32)

        prior = -math.log((1 - self.prior_prob) / self.prior_prob)
        offset = branch("offset", 2, 0.5)  # (centres start mid-cell)
        size = branch("size", 2, self.size_bias)
        out = {"cls_logits": branch("heatmap", self.num_logits, prior), "box_raw": jnp.concatenate([offset, size], -1)}
        if self.quality_branch:
            out["quality_logits"] = branch("quality", 1)[..., 0]
        return out
