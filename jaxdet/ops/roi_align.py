"""RoIAlign (He et al. 2017) on NHWC features, with torchvision.ops.roi_align's values.

Static shapes: K regions, a fixed output size and a fixed `sampling_ratio` (samples per
bin side), so it jit-compiles and differentiates with respect to the features (the
gathers transpose to scatter-adds). Sample points outside the map contribute zero, as in
torchvision; points within one pixel of the border are clamped to it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import Array
from jax.typing import ArrayLike

from jaxdet.kernels import check_form


def _axis_samples(start: Array, length: Array, bins: int, ratio: int) -> Array:
    """Sample coordinates along one axis: [K, bins * ratio], bin-major."""
    bin_size = length / bins  # [K]
    steps = (jnp.arange(bins)[:, None] + (jnp.arange(ratio)[None, :] + 0.5) / ratio).reshape(-1)
    return start[:, None] + steps[None, :] * bin_size[:, None]


def _corners(coord: Array, size: int) -> tuple[Array, Array, Array, Array, Array]:
    """torchvision's bilinear set-up along one axis: (low, high, w_low, w_high, valid)."""
    valid = (coord >= -1.0) & (coord <= size)
    c = jnp.maximum(coord, 0.0)
    low = jnp.floor(c).astype(jnp.int32)
    at_edge = low >= size - 1
    low = jnp.where(at_edge, size - 1, low)
    high = jnp.where(at_edge, size - 1, low + 1)
    c = jnp.where(at_edge, low.astype(c.dtype), c)
    frac = c - low
    return low, high, 1.0 - frac, frac, valid


def _roi_geometry(boxes: Array, spatial_scale: float, aligned: bool) -> tuple[Array, Array, Array, Array]:
    """xyxy boxes [..., 4] in roi units -> (x1, y1, width, height) in feature pixels, torchvision's way."""
    offset = 0.5 if aligned else 0.0
    x1, y1 = boxes[..., 0] * spatial_scale - offset, boxes[..., 1] * spatial_scale - offset
    x2, y2 = boxes[..., 2] * spatial_scale - offset, boxes[..., 3] * spatial_scale - offset
    roi_w, roi_h = x2 - x1, y2 - y1
    if not aligned:  # The legacy mapping forces rois to at least one pixel.
        roi_w, roi_h = jnp.maximum(roi_w, 1.0), jnp.maximum(roi_h, 1.0)
    return x1, y1, roi_w, roi_h


def roi_align(
    features: ArrayLike,
    rois: ArrayLike,
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = 2,
    aligned: bool = True,
) -> Array:
    """Pools `features` [B, H, W, C] inside `rois` [K, 5] (batch_index, x1, y1, x2, y2).

    Args:
      output_size: (oh, ow) or an int. spatial_scale: feature pixels per roi unit (1/stride).
      sampling_ratio: samples per bin side; must be > 0 (torchvision's adaptive
        ceil(roi/bin) count is data-dependent, so it has no static shape).
      aligned: shift by -0.5 pixel so box corners fall on pixel corners (torchvision's
        aligned=True); False reproduces the original Mask R-CNN mapping.
    Returns:
      [K, oh, ow, C], the same values as torchvision.ops.roi_align (NCHW) transposed.
    """
    if sampling_ratio <= 0:
        raise ValueError(f"sampling_ratio must be positive for static shapes, got {sampling_ratio}")
    features = jnp.asarray(features)
    rois = jnp.asarray(rois, jnp.float32)
    b, height, width, c = features.shape
    k = rois.shape[0]
    x1, y1, roi_w, roi_h = _roi_geometry(rois[:, 1:], spatial_scale, aligned)
    sizes = (jnp.full((k,), height), jnp.full((k,), width), jnp.zeros((k,), jnp.int32))
    return _bilinear_pool(
        features.reshape(b, height * width, c), rois[:, 0].astype(jnp.int32), sizes, (x1, y1, roi_w, roi_h),
        output_size, sampling_ratio,
    )  # fmt: skip


def _bilinear_pool(
    flat: Array,
    batch: Array,
    sizes: tuple[Array, Array, Array],
    geometry: tuple[Array, Array, Array, Array],
    output_size: int | tuple[int, int],
    sampling_ratio: int,
) -> Array:
    """RoIAlign by gathers: flat [B, N, C] holds one or more row-major maps; region k reads
    the map of `sizes` = (height [K], width [K], offset [K] into N) of image batch[k], with
    `geometry` = (x1, y1, width, height) [K] in that map's pixels. -> [K, oh, ow, C]."""
    oh, ow = (output_size, output_size) if isinstance(output_size, int) else output_size
    height, width, offset = sizes
    x1, y1, roi_w, roi_h = geometry
    ys = _axis_samples(y1, roi_h, oh, sampling_ratio)  # [K, Ny]
    xs = _axis_samples(x1, roi_w, ow, sampling_ratio)  # [K, Nx]
    y_lo, y_hi, wy_lo, wy_hi, y_ok = _corners(ys, height[:, None])
    x_lo, x_hi, wx_lo, wx_hi, x_ok = _corners(xs, width[:, None])
    b = batch[:, None, None]
    row_start = offset[:, None, None]
    out = 0.0
    for yi, wy in ((y_lo, wy_lo), (y_hi, wy_hi)):
        for xi, wx in ((x_lo, wx_lo), (x_hi, wx_hi)):
            index = row_start + yi[:, :, None] * width[:, None, None] + xi[:, None, :]
            values = flat[b, index]  # [K, Ny, Nx, C]
            out = out + (wy[:, :, None] * wx[:, None, :])[..., None] * values
    ok = (y_ok[:, :, None] & x_ok[:, None, :])[..., None]
    out = jnp.where(ok, out, 0.0)
    k, _, _, c = out.shape
    out = out.reshape(k, oh, sampling_ratio, ow, sampling_ratio, c)
    return out.mean(axis=(2, 4)).astype(flat.dtype)


def fpn_levels(
    boxes: ArrayLike,
    min_level: int,
    max_level: int,
    canonical_size: float = 224.0,
    canonical_level: int = 4,
) -> Array:
    """FPN level per box (Lin et al. 2017, eq. 1): floor(4 + log2(sqrt(area) / 224)), clamped.

    boxes: [K, 4] xyxy in image pixels -> int32 [K], as torchvision's LevelMapper (eps 1e-6).
    """
    boxes = jnp.asarray(boxes, jnp.float32)
    area = jnp.maximum((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]), 1e-12)
    level = jnp.floor(canonical_level + jnp.log2(jnp.sqrt(area) / canonical_size) + 1e-6)
    return jnp.clip(level, min_level, max_level).astype(jnp.int32)


def _axis_weights(start: Array, length: Array, bins: int, ratio: int, size: int) -> Array:
    """Bilinear weights of each output bin over one feature axis: [..., bins, size].

    Row i holds the average, over the bin's `ratio` samples, of each sample's two
    bilinear weights (torchvision's corner rules, zero for samples off the map), so
    pooling along the axis is one matrix product.
    """
    coords = _axis_samples(start.reshape(-1), length.reshape(-1), bins, ratio)  # [K, bins*ratio]
    low, high, w_low, w_high, valid = _corners(coords, size)
    grid = jnp.arange(size)
    w = w_low[..., None] * (low[..., None] == grid) + w_high[..., None] * (high[..., None] == grid)
    w = jnp.where(valid[..., None], w, 0.0).reshape(-1, bins, ratio, size).mean(axis=2)
    return w.reshape(*start.shape, bins, size)


def roi_align_per_image(
    features: ArrayLike,
    boxes: ArrayLike,
    output_size: int | tuple[int, int],
    spatial_scale: float = 1.0,
    sampling_ratio: int = 2,
    aligned: bool = True,
) -> Array:
    """`roi_align` for R boxes per image, as two matrix products: no gathers or scatters.

    features [B, H, W, C], boxes [B, R, 4] xyxy (box r of image b pools from image b)
    -> [B, R, oh, ow, C], equal to `roi_align` on the flattened rois. Bilinear sampling
    and the bin average are separable in y and x, so pooling is
    `Wy[b,r] @ features[b] @ Wx[b,r]^T`; its gradient is matrix products too, which run
    far faster on every backend than the scatter-adds a gather's transpose becomes.
    """
    if sampling_ratio <= 0:
        raise ValueError(f"sampling_ratio must be positive for static shapes, got {sampling_ratio}")
    features = jnp.asarray(features)
    boxes = jnp.asarray(boxes, jnp.float32)
    oh, ow = (output_size, output_size) if isinstance(output_size, int) else output_size
    _, height, width, _ = features.shape
    x1, y1, roi_w, roi_h = _roi_geometry(boxes, spatial_scale, aligned)
    wy = _axis_weights(y1, roi_h, oh, sampling_ratio, height).astype(features.dtype)  # [B, R, oh, H]
    wx = _axis_weights(x1, roi_w, ow, sampling_ratio, width).astype(features.dtype)  # [B, R, ow, W]
    # These products stand in for gathers: at float32 they run at full precision (TF32 on
    # recent NVIDIA GPUs would move the outputs in the third digit).
    precision = jax.lax.Precision.HIGHEST if features.dtype == jnp.float32 else None
    rows = jnp.einsum("bryh,bhwc->brywc", wy, features, precision=precision)  # contract the map's height first
    return jnp.einsum("brywc,brxw->bryxc", rows, wx, precision=precision)


# The "cpu" kernel form pools each box by gathers from its own level only (one gather and,
# in the gradient, one scatter-add per box, from the concatenated pyramid). The "plain" form
# pools every box from every level in the matrix form and selects: scatter-adds are the slow
# part on GPUs, while on XLA:CPU the matrix form's cost grows with the map (R x 7 x H x W x C
# multiply-adds per level: 60 GFLOP at P2 for 1024 RoIs at 512 px) and its gradient is
# mostly transposes. Measured on the 512-px Faster R-CNN-R50 step (BENCHMARKS.md).


def multilevel_roi_align(
    pyramid: dict[int, Array],
    boxes: ArrayLike,
    output_size: int | tuple[int, int],
    sampling_ratio: int = 2,
    aligned: bool = True,
    kernels: str = "plain",
) -> Array:
    """RoIAlign from the FPN level each box maps to (`fpn_levels`): pyramid {level: [B, H_l,
    W_l, C]} with consecutive levels, boxes [B, R, 4] in image pixels -> [B, R, oh, ow, C].

    `kernels="cpu"` pools each box from its level only (gathers); "plain" pools every
    level and selects (the same values)."""
    boxes = jnp.asarray(boxes, jnp.float32)
    levels = sorted(pyramid)
    if levels != list(range(levels[0], levels[-1] + 1)):
        raise ValueError(f"multilevel_roi_align needs consecutive pyramid levels, got {levels}")
    assigned = fpn_levels(boxes.reshape(-1, 4), levels[0], levels[-1]).reshape(boxes.shape[:-1])
    if check_form(kernels) == "cpu":
        return _pool_assigned_levels(pyramid, boxes, assigned, output_size, sampling_ratio, aligned)
    out = None
    for lvl in levels:
        pooled = roi_align_per_image(pyramid[lvl], boxes, output_size, 1.0 / 2**lvl, sampling_ratio, aligned)
        pick = (assigned == lvl)[..., None, None, None]
        out = jnp.where(pick, pooled, 0.0 if out is None else out)
    return out


def _pool_assigned_levels(pyramid, boxes, assigned, output_size, sampling_ratio, aligned) -> Array:
    """Each box pooled from its assigned level only, by gathers from the levels concatenated
    into one [B, sum(H_l W_l), C] array: the same values as pooling every level and selecting."""
    levels = sorted(pyramid)
    b, r = boxes.shape[:2]
    c = pyramid[levels[0]].shape[-1]
    flat = jnp.concatenate([pyramid[lvl].reshape(b, -1, c) for lvl in levels], axis=1)
    heights = [pyramid[lvl].shape[1] for lvl in levels]
    widths = [pyramid[lvl].shape[2] for lvl in levels]
    offsets = [sum(h * w for h, w in zip(heights[:i], widths[:i])) for i in range(len(levels))]
    which = (assigned - levels[0]).reshape(-1)  # [K] index into levels
    table = lambda values: jnp.asarray(values, jnp.int32)[which]  # noqa: E731
    scale = jnp.exp2(-assigned.reshape(-1).astype(jnp.float32))  # 1 / stride, exact
    geometry = _roi_geometry(boxes.reshape(-1, 4), scale, aligned)
    batch = jnp.repeat(jnp.arange(b, dtype=jnp.int32), r)
    sizes = (table(heights), table(widths), table(offsets))
    pooled = _bilinear_pool(flat, batch, sizes, geometry, output_size, sampling_ratio)
    return pooled.reshape(b, r, *pooled.shape[1:])
