"""Small building blocks shared by backbones, necks and heads."""

from __future__ import annotations

import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

from jaxdet.errors import ConfigError
from jaxdet.kernels import check_form, cpu_conv

NORMS = ("batch", "frozen_batch", "group", "none")


def make_norm(
    kind: str, train: bool, dtype: Any, axis_name: str | None = None, groups: int = 32, kernels: str = "plain"
):
    """A norm-layer factory: kind in NORMS; `kernels` is the resolved kernel form (BatchNorm's backward).

    BatchNorm keeps running statistics in the `batch_stats` collection; with
    `axis_name` set, its batch statistics are averaged over that mesh axis (sync BN).
    "frozen_batch" is a fixed affine map (torchvision's FrozenBatchNorm2d), for a
    pretrained backbone: its statistics and scale/bias are not trained.
    GroupNorm has no state, so it is independent of the per-device batch.
    """
    if kind == "batch" and axis_name is None:
        return functools.partial(
            BatchNorm, use_running_average=not train, momentum=0.9, epsilon=1e-5, dtype=dtype, kernels=kernels
        )
    if kind == "batch":
        return functools.partial(
            nn.BatchNorm,
            use_running_average=not train,
            momentum=0.9,
            epsilon=1e-5,
            dtype=dtype,
            axis_name=axis_name,
        )
    if kind == "frozen_batch":
        return functools.partial(FrozenBatchNorm, epsilon=1e-5, dtype=dtype)
    if kind == "group":
        return lambda name=None: _GroupNormAuto(groups=groups, dtype=dtype, name=name)
    if kind == "none":
        return lambda name=None: _identity
    raise ConfigError(f"unknown norm {kind!r}; valid: {NORMS}")


class _GroupNormAuto(nn.Module):
    """GroupNorm with min(groups, channels) groups, so narrow test models still work."""

    groups: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        channels = x.shape[-1]
        g = self.groups
        while channels % g:
            g //= 2
        # epsilon 1e-5: torch's (flax's default is 1e-6), so converted weights compute alike.
        return nn.GroupNorm(num_groups=max(g, 1), epsilon=1e-5, dtype=self.dtype)(x)


class FrozenBatchNorm(nn.Module):
    """y = (x - mean) / sqrt(var + eps) * scale + bias with all four fixed.

    They live in the `batch_stats` collection, which the optimizer never sees and which
    this module never updates, so training leaves them as loaded (see models/convert.py).
    `scale_init` is accepted for interface parity with nn.BatchNorm and ignored.
    """

    epsilon: float = 1e-5
    dtype: Any = jnp.float32
    scale_init: Any = None

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        scale = self.variable("batch_stats", "scale", jnp.ones, (c,), jnp.float32).value
        bias = self.variable("batch_stats", "bias", jnp.zeros, (c,), jnp.float32).value
        mean = self.variable("batch_stats", "mean", jnp.zeros, (c,), jnp.float32).value
        var = self.variable("batch_stats", "var", jnp.ones, (c,), jnp.float32).value
        return _fixed_norm(x, scale, bias, mean, var, self.epsilon, self.dtype)


def _fixed_norm(x, scale, bias, mean, var, epsilon: float, dtype):
    """(x - mean) / sqrt(var + eps) * scale + bias, folded into one multiply-add (as
    FrozenBatchNorm2d does): frozen norms and BatchNorm at evaluation."""
    mul = scale * jax.lax.rsqrt(var + epsilon)
    return (x * mul.astype(dtype) + (bias - mean * mul).astype(dtype)).astype(dtype)


def _identity(x):
    return x


# The convolution each kernel form builds nn.Conv with (same parameters and values).
_CONV_FORMS = {"cpu": cpu_conv.conv_general_dilated, "plain": lax.conv_general_dilated}


def Conv(*args, kernels: str = "plain", **kwargs) -> nn.Conv:  # noqa: N802 (stands in for the class)
    """nn.Conv whose convolution is the `kernels` form ("cpu": kernels/cpu_conv.py, "plain": lax).

    Every convolution in jaxdet's models is built here; the module is an nn.Conv, so
    parameter names and values do not depend on the form.
    """
    return nn.Conv(*args, conv_general_dilated=_CONV_FORMS[check_form(kernels)], **kwargs)


def conv3x3(features: int, kernels: str = "plain", **kwargs) -> nn.Conv:
    """Symmetric padding 1 (torchvision's), not "SAME": at stride 2 "SAME" pads only the
    bottom/right and samples a grid shifted by a pixel, so pretrained torchvision weights
    would not match."""
    return Conv(features, kernel_size=(3, 3), padding=1, use_bias=False, kernels=kernels, **kwargs)


def conv1x1(features: int, kernels: str = "plain", **kwargs) -> nn.Conv:
    return Conv(features, kernel_size=(1, 1), padding="SAME", use_bias=False, kernels=kernels, **kwargs)


def max_pool_3x3_s2(x, kernels: str = "plain"):
    """ResNet's stem max-pool (3x3, stride 2, padding 1 as torchvision): [B, H, W, C] ->
    [B, ceil(H/2), ceil(W/2), C].

    The "cpu" form is the maximum of nine strided slices, with its backward written out: the gradient
    goes to the first maximum of each window (as reduce_window's select_and_scatter does),
    assembled as four stride-2 phases of the input grid. XLA:CPU runs select_and_scatter
    ~4x slower, and autodiff of the nine-slice maximum is one fusion recomputing the chain
    of maxima for every input pixel (backward 105 ms -> ~53 ms on 2x256x256x64, ResNet-50's
    stem fwd+bwd 247 -> 185 ms; BENCHMARKS.md).
    """
    if check_form(kernels) == "plain":  # reduce_window
        return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))
    return _max_pool_cpu(x)


def _max_pool_windows(x):
    h, w = x.shape[1:3]
    ho, wo = (h - 1) // 2 + 1, (w - 1) // 2 + 1
    padded = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), constant_values=-jnp.inf)
    # Window offsets in row-major order, so that "first maximum" means reduce_window's.
    return [padded[:, i : i + 2 * ho - 1 : 2, j : j + 2 * wo - 1 : 2] for i in range(3) for j in range(3)]


def _max_pool_fwd(x):
    windows = _max_pool_windows(x)
    out, first = windows[0], jnp.zeros(windows[0].shape, jnp.int8)
    for k, window in enumerate(windows[1:], start=1):
        first = jnp.where(window > out, jnp.int8(k), first)
        out = jnp.maximum(out, window)
    return out, (first, x.shape)


def _max_pool_bwd(res, g):
    first, (b, h, w, c) = res
    ho, wo = g.shape[1:3]
    # Padded input row 2u + p receives window row i = p (p = 1) or i in {0, 2} from output
    # rows u and u - 1 (p = 0); likewise for columns. shift 1 = from the previous output row.
    taps = {0: ((0, 0), (2, 1)), 1: ((1, 0),)}

    def shifted(a, rows, cols):
        return jnp.pad(a, ((0, 0), (rows, 1 - rows), (cols, 1 - cols), (0, 0)))

    phases = []
    for pr in (0, 1):
        for pc in (0, 1):
            total = None
            for i, si in taps[pr]:
                for j, sj in taps[pc]:
                    part = shifted(jnp.where(first == 3 * i + j, g, 0), si, sj)
                    total = part if total is None else total + part
            phases.append(total)  # [B, ho + 1, wo + 1, C]
    grid = jnp.stack(phases).reshape(2, 2, b, ho + 1, wo + 1, c).transpose(2, 3, 0, 4, 1, 5)
    grid = grid.reshape(b, 2 * ho + 2, 2 * wo + 2, c)
    return (grid[:, 1 : 1 + h, 1 : 1 + w],)


_max_pool_cpu = jax.custom_vjp(lambda x: _max_pool_fwd(x)[0])
_max_pool_cpu.defvjp(_max_pool_fwd, _max_pool_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _batch_norm_train(x, scale, bias, epsilon):
    return _batch_norm_fwd(x, scale, bias, epsilon)[0]


def _batch_norm_fwd(x, scale, bias, epsilon):
    axes = tuple(range(x.ndim - 1))
    x32 = x.astype(jnp.float32)
    mean = jnp.mean(x32, axes)
    var = jnp.maximum(jnp.mean(jnp.square(x32), axes) - jnp.square(mean), 0.0)  # flax's fast variance
    inv = jax.lax.rsqrt(var + epsilon)
    xhat = (x32 - mean) * inv
    return ((xhat * scale + bias).astype(x.dtype), mean, var), (xhat, inv, scale)


def _batch_norm_bwd(epsilon, res, cotangents):
    # The closed form (Ioffe & Szegedy 2015); the mean/var outputs only feed the running
    # averages under stop_gradient, so their cotangents are zero and ignored.
    xhat, inv, scale = res
    g = cotangents[0].astype(jnp.float32)
    axes = tuple(range(g.ndim - 1))
    n = g.size // g.shape[-1]
    dbias = jnp.sum(g, axes)
    dscale = jnp.sum(g * xhat, axes)
    dx = (scale * inv) * (g - (dbias + xhat * dscale) / n)
    return dx.astype(cotangents[0].dtype), dscale, dbias


_batch_norm_train.defvjp(lambda x, s, b, e: _batch_norm_fwd(x, s, b, e), _batch_norm_bwd)


class BatchNorm(nn.Module):
    """nn.BatchNorm over the local batch (same variables: params scale/bias, batch_stats
    mean/var; same statistics and running averages) with its backward written out.

    XLA:CPU runs the autodiff backward of BatchNorm as several unfused passes over the
    activations; the closed form is ~1.5x faster there. `kernels="cpu"` takes it, "plain"
    autodiff of the same forward. Sync BN (an axis name) keeps nn.BatchNorm, whose collectives autodiff
    handles.
    """

    use_running_average: bool
    momentum: float = 0.9
    epsilon: float = 1e-5
    dtype: Any = jnp.float32
    scale_init: Any = nn.initializers.ones
    kernels: str = "plain"

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        scale = self.param("scale", self.scale_init, (c,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        ra_mean = self.variable("batch_stats", "mean", jnp.zeros, (c,), jnp.float32)
        ra_var = self.variable("batch_stats", "var", jnp.ones, (c,), jnp.float32)
        if self.use_running_average:
            return _fixed_norm(x, scale, bias, ra_mean.value, ra_var.value, self.epsilon, self.dtype)
        # The hand-written backward is the "cpu" form (measured on XLA:CPU); "plain" is autodiff.
        cpu = check_form(self.kernels) == "cpu"
        fn = _batch_norm_train if cpu else lambda *a: _batch_norm_fwd(*a)[0]
        y, mean, var = fn(x.astype(self.dtype), scale, bias, self.epsilon)
        if not self.is_initializing():
            mean, var = jax.lax.stop_gradient(mean), jax.lax.stop_gradient(var)
            ra_mean.value = self.momentum * ra_mean.value + (1 - self.momentum) * mean
            ra_var.value = self.momentum * ra_var.value + (1 - self.momentum) * var
        return y
