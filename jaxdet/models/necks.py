"""Necks: backbone features {level: C_l} -> the pyramid the head reads {level: P_l}.

`NECKS` maps `config.model.neck` to a function called inside the detector module's
compact scope: "fpn" (Lin et al. 2017, with RetinaNet's P6/P7 convs or Faster R-CNN's
pooled P6), "pan" (FPN plus a bottom-up path, YOLOv4/YOLOX), "c2f_pan" (YOLOv8's, with
C2f blocks: jaxdet/models/csp.py) and "ssd_extras" (the backbone's own maps plus SSD's
stride-2 extra layers, no top-down path).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxdet.errors import ConfigError
from jaxdet.models.csp import C2fPAN
from jaxdet.models.layers import Conv, make_norm


class _Pyramid(nn.Module):
    """The fields FPN and PAN share: output width, levels, compute dtype, how levels above
    the backbone's top are made, and the kernel form."""

    channels: int
    min_level: int
    max_level: int
    dtype: Any = jnp.float32
    extra: str = "conv"
    kernels: str = "plain"


class FPN(_Pyramid):
    """{level: C_l} -> {level: P_l} for levels min_level..max_level, all `channels` wide.

    Levels present in the backbone get a lateral 1x1 conv, top-down nearest upsampling
    and a 3x3 output conv; levels above the backbone's top come from stride-2 3x3 convs
    on the previous level (with a ReLU between, as RetinaNet's P7), or with `extra="pool"`
    by taking every other pixel of it (torchvision's LastLevelMaxPool, Faster R-CNN's P6).
    """

    @nn.compact
    def __call__(self, features: dict[int, jax.Array]) -> dict[int, jax.Array]:
        Conv_ = lambda *a, **kw: Conv(*a, kernels=self.kernels, **kw)  # noqa: E731, N806
        top = max(features)
        backbone_levels = [lvl for lvl in range(self.min_level, self.max_level + 1) if lvl <= top]
        laterals = {
            lvl: Conv_(self.channels, (1, 1), dtype=self.dtype, name=f"lateral{lvl}")(features[lvl])
            for lvl in backbone_levels
        }
        for lvl in reversed(backbone_levels[:-1]):
            up = laterals[lvl + 1]
            b, h, w, c = laterals[lvl].shape
            # Nearest-neighbour upsampling, cropped when the finer map has odd size.
            up = jnp.repeat(jnp.repeat(up, 2, axis=1), 2, axis=2)[:, :h, :w]
            laterals[lvl] = laterals[lvl] + up
        outputs = {
            lvl: Conv_(self.channels, (3, 3), padding="SAME", dtype=self.dtype, name=f"output{lvl}")(laterals[lvl])
            for lvl in backbone_levels
        }
        prev = outputs[backbone_levels[-1]]
        for lvl in range(backbone_levels[-1] + 1, self.max_level + 1):
            if self.extra == "pool":  # max_pool2d(kernel 1, stride 2)
                prev = prev[:, ::2, ::2]
            elif self.extra == "conv":
                x = prev if lvl == backbone_levels[-1] + 1 else nn.relu(prev)
                # Padding 1 on every side, as torchvision's LastLevelP6P7 (see layers.conv3x3).
                prev = Conv_(self.channels, (3, 3), strides=2, padding=1, dtype=self.dtype, name=f"extra{lvl}")(x)
            else:
                raise ValueError(f"FPN extra={self.extra!r}; valid: 'conv', 'pool'")
            outputs[lvl] = prev
        return outputs


class PAN(_Pyramid):
    """FPN plus a bottom-up path (Liu et al. 2018, as YOLOv4+/YOLOX necks): {l: C_l} -> {l: N_l}.

    N_min = P_min; N_l = conv3x3(P_l + stride-2 conv(N_{l-1})), all `channels` wide.
    """

    @nn.compact
    def __call__(self, features: dict[int, jax.Array]) -> dict[int, jax.Array]:
        c, k = self.channels, self.kernels
        pyramid = FPN(c, self.min_level, self.max_level, self.dtype, self.extra, k, name="fpn")(features)
        out = {self.min_level: pyramid[self.min_level]}
        for lvl in range(self.min_level + 1, self.max_level + 1):
            down = Conv(c, (3, 3), strides=2, padding="SAME", dtype=self.dtype, kernels=k, name=f"down{lvl}")
            merged = nn.relu(pyramid[lvl] + down(out[lvl - 1]))
            merge = Conv(c, (3, 3), padding="SAME", dtype=self.dtype, kernels=k, name=f"merge{lvl}")
            out[lvl] = nn.relu(merge(merged))
        return out


@dataclasses.dataclass(frozen=True)
class NeckSpec:
    """What `config.model` says about the neck and the run (static, hashable)."""

    name: str  # a key of NECKS
    channels: int
    min_level: int
    max_level: int
    extra: str = "conv"  # FPN/PAN levels above the backbone's top: "conv" or "pool"
    norm: str = "batch"  # ssd_extras' norm (the backbone's)
    dtype: Any = jnp.float32
    axis_name: str | None = None
    kernels: str = "plain"
    depth: int = 1  # c2f_pan's bottlenecks per block (the detector's size sets it)


def _pyramid(cls: type[_Pyramid]) -> Callable[[NeckSpec, dict[int, jax.Array], bool], dict[int, jax.Array]]:
    """A NECKS entry for FPN or PAN (no norms, so `train` changes nothing)."""

    def neck(spec: NeckSpec, features: dict[int, jax.Array], train: bool) -> dict[int, jax.Array]:
        del train
        return cls(spec.channels, spec.min_level, spec.max_level, spec.dtype, spec.extra, spec.kernels)(features)

    return neck


def _ssd_extras(spec: NeckSpec, features: dict[int, jax.Array], train: bool) -> dict[int, jax.Array]:
    """SSD's extras: above the backbone's top, 1x1 (channels / 2) then stride-2 3x3 (channels)
    with the backbone's norm; the backbone's maps below it pass through unchanged.

    Built in the caller's scope (not a submodule), so SSD's parameter names are those it
    had before necks were swappable ("Conv_0", "BatchNorm_0", ...).
    """
    norm = make_norm(spec.norm, train, spec.dtype, spec.axis_name, kernels=spec.kernels)
    c, k = spec.channels, spec.kernels
    feats = dict(features)
    x = feats[max(feats)]
    for lvl in range(max(feats) + 1, spec.max_level + 1):
        x = nn.relu(norm()(Conv(c // 2, (1, 1), use_bias=False, dtype=spec.dtype, kernels=k)(x)))
        x = Conv(c, (3, 3), strides=2, padding="SAME", use_bias=False, dtype=spec.dtype, kernels=k)(x)
        feats[lvl] = nn.relu(norm()(x))
    return {lvl: feats[lvl] for lvl in range(spec.min_level, spec.max_level + 1)}


def _c2f_pan(spec: NeckSpec, features: dict[int, jax.Array], train: bool) -> dict[int, jax.Array]:
    """YOLOv8's neck (jaxdet/models/csp.py) with the backbone's norm; each level keeps the
    backbone's width (config.model.neck_channels is not read)."""
    if (spec.min_level, spec.max_level) != (3, 5) or not {3, 4, 5} <= set(features):
        raise ConfigError(
            f"the c2f_pan neck joins levels 3-5 (config.model.min_level=3, max_level=5); got levels "
            f"{spec.min_level}-{spec.max_level} over backbone levels {sorted(features)}"
        )
    norm = make_norm(spec.norm, train, spec.dtype, spec.axis_name, kernels=spec.kernels)
    return C2fPAN(spec.depth, norm, spec.dtype, spec.kernels)({lvl: features[lvl] for lvl in (3, 4, 5)})


NECKS: dict[str, Callable[[NeckSpec, dict[int, jax.Array], bool], dict[int, jax.Array]]] = {
    "fpn": _pyramid(FPN),
    "pan": _pyramid(PAN),
    "ssd_extras": _ssd_extras,
    "c2f_pan": _c2f_pan,
}


def apply_neck(spec: NeckSpec, features: dict[int, jax.Array], train: bool) -> dict[int, jax.Array]:
    """`NECKS[spec.name]` on backbone features; call inside a compact `__call__`."""
    if spec.name not in NECKS:
        raise ConfigError(f"unknown neck {spec.name!r} (config.model.neck); valid names: {sorted(NECKS)}")
    return NECKS[spec.name](spec, features, train)
