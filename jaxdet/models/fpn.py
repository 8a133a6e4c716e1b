"""Feature Pyramid Network (Lin et al. 2017) with optional extra levels (RetinaNet P6, P7)."""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdet.models.layers import Conv


class FPN(nn.Module):
    """{level: C_l} -> {level: P_l} for levels min_level..max_level, all `channels` wide.

    Levels present in the backbone get a lateral 1x1 conv, top-down nearest upsampling
    and a 3x3 output conv; levels above the backbone's top come from stride-2 3x3 convs
    on the previous level (with a ReLU between, as RetinaNet's P7), or with `extra="pool"`
    by taking every other pixel of it (torchvision's LastLevelMaxPool, Faster R-CNN's P6).
    """

    channels: int
    min_level: int
    max_level: int
    dtype: Any = jnp.float32
    extra: str = "conv"

    @nn.compact
    def __call__(self, features: dict[int, jax.Array]) -> dict[int, jax.Array]:
        top = max(features)
        backbone_levels = [lvl for lvl in range(self.min_level, self.max_level + 1) if lvl <= top]
        laterals = {
            lvl: Conv(self.channels, (1, 1), dtype=self.dtype, name=f"lateral{lvl}")(features[lvl])
            for lvl in backbone_levels
        }
        for lvl in reversed(backbone_levels[:-1]):
            up = laterals[lvl + 1]
            b, h, w, c = laterals[lvl].shape
            # Nearest-neighbour upsampling, cropped when the finer map has odd size.
            up = jnp.repeat(jnp.repeat(up, 2, axis=1), 2, axis=2)[:, :h, :w]
            laterals[lvl] = laterals[lvl] + up
        outputs = {
            lvl: Conv(self.channels, (3, 3), padding="SAME", dtype=self.dtype, name=f"output{lvl}")(laterals[lvl])
            for lvl in backbone_levels
        }
        prev = outputs[backbone_levels[-1]]
        for lvl in range(backbone_levels[-1] + 1, self.max_level + 1):
            if self.extra == "pool":  # max_pool2d(kernel 1, stride 2)
                prev = prev[:, ::2, ::2]
            elif self.extra == "conv":
                x = prev if lvl == backbone_levels[-1] + 1 else nn.relu(prev)
                # Padding 1 on every side, as torchvision's LastLevelP6P7 (see layers.conv3x3).
                prev = Conv(self.channels, (3, 3), strides=2, padding=1, dtype=self.dtype, name=f"extra{lvl}")(x)
            else:
                raise ValueError(f"FPN extra={self.extra!r}; valid: 'conv', 'pool'")
            outputs[lvl] = prev
        return outputs


class PAN(nn.Module):
    """FPN plus a bottom-up path (Liu et al. 2018, as YOLOv4+/YOLOX necks): {l: C_l} -> {l: N_l}.

    N_min = P_min; N_l = conv3x3(P_l + stride-2 conv(N_{l-1})), all `channels` wide.
    """

    channels: int
    min_level: int
    max_level: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, features: dict[int, jax.Array]) -> dict[int, jax.Array]:
        pyramid = FPN(self.channels, self.min_level, self.max_level, self.dtype, name="fpn")(features)
        out = {self.min_level: pyramid[self.min_level]}
        for lvl in range(self.min_level + 1, self.max_level + 1):
            down = Conv(self.channels, (3, 3), strides=2, padding="SAME", dtype=self.dtype, name=f"down{lvl}")(
                out[lvl - 1]
            )
            merged = nn.relu(pyramid[lvl] + down)
            out[lvl] = nn.relu(
                Conv(self.channels, (3, 3), padding="SAME", dtype=self.dtype, name=f"merge{lvl}")(merged)
            )
        return out
