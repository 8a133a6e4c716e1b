"""FCOS's head (Tian et al. 2019), as torchvision's `FCOSHead`: class and box towers of
3x3 convs with GroupNorm, both shared across levels; per point class logits, ltrb
distances (ReLU, in strides) and a centre-ness logit off the box tower."""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from jax import Array

from jaxdet.models.heads.towers import concat_levels, twin_towers
from jaxdet.models.layers import Conv as Conv_


class FCOSHead(nn.Module):
    """{level: [B, H, W, F]} -> cls_logits [B, P, K], box_ltrb [B, P, 4] (>= 0, in strides)
    and, with `quality_branch`, ctr_logits [B, P] (centre-ness or another confidence)."""

    num_logits: int
    channels: int = 256
    num_convs: int = 4
    norm: str = "group"
    prior_prob: float = 0.01
    quality_branch: bool = True
    dtype: Any = jnp.float32
    kernels: str = "plain"

    @nn.compact
    def __call__(self, features: dict[int, Array]) -> dict[str, Array]:
        init = nn.initializers.normal(0.01)
        Conv = functools.partial(  # noqa: N806
            Conv_, kernel_size=(3, 3), kernel_init=init, dtype=self.dtype, kernels=self.kernels
        )
        prior = nn.initializers.constant(-math.log((1 - self.prior_prob) / self.prior_prob))
        cls_out = Conv(self.num_logits, bias_init=prior, name="cls_logits")
        box_out = Conv(4, name="box_ltrb")
        ctr_out = Conv(1, name="ctr_logits")
        towers = twin_towers(
            features, self.channels, self.num_convs, self.norm, nn.relu, self.dtype, self.kernels, norm_per_level=False
        )
        cls_all, box_all, ctr_all = [], [], []
        for c, b in towers.values():
            bsz = c.shape[0]
            cls_all.append(cls_out(c).reshape(bsz, -1, self.num_logits))
            box_all.append(nn.relu(box_out(b)).reshape(bsz, -1, 4))
            if self.quality_branch:
                ctr_all.append(ctr_out(b).reshape(bsz, -1))
        out = {"cls_logits": concat_levels(cls_all), "box_ltrb": concat_levels(box_all)}
        if ctr_all:
            out["ctr_logits"] = concat_levels(ctr_all)
        return out
