"""The YOLOX-style decoupled head (Ge et al. 2021): class branch; box branch with ltrb
distances and an objectness logit; shared across levels."""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from jax import Array

from jaxdet.models.heads.towers import concat_levels, twin_towers
from jaxdet.models.layers import Conv as Conv_


class YOLOHead(nn.Module):
    """Decoupled head shared across levels: {l: [B, H, W, F]} -> cls_logits [B, P, K],
    box_ltrb [B, P, 4] (log of distances in strides), obj_logits [B, P]."""

    num_logits: int
    channels: int
    num_convs: int = 2
    norm: str = "group"
    prior_prob: float = 0.01
    dtype: Any = jnp.float32
    kernels: str = "plain"

    @nn.compact
    def __call__(self, features: dict[int, Array]) -> dict[str, Array]:
        Conv = functools.partial(Conv_, kernels=self.kernels)  # noqa: N806
        bias = -math.log((1 - self.prior_prob) / self.prior_prob)
        init = nn.initializers.normal(0.01)
        prior = nn.initializers.constant(bias)
        cls_out = Conv(self.num_logits, (1, 1), bias_init=prior, dtype=self.dtype, name="cls")
        box_out = Conv(4, (1, 1), kernel_init=init, dtype=self.dtype, name="box")
        obj_out = Conv(1, (1, 1), bias_init=prior, dtype=self.dtype, name="obj")
        towers = twin_towers(features, self.channels, self.num_convs, self.norm, nn.silu, self.dtype, self.kernels)
        cls_all, box_all, obj_all = [], [], []
        for c, b in towers.values():
            bsz = c.shape[0]
            cls_all.append(cls_out(c).reshape(bsz, -1, self.num_logits))
            box_all.append(box_out(b).reshape(bsz, -1, 4))
            obj_all.append(obj_out(b).reshape(bsz, -1))
        return {
            "cls_logits": concat_levels(cls_all),
            "box_ltrb": concat_levels(box_all),
            "obj_logits": concat_levels(obj_all),
        }
