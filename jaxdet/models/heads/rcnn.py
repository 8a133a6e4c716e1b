"""Faster R-CNN's heads: the RPN's shared conv over the levels, and the RoI box head
(multi-level RoIAlign + two FC layers, class scores and class-specific deltas)."""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
from jax import Array

from jaxdet.models.layers import Conv as Conv_
from jaxdet.ops.roi_align import multilevel_roi_align


class RPNHead(nn.Module):
    """Shared conv over the levels: {l: [B, H, W, F]} -> objectness [B, N], deltas [B, N, 4]."""

    channels: int
    num_anchors: int
    dtype: Any = jnp.float32
    kernels: str = "plain"

    @nn.compact
    def __call__(self, pyramid: dict[int, Array]) -> tuple[Array, Array]:
        Conv = functools.partial(Conv_, kernels=self.kernels)  # noqa: N806
        init = nn.initializers.normal(0.01)
        conv = Conv(self.channels, (3, 3), kernel_init=init, dtype=self.dtype, name="conv")
        obj = Conv(self.num_anchors, (1, 1), kernel_init=init, dtype=self.dtype, name="objectness")
        box = Conv(4 * self.num_anchors, (1, 1), kernel_init=init, dtype=self.dtype, name="deltas")
        logits, deltas = [], []
        for lvl in sorted(pyramid):
            h = nn.relu(conv(pyramid[lvl]))
            b = h.shape[0]
            logits.append(obj(h).reshape(b, -1))
            deltas.append(box(h).reshape(b, -1, 4))
        return jnp.concatenate(logits, 1).astype(jnp.float32), jnp.concatenate(deltas, 1).astype(jnp.float32)


class BoxHead(nn.Module):
    """RoIAlign + two FC layers: rois [B, R, 4] -> logits [B, R, K], class-specific deltas [B, R, C, 4]."""

    fc_dim: int
    num_logits: int
    num_classes: int
    pooled_size: int = 7
    aligned: bool = True  # RoIAlign's half-pixel shift (torchvision's MultiScaleRoIAlign: False)
    dtype: Any = jnp.float32
    kernels: str = "plain"

    @nn.compact
    def __call__(self, pyramid: dict[int, Array], rois: Array) -> tuple[Array, Array]:
        b, r, _ = rois.shape
        # RoIs pool from P2..P5 at most (Lin et al.; P6 only feeds the RPN), as torchvision.
        pooled = multilevel_roi_align(
            {lvl: f for lvl, f in pyramid.items() if lvl <= 5}, rois, self.pooled_size, 2, self.aligned, self.kernels
        )
        x = pooled.reshape(b * r, -1)
        for i in range(2):
            x = nn.relu(nn.Dense(self.fc_dim, dtype=self.dtype, name=f"fc{i}")(x))
        logits = nn.Dense(self.num_logits, dtype=self.dtype, name="cls")(x)
        init = nn.initializers.normal(0.001)
        deltas = nn.Dense(4 * self.num_classes, kernel_init=init, dtype=self.dtype, name="box")(x)
        return (
            logits.reshape(b, r, -1).astype(jnp.float32),
            deltas.reshape(b, r, self.num_classes, 4).astype(jnp.float32),
        )
