"""YOLOv8's decoupled head (ultralytics `Detect`): per level, its own class branch and box
branch of two 3x3 Conv-norm-SiLU units and a 1x1 output; the box branch predicts, per
side, logits over `reg_max` distance bins (DFL)."""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from jax import Array

from jaxdet.models.csp import ConvUnit
from jaxdet.models.heads.towers import concat_levels
from jaxdet.models.layers import Conv


class YOLOv8Head(nn.Module):
    """{level: [B, H, W, F_l]} -> cls_logits [B, P, K], box_dist [B, P, 4, reg_max] and,
    with `quality_branch`, obj_logits [B, P] (a confidence off the box branch)."""

    num_logits: int
    reg_max: int = 16
    image_size: int = 640
    norm: Any = None  # a norm factory (layers.make_norm)
    quality_branch: bool = False
    dtype: Any = jnp.float32
    kernels: str = "plain"

    @nn.compact
    def __call__(self, features: dict[int, Array]) -> dict[str, Array]:
        levels = sorted(features)
        width = features[levels[0]].shape[-1]
        box_width = max(16, width // 4, 4 * self.reg_max)
        cls_width = max(width, min(self.num_logits, 100))
        unit = lambda f, name: ConvUnit(f, 3, 1, self.norm, self.dtype, self.kernels, name=name)  # noqa: E731
        cls_all, box_all, obj_all = [], [], []
        for lvl in levels:
            x, bsz = features[lvl], features[lvl].shape[0]
            c = unit(cls_width, f"cls{lvl}_1")(unit(cls_width, f"cls{lvl}_0")(x))
            b = unit(box_width, f"box{lvl}_1")(unit(box_width, f"box{lvl}_0")(x))
            # ultralytics' bias init: ~5 objects per image-sized area of this level's cells
            # over the classes; box bins start uniform (bias 1 everywhere).
            prior = math.log(5 / max(self.num_logits, 1) / (self.image_size / 2**lvl) ** 2)
            cls_out = Conv(self.num_logits, (1, 1), bias_init=nn.initializers.constant(prior), dtype=self.dtype,
                           kernels=self.kernels, name=f"cls{lvl}_out")  # fmt: skip
            box_out = Conv(4 * self.reg_max, (1, 1), bias_init=nn.initializers.ones, dtype=self.dtype,
                           kernels=self.kernels, name=f"box{lvl}_out")  # fmt: skip
            cls_all.append(cls_out(c).reshape(bsz, -1, self.num_logits))
            box_all.append(box_out(b).reshape(bsz, -1, 4, self.reg_max))
            if self.quality_branch:
                obj = Conv(1, (1, 1), dtype=self.dtype, kernels=self.kernels, name=f"obj{lvl}_out")
                obj_all.append(obj(b).reshape(bsz, -1))
        out = {"cls_logits": concat_levels(cls_all), "box_dist": concat_levels(box_all)}
        if obj_all:
            out["obj_logits"] = concat_levels(obj_all)
        return out
