"""Convolution forms whose gradients XLA:CPU runs faster (the "cpu" kernel form, see kernels).

`conv_general_dilated` is a drop-in for `lax.conv_general_dilated` in `nn.Conv` (see
`layers.Conv`): same arguments, same values, same parameters; only the way the backward
pass is computed changes, and only on CPU. Each form was measured on a 2-core x86 machine
with jax 0.10.2 (BENCHMARKS.md):

- 1x1 convolutions are matrix products over the pixels, with their backward written out.
  XLA:CPU runs a 1x1 convolution's gradients as generic convolutions (1.5-3x slower than the
  same products), and autodiff of the `einsum` form makes it write the incoming gradient
  transposed ([C, pixels]) before the weight-gradient product: ~15 ms per 8 MB map in
  ResNet-50's layer3. The explicit `dot_general(x, g)` over the pixel axis has no
  transpose: ResNet-50 stages fwd+bwd 842 -> 522 ms (layer1), 843 -> 654 ms (layer3).
- 3x3 stride-1 convolutions with many multiply-adds (RetinaNet's classification conv at
  P3, Faster R-CNN's RPN and FPN convs at P2) compute their weight gradient as nine matrix
  products, one per kernel tap, instead of XLA's weight-gradient convolution, which is
  2.5-3.5x slower than the forward at those sizes (64x64x256 -> 720: 391 -> 167 ms;
  128x128x256 -> 256: 747 -> 337 ms). Smaller ones keep XLA's (faster there: 64x64x256
  -> 256: 61 ms vs 90 ms).

The kernel policy (`jaxdet.kernels`) chooses this module on a CPU mesh; any other
convolution (dilated, grouped, other layouts) goes to `lax.conv_general_dilated` unchanged.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

# Multiply-adds of a 3x3 convolution above which the per-tap weight gradient wins on
# XLA:CPU (measured crossing: 4.8e9 slower, 7.6e9 faster; see the module docstring).
TAPS_WEIGHT_GRAD_ABOVE_MACS = 6e9

# flax's NHWC x HWIO -> NHWC, as `lax.conv_dimension_numbers` spells it.
_NHWC = lax.ConvDimensionNumbers(lhs_spec=(0, 3, 1, 2), rhs_spec=(3, 2, 0, 1), out_spec=(0, 3, 1, 2))


def conv_general_dilated(
    lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None, dimension_numbers=None,
    feature_group_count=1, precision=None, **kwargs,
):  # fmt: skip
    """`lax.conv_general_dilated` (NHWC x HWIO, as flax calls it), in the forms above where they apply.

    lhs: [B, H, W, Cin]; rhs: [kh, kw, Cin, Cout] -> [B, H', W', Cout].
    """
    if not _is_plain(lhs, rhs, lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count, kwargs):
        pads = _pads(padding, lhs, rhs, window_strides)
        if rhs.shape[:2] == (1, 1) and pads == ((0, 0), (0, 0)):
            sy, sx = window_strides
            x = lhs[:, ::sy, ::sx] if (sy, sx) != (1, 1) else lhs  # a strided 1x1 conv subsamples
            return _pointwise_mm(x, rhs[0, 0], precision)
        same_3x3 = rhs.shape[:2] == (3, 3) and tuple(window_strides) == (1, 1) and pads == ((1, 1), (1, 1))
        if same_3x3 and lhs.shape[0] * lhs.shape[1] * lhs.shape[2] * rhs.size > TAPS_WEIGHT_GRAD_ABOVE_MACS:
            return _conv3x3_taps(lhs, rhs, precision)
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
        feature_group_count, precision=precision, **kwargs,
    )  # fmt: skip


def _is_plain(lhs, rhs, lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count, kwargs) -> bool:
    """True where the CPU forms do not apply (layouts, dilations, groups)."""
    return (
        lhs.ndim != 4
        or rhs.ndim != 4
        or feature_group_count != 1
        or bool(kwargs)  # e.g. preferred_element_type: leave it to lax
        or any(d != 1 for d in (lhs_dilation or ()))
        or any(d != 1 for d in (rhs_dilation or ()))
        or (
            dimension_numbers is not None
            and lax.conv_dimension_numbers(lhs.shape, rhs.shape, dimension_numbers) != _NHWC
        )
    )


def _pads(padding, lhs, rhs, window_strides) -> tuple[tuple[int, int], ...]:
    if isinstance(padding, str):
        padding = lax.padtype_to_pads(lhs.shape[1:3], rhs.shape[:2], window_strides, padding)
    return tuple((int(lo), int(hi)) for lo, hi in padding)


def _pointwise_plain(x, w, precision):
    return jnp.einsum("bhwi,io->bhwo", x, w, precision=precision)


def _pointwise_fwd(x, w, precision):
    return _pointwise_plain(x, w, precision), (x, w)


def _pointwise_bwd(precision, res, g):
    x, w = res
    dx = jnp.einsum("bhwo,io->bhwi", g, w, precision=precision)
    # (x, g) in this order, contracting the pixels: no transposed copy of g (module docstring).
    dw = lax.dot_general(
        x.reshape(-1, x.shape[-1]), g.reshape(-1, g.shape[-1]), (((0,), (0,)), ((), ())), precision=precision
    )
    return dx, dw.astype(w.dtype)


_pointwise_mm = jax.custom_vjp(_pointwise_plain, nondiff_argnums=(2,))
_pointwise_mm.defvjp(_pointwise_fwd, _pointwise_bwd)


def _conv3x3_plain(x, w, precision):
    return lax.conv_general_dilated(x, w, (1, 1), ((1, 1), (1, 1)), dimension_numbers=_NHWC, precision=precision)


def _conv3x3_taps_fwd(x, w, precision):
    return _conv3x3_plain(x, w, precision), (x, w)


def _conv3x3_taps_bwd(precision, res, g):
    x, w = res
    # Input gradient: XLA's own (the transposed convolution, as autodiff would build it).
    _, vjp_x = jax.vjp(lambda x: _conv3x3_plain(x, w, precision), x)
    (dx,) = vjp_x(g)
    # Weight gradient, tap (i, j): sum over pixels of x shifted by (i-1, j-1) times g.
    b, h, wd, c = x.shape
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    g2 = g.reshape(-1, g.shape[-1])
    taps = [
        [
            lax.dot_general(
                xp[:, i : i + h, j : j + wd].reshape(-1, c), g2, (((0,), (0,)), ((), ())), precision=precision
            )
            for j in range(3)
        ]
        for i in range(3)
    ]
    dw = jnp.stack([jnp.stack(row) for row in taps])  # [3, 3, Cin, Cout]
    return dx, dw.astype(w.dtype)


_conv3x3_taps = jax.custom_vjp(_conv3x3_plain, nondiff_argnums=(2,))
_conv3x3_taps.defvjp(_conv3x3_taps_fwd, _conv3x3_taps_bwd)
