"""ResNet backbones (NHWC) returning the C2..C5 feature maps by level.

Level l has stride 2**l. `resnet18/34/50` follow He et al.; `resnet_tiny` is a narrow
variant for tests and the CPU default run.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

from jaxdet.errors import ConfigError
from jaxdet.models.csp import CSP_SIZES, CSPDarknet, CSPSpec
from jaxdet.models.layers import BatchNorm, Conv, conv1x1, conv3x3, make_norm, max_pool_3x3_s2


@dataclasses.dataclass(frozen=True)
class ResNetSpec:
    """Depths per stage, block type and widths (output channels of each stage's blocks)."""

    stage_sizes: tuple[int, ...]
    bottleneck: bool
    widths: tuple[int, ...] = (64, 128, 256, 512)
    stem_width: int = 64


BACKBONES: dict[str, ResNetSpec | CSPSpec] = {
    "resnet_tiny": ResNetSpec((1, 1, 1, 1), False, (16, 32, 64, 128), 16),
    "resnet_small": ResNetSpec((1, 1, 1, 1), False, (32, 64, 128, 256), 32),
    "resnet18": ResNetSpec((2, 2, 2, 2), False),
    "resnet34": ResNetSpec((3, 4, 6, 3), False),
    "resnet50": ResNetSpec((3, 4, 6, 3), True),
    **{f"cspdarknet_{size}": spec for size, spec in CSP_SIZES.items()},
}


class BasicBlock(nn.Module):
    width: int
    stride: int
    norm: Any
    kernels: str = "plain"

    @nn.compact
    def __call__(self, x):
        k = self.kernels
        y = conv3x3(self.width, k, strides=self.stride, dtype=x.dtype)(x)
        y = nn.relu(self.norm()(y))
        y = conv3x3(self.width, k, dtype=x.dtype)(y)
        # Zero-init of the last norm's scale makes each block start as identity (Goyal et al.).
        y = self.norm(scale_init=nn.initializers.zeros)(y) if _has_scale(self.norm) else self.norm()(y)
        if x.shape[-1] != self.width or self.stride != 1:
            x = self.norm()(conv1x1(self.width, k, strides=self.stride, dtype=x.dtype)(x))
        return nn.relu(x + y)


class Bottleneck(nn.Module):
    width: int  # output channels = 4 * inner width, as ResNet-50
    stride: int
    norm: Any
    kernels: str = "plain"

    @nn.compact
    def __call__(self, x):
        inner, k = self.width // 4, self.kernels
        y = nn.relu(self.norm()(conv1x1(inner, k, dtype=x.dtype)(x)))
        y = nn.relu(self.norm()(conv3x3(inner, k, strides=self.stride, dtype=x.dtype)(y)))
        y = conv1x1(self.width, k, dtype=x.dtype)(y)
        y = self.norm(scale_init=nn.initializers.zeros)(y) if _has_scale(self.norm) else self.norm()(y)
        if x.shape[-1] != self.width or self.stride != 1:
            x = self.norm()(conv1x1(self.width, k, strides=self.stride, dtype=x.dtype)(x))
        return nn.relu(x + y)


def _has_scale(norm) -> bool:
    # (FrozenBatchNorm's scale is loaded, not initialised.)
    return getattr(norm, "func", None) in (nn.BatchNorm, BatchNorm)


class ResNet(nn.Module):
    """ResNet body: images [B, H, W, 3] -> {2: C2, 3: C3, 4: C4, 5: C5} (NHWC)."""

    spec: ResNetSpec
    norm: str = "batch"
    dtype: Any = jnp.float32
    axis_name: str | None = None
    kernels: str = "plain"  # the resolved kernel form (jaxdet.kernels)

    @nn.compact
    def __call__(self, x, train: bool):
        k = self.kernels
        norm = make_norm(self.norm, train, self.dtype, self.axis_name, kernels=k)
        x = x.astype(self.dtype)
        pad = [(3, 3), (3, 3)]
        x = Conv(self.spec.stem_width, (7, 7), strides=2, padding=pad, use_bias=False, dtype=self.dtype, kernels=k)(x)
        x = nn.relu(norm()(x))
        x = max_pool_3x3_s2(x, k)  # torchvision's padding
        block = Bottleneck if self.spec.bottleneck else BasicBlock
        widths = self.spec.widths
        if self.spec.bottleneck and widths == (64, 128, 256, 512):
            widths = tuple(4 * w for w in widths)
        features = {}
        for stage, (depth, width) in enumerate(zip(self.spec.stage_sizes, widths)):
            for i in range(depth):
                stride = 2 if (i == 0 and stage > 0) else 1
                x = block(width, stride, norm, k)(x)
            features[stage + 2] = x
        return features


def get_backbone_spec(name: str) -> ResNetSpec | CSPSpec:
    """`BACKBONES[name]`, failing with the list of valid names."""
    if name not in BACKBONES:
        raise ConfigError(f"unknown backbone {name!r} (config.model.backbone); valid names: {sorted(BACKBONES)}")
    return BACKBONES[name]


def make_backbone(name: str, norm: str, dtype, axis_name: str | None, kernels: str) -> nn.Module:
    """The backbone `config.model.backbone` names (unbound; built inside the detector's module,
    so its parameters sit under its class name, e.g. "ResNet_0")."""
    spec = get_backbone_spec(name)
    if isinstance(spec, CSPSpec):
        return CSPDarknet(spec, norm, dtype, axis_name, kernels)
    return ResNet(spec, norm, dtype, axis_name, kernels)
