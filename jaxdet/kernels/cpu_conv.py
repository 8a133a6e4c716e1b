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
- 3x3 convolutions (padding 1, any stride) with many multiply-adds compute their weight
  gradient as nine matrix products, one per kernel tap, instead of XLA's weight-gradient
  convolution (which transposes its input to [C, H, W, N] first and runs as a convolution
  with a 64x64 window). Where that wins depends on the CPU family (`kernels.cpu_family`):
  * generic (measured on AMD EPYC, AVX2): only above ~6e9 multiply-adds, where XLA's is
    2.5-3.5x slower than the forward (64x64x256 -> 720: 391 -> 167 ms; 128x128x256 -> 256:
    747 -> 337 ms); below, XLA's is faster (64x64x256 -> 256: 61 ms vs 90 ms).
  * avx512_amx (measured on an Intel Xeon with AVX-512 and AMX): the products run on AVX-512
    kernels and win from ~1e9 multiply-adds, strided ones included (batch 2: 64x64x256 ->
    256: 196-284 -> 79-85 ms; 32x32x256 -> 256: 23-30 -> 15 ms; 128x128x64 -> 64: 88-94 ->
    71 ms; stride 2 128x128x128 -> 128: 56 -> 37 ms; 16x16x256 -> 256 (3e8): 3.7 vs 4.2 ms).
    There the products take the output gradient transposed once, [Cout, pixels] x [pixels,
    Cin]: XLA:CPU runs that layout at ~320 GFLOP/s against ~210 for a product contracting
    both operands' pixel axis (forward + both gradients, 64x64x256 -> 256: 84.5 -> 68.3 ms;
    torch 77 ms; 32x32x64 -> 64 at batch 32: 51.2 -> 43.1 ms), and many-pixel maps win
    from 2e8 multiply-adds.
  * avx512 (measured on an AMD EPYC Zen 4, AVX-512 without AMX): XLA's weight gradient is
    slow there too (the class conv 64x64x256 -> 720: 484 vs 283-291 ms by taps), and the
    transposed products beat the plain ones (in 19 of 25 shapes), but from 1e9 to 5e9
    multiply-adds taps and XLA's are within the run-to-run spread (64x64x256 -> 256: 140
    and 106 vs 109 and 115 ms) and the many-pixel rule loses (batch 32, 16x16x64 -> 64 and
    32x32x32 -> 32, 3e8: 13.3-14.4 vs 14.5-17.7 ms in four runs): the threshold and the
    layout of avx512_amx, without its many-pixel rule.

The kernel policy (`jaxdet.kernels`) chooses this module on a CPU mesh; any other
convolution (dilated, grouped, other layouts) goes to `lax.conv_general_dilated` unchanged.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from jaxdet import kernels

# Multiply-adds of a 3x3 convolution above which the per-tap weight gradient wins on
# XLA:CPU, per CPU family (module docstring): generic, crossing between 4.8e9 (slower) and
# 7.6e9 (faster); avx512_amx, between 3e8 (slower) and 1.2e9 (faster); avx512, at parity
# from 1.2e9 to 4.8e9 and faster above.
TAPS_WEIGHT_GRAD_ABOVE_MACS = {"avx512_amx": 1e9, "avx512": 1e9, "generic": 6e9}
# ... and, per family, (output pixels, multiply-adds) at or above both of which the taps win
# too: on avx512_amx (with the transposed products below) a many-pixel map's weight gradient
# is faster by taps from ~2e8 multiply-adds (batch 32, 16x16x64 -> 64: 13.0 -> 10.7 ms;
# 32x32x32 -> 32: 19.1 -> 12.1 ms; 8x32x32x128 -> 128 at 1.2e9: 43.6 -> 20.7 ms), while
# few-pixel ones are not (2x16x16x256 -> 256: 5.3 vs 5.5 ms; 2x32x32x128 -> 128: 4.7 vs 5.3);
# on avx512 (Zen 4) the same maps are slower by taps (13.3 -> 14.5, 14.4 -> 17.7 ms).
TAPS_MANY_PIXELS = {"avx512_amx": (8192, 2e8), "avx512": None, "generic": None}
# Whether the taps' products take the output gradient transposed once ([Cout, pixels] x
# [pixels, Cin], faster with AVX-512: `_conv3x3_taps_bwd`), or contract both operands' pixel
# axis (as measured on generic CPUs, where a transposed copy cost ~15 ms per 8 MB map).
TAPS_TRANSPOSED_GRADIENT = {"avx512_amx": True, "avx512": True, "generic": False}

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
        if rhs.shape[:2] == (3, 3) and pads == ((1, 1), (1, 1)):
            stride = tuple(int(s) for s in window_strides)
            out_pixels = lhs.shape[0] * (-(-lhs.shape[1] // stride[0])) * (-(-lhs.shape[2] // stride[1]))
            if takes_taps(out_pixels, out_pixels * rhs.size):
                return _conv3x3_taps(lhs, rhs, stride, precision, TAPS_TRANSPOSED_GRADIENT[kernels.cpu_family()])
    return lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
        feature_group_count, precision=precision, **kwargs,
    )  # fmt: skip


def taps_above_macs() -> float:
    """The multiply-adds above which a 3x3 weight gradient is taken by taps, on this host's CPU."""
    return TAPS_WEIGHT_GRAD_ABOVE_MACS[kernels.cpu_family()]


def takes_taps(out_pixels: int, macs: float) -> bool:
    """Whether a 3x3 convolution with `out_pixels` output pixels (batch included) and `macs`
    multiply-adds takes its weight gradient by taps on this host's CPU."""
    many = TAPS_MANY_PIXELS[kernels.cpu_family()]
    return macs > taps_above_macs() or (many is not None and out_pixels >= many[0] and macs >= many[1])


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


def _conv3x3_plain(x, w, stride, precision, transposed_gradient=False):
    # (`transposed_gradient` is the taps backward's layout choice: the forward ignores it.)
    return lax.conv_general_dilated(x, w, stride, ((1, 1), (1, 1)), dimension_numbers=_NHWC, precision=precision)


def _conv3x3_taps_fwd(x, w, stride, precision, transposed_gradient):
    return _conv3x3_plain(x, w, stride, precision), (x, w)


def _conv3x3_taps_bwd(stride, precision, transposed_gradient, res, g):
    x, w = res
    # Input gradient: XLA's own (the transposed convolution, as autodiff would build it).
    _, vjp_x = jax.vjp(lambda x: _conv3x3_plain(x, w, stride, precision), x)
    (dx,) = vjp_x(g)
    # Weight gradient, tap (i, j): sum over output pixels p of x at (stride * p + (i, j) - 1) times g at p.
    # A scan over the nine taps, so that one shifted copy of x is alive at a time (as nine
    # independent products, XLA kept all nine: +1.1 GB peak in a RetinaNet-R50 step).
    # `transposed_gradient` (both AVX-512 families): each tap's product is [Cout, pixels] x
    # [pixels, Cin], with g transposed once before the loop. XLA:CPU multiplies [M, K] x
    # [K, N] operands ~1.5x faster there than a product contracting both operands' leading
    # axis (8192x256 by 8192x256: 209 vs 319 GFLOP/s), and one transposed copy of g costs
    # less than it saves over nine taps (64x64x256 -> 256 weight gradient: 50.9 -> 38.9 ms).
    b, _, _, c = x.shape
    _, ho, wo, co = g.shape
    (sy, sx) = stride
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    g2 = jnp.transpose(g.reshape(-1, co)) if transposed_gradient else g.reshape(-1, co)  # [Cout, P] or [P, Cout]
    window = (b, sy * (ho - 1) + 1, sx * (wo - 1) + 1, c)

    def tap(carry, offset):
        xs = lax.dynamic_slice(xp, (0, offset[0], offset[1], 0), window)[:, ::sy, ::sx].reshape(-1, c)
        if transposed_gradient:  # (the product's transpose stays outside the loop: inside, XLA folds it back)
            return carry, lax.dot(g2, xs, precision=precision)  # [Cout, Cin]
        return carry, lax.dot_general(xs, g2, (((0,), (0,)), ((), ())), precision=precision)  # [Cin, Cout]

    offsets = jnp.array([(i, j) for i in range(3) for j in range(3)], jnp.int32)
    dw = lax.scan(tap, None, offsets)[1]
    if transposed_gradient:
        dw = jnp.transpose(dw, (0, 2, 1))
    return dx, dw.reshape(3, 3, c, co).astype(w.dtype)  # [3, 3, Cin, Cout]


_conv3x3_taps = jax.custom_vjp(_conv3x3_plain, nondiff_argnums=(2, 3, 4))
_conv3x3_taps.defvjp(_conv3x3_taps_fwd, _conv3x3_taps_bwd)
