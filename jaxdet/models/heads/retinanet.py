"""RetinaNet's head (Lin et al. 2017): class and box towers shared across pyramid levels."""

from __future__ import annotations

import functools
import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from jax import Array

from jaxdet.models.heads.towers import concat_levels, twin_towers
from jaxdet.models.layers import Conv as Conv_


class RetinaNetHead(nn.Module):
    """Shared conv towers: {level: [B, H, W, F]} -> logits [B, A_total, K], deltas [B, A_total, 4]."""

    num_logits: int
    num_anchors: int
    num_convs: int = 4
    channels: int = 256
    norm: str = "group"
    prior_prob: float = 0.01
    quality_branch: bool = False
    dtype: Any = jnp.float32
    kernels: str = "plain"

    @nn.compact
    def __call__(self, features: dict[int, Array]) -> dict[str, Array]:
        Conv = functools.partial(Conv_, kernels=self.kernels)  # noqa: N806
        init = nn.initializers.normal(0.01)
        # Focal-loss prior: every anchor starts with foreground probability prior_prob.
        bias = -math.log((1 - self.prior_prob) / self.prior_prob)
        cls_out = Conv(
            self.num_anchors * self.num_logits,
            (3, 3),
            kernel_init=init,
            bias_init=nn.initializers.constant(bias),
            dtype=self.dtype,
            name="cls_logits",
        )
        box_out = Conv(self.num_anchors * 4, (3, 3), kernel_init=init, dtype=self.dtype, name="box_deltas")
        # IoU-aware RetinaNet (Wu et al. 2020): a per-anchor quality logit off the box tower.
        quality_out = Conv(self.num_anchors, (3, 3), kernel_init=init, dtype=self.dtype, name="quality")
        towers = twin_towers(features, self.channels, self.num_convs, self.norm, nn.relu, self.dtype, self.kernels)
        logits, deltas, quality = [], [], []
        for c, b in towers.values():
            bsz = c.shape[0]
            logits.append(cls_out(c).reshape(bsz, -1, self.num_logits))
            deltas.append(box_out(b).reshape(bsz, -1, 4))
            if self.quality_branch:
                quality.append(quality_out(b).reshape(bsz, -1))
        out = {"cls_logits": concat_levels(logits), "box_deltas": concat_levels(deltas)}
        if quality:
            out["quality_logits"] = concat_levels(quality)
        return out
