"""SSD's heads (Liu et al. 2016): one 3x3 class conv and one 3x3 box conv per level."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
from jax import Array

from jaxdet.models.layers import Conv


def ssd_head(
    pyramid: dict[int, Array],
    num_logits: int,
    boxes_per_level: tuple[int, ...],
    quality_branch: bool = False,
    dtype: Any = jnp.float32,
    kernels: str = "plain",
) -> dict[str, Array]:
    """{level: [B, H, W, F]} -> "cls_logits" [B, A, K], "box_deltas" [B, A, 4] (and
    "quality_logits" [B, A]). Called inside the detector module's scope, so its convs keep
    SSD's parameter names ("cls_p3", "box_p3", ...)."""
    logits, deltas, quality = [], [], []
    for lvl, a in zip(sorted(pyramid), boxes_per_level):
        f = pyramid[lvl]
        bsz = f.shape[0]
        conv = lambda n, name: Conv(n, (3, 3), dtype=dtype, kernels=kernels, name=name)  # noqa: E731
        logits.append(conv(a * num_logits, f"cls_p{lvl}")(f).reshape(bsz, -1, num_logits))
        deltas.append(conv(a * 4, f"box_p{lvl}")(f).reshape(bsz, -1, 4))
        if quality_branch:
            quality.append(conv(a, f"quality_p{lvl}")(f).reshape(bsz, -1))
    cat = lambda xs: jnp.concatenate(xs, axis=1).astype(jnp.float32)  # noqa: E731
    out = {"cls_logits": cat(logits), "box_deltas": cat(deltas)}
    if quality:
        out["quality_logits"] = cat(quality)
    return out
