"""YOLOv8's CSP backbone and neck (ultralytics' yolov8.yaml, NHWC): Conv-BN-SiLU units,
C2f blocks (cross-stage partial with a chain of bottlenecks whose every output is kept),
SPPF, and the C2f PAN. Sizes n / s / m scale widths and block counts.

    backbone: Conv s2 -> Conv s2 -> C2f(3) -> Conv s2 -> C2f(6) [P3] -> Conv s2 -> C2f(6) [P4]
              -> Conv s2 -> C2f(3) -> SPPF [P5]
    neck:     top-down C2f(3) on upsampled P5 + P4, then P4' + P3 -> N3; bottom-up stride-2
              Conv + concat + C2f(3) -> N4, N5 (each level keeps the backbone's width)
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdet.models.layers import Conv, make_norm


@dataclasses.dataclass(frozen=True)
class CSPSpec:
    """Width and depth multipliers and the channel cap (ultralytics' scales)."""

    width: float
    depth: float
    max_channels: int = 1024

    def channels(self, base: int) -> int:
        """min(base, max_channels) x width, rounded up to a multiple of 8 (make_divisible)."""
        return int(math.ceil(min(base, self.max_channels) * self.width / 8) * 8)

    def blocks(self, base: int) -> int:
        return max(round(base * self.depth), 1)


CSP_SIZES: dict[str, CSPSpec] = {
    "tiny": CSPSpec(0.125, 1 / 3),  # for tests
    "n": CSPSpec(0.25, 1 / 3),
    "s": CSPSpec(0.50, 1 / 3),
    "m": CSPSpec(0.75, 2 / 3, 768),
}


class ConvUnit(nn.Module):
    """Conv (no bias) -> norm -> SiLU, padding k // 2 on every side (ultralytics' Conv)."""

    features: int
    kernel: int = 1
    stride: int = 1
    norm: Any = None
    dtype: Any = jnp.float32
    kernels: str = "plain"

    @nn.compact
    def __call__(self, x):
        p = self.kernel // 2
        x = Conv(self.features, (self.kernel, self.kernel), strides=self.stride, padding=p, use_bias=False,
                 dtype=self.dtype, kernels=self.kernels)(x)  # fmt: skip
        return nn.silu(self.norm()(x))


class C2f(nn.Module):
    """1x1 to 2c, split; `n` bottlenecks (two 3x3 units, residual if `shortcut`) on the
    second half, each output kept; concat (2 + n) c -> 1x1 to `features`."""

    features: int
    n: int
    shortcut: bool
    norm: Any
    dtype: Any = jnp.float32
    kernels: str = "plain"

    @nn.compact
    def __call__(self, x):
        c = self.features // 2
        unit = lambda f, k=1: ConvUnit(f, k, 1, self.norm, self.dtype, self.kernels)  # noqa: E731
        y = unit(2 * c)(x)
        parts = [y[..., :c], y[..., c:]]
        for _ in range(self.n):
            z = unit(c, 3)(unit(c, 3)(parts[-1]))
            parts.append(parts[-1] + z if self.shortcut else z)
        return unit(self.features)(jnp.concatenate(parts, axis=-1))


class SPPF(nn.Module):
    """1x1 to c/2, three chained 5x5 stride-1 max-pools, concat of the four, 1x1 to `features`."""

    features: int
    norm: Any
    dtype: Any = jnp.float32
    kernels: str = "plain"

    @nn.compact
    def __call__(self, x):
        unit = lambda f: ConvUnit(f, 1, 1, self.norm, self.dtype, self.kernels)  # noqa: E731
        y = [unit(x.shape[-1] // 2)(x)]
        for _ in range(3):
            y.append(nn.max_pool(y[-1], (5, 5), strides=(1, 1), padding=((2, 2), (2, 2))))
        return unit(self.features)(jnp.concatenate(y, axis=-1))


class CSPDarknet(nn.Module):
    """YOLOv8's backbone: images [B, H, W, 3] -> {3: P3, 4: P4, 5: P5} (SPPF on P5)."""

    spec: CSPSpec
    norm: str = "batch"
    dtype: Any = jnp.float32
    axis_name: str | None = None
    kernels: str = "plain"

    @nn.compact
    def __call__(self, x, train: bool):
        s, k = self.spec, self.kernels
        norm = make_norm(self.norm, train, self.dtype, self.axis_name, kernels=k)
        x = x.astype(self.dtype)
        x = ConvUnit(s.channels(64), 3, 2, norm, self.dtype, k)(x)
        features = {}
        for lvl, (base, n) in enumerate(((128, 3), (256, 6), (512, 6), (1024, 3)), start=2):
            x = ConvUnit(s.channels(base), 3, 2, norm, self.dtype, k)(x)
            x = C2f(s.channels(base), s.blocks(n), True, norm, self.dtype, k)(x)
            features[lvl] = x
        features[5] = SPPF(s.channels(1024), norm, self.dtype, k)(features[5])
        return {lvl: features[lvl] for lvl in (3, 4, 5)}


def _upsample_to(x: jax.Array, like: jax.Array) -> jax.Array:
    """Nearest x2 upsampling, cropped to `like`'s spatial size (odd sizes round up below)."""
    x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    return x[:, : like.shape[1], : like.shape[2]]


class C2fPAN(nn.Module):
    """YOLOv8's neck on {3, 4, 5}: every output level keeps its input's width; `depth`
    bottlenecks per C2f (no shortcuts)."""

    depth: int
    norm: Any
    dtype: Any = jnp.float32
    kernels: str = "plain"

    @nn.compact
    def __call__(self, features: dict[int, jax.Array]) -> dict[int, jax.Array]:
        c3, c4, c5 = (features[lvl] for lvl in (3, 4, 5))
        block = lambda f: C2f(f, self.depth, False, self.norm, self.dtype, self.kernels)  # noqa: E731
        down = lambda f: ConvUnit(f, 3, 2, self.norm, self.dtype, self.kernels)  # noqa: E731
        p4 = block(c4.shape[-1])(jnp.concatenate([_upsample_to(c5, c4), c4], -1))
        n3 = block(c3.shape[-1])(jnp.concatenate([_upsample_to(p4, c3), c3], -1))
        n4 = block(c4.shape[-1])(jnp.concatenate([down(c3.shape[-1])(n3), p4], -1))
        n5 = block(c5.shape[-1])(jnp.concatenate([down(c4.shape[-1])(n4), c5], -1))
        return {3: n3, 4: n4, 5: n5}
