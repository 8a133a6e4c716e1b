"""A DETR-family set predictor after the neck (RT-DETR / Deformable-DETR style, with
dense attention, which the small feature maps here afford):

1. an encoder on the top level's tokens (RT-DETR's AIFI), the other levels as they are;
2. every memory token proposes a box relative to its cell (encoder class and box heads);
   the `num_queries` tokens of highest class score become the queries: their features
   the content, their boxes the reference boxes (RT-DETR's query selection);
3. `num_layers` decoder layers (self-attention, cross-attention to all memory tokens,
   FFN; post-norm), each refining the boxes in logit space (iterative refinement, the
   reference detached between layers) and predicting classes: auxiliary outputs;
4. in training, optionally, groups of denoising queries (noised ground truth) decoded
   beside the matching queries, behind an attention mask (models/heads/denoising.py).

Boxes are normalised (cx, cy, w, h) in [0, 1]. No dropout: the step's "sampling" key
only draws the denoising queries' noise (a pure function of seed, step and device).
"""

from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import Array

from jaxdet.models.heads import denoising


def inverse_sigmoid(x: Array, eps: float = 1e-5) -> Array:
    x = jnp.clip(x, eps, 1 - eps)
    return jnp.log(x / (1 - x))


def sine_position(h: int, w: int, dim: int, temperature: float = 10000.0) -> Array:
    """2-D sine position embedding [h * w, dim] of a grid's cell centres in [0, 1]."""
    ys, xs = jnp.meshgrid((jnp.arange(h) + 0.5) / h, (jnp.arange(w) + 0.5) / w, indexing="ij")
    quarter = dim // 4
    freq = temperature ** (-jnp.arange(quarter) / quarter)
    parts = []
    for coord in (xs.reshape(-1), ys.reshape(-1)):
        angle = 2 * math.pi * coord[:, None] * freq[None, :]
        parts += [jnp.sin(angle), jnp.cos(angle)]
    return jnp.concatenate(parts, axis=-1)


class MLP(nn.Module):
    hidden: int
    out: int
    layers: int = 3
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x):
        for i in range(self.layers - 1):
            x = nn.relu(nn.Dense(self.hidden, dtype=self.dtype, name=f"fc{i}")(x))
        return nn.Dense(self.out, dtype=self.dtype, name=f"fc{self.layers - 1}")(x)


class _Attention(nn.Module):
    heads: int
    dtype: Any

    @nn.compact
    def __call__(self, q, k, v, mask=None):
        attend = nn.MultiHeadDotProductAttention(num_heads=self.heads, dtype=self.dtype, deterministic=True)
        return attend(q, k, v, mask=mask)


class EncoderLayer(nn.Module):
    heads: int
    ffn: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x, pos):
        c = x.shape[-1]
        x = nn.LayerNorm(dtype=self.dtype)(x + _Attention(self.heads, self.dtype)(x + pos, x + pos, x))
        y = nn.Dense(c, dtype=self.dtype)(nn.gelu(nn.Dense(self.ffn, dtype=self.dtype)(x)))
        return nn.LayerNorm(dtype=self.dtype)(x + y)


class DecoderLayer(nn.Module):
    heads: int
    ffn: int
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, tgt, query_pos, memory, memory_pos, self_mask=None):
        c = tgt.shape[-1]
        q = tgt + query_pos
        attn = _Attention(self.heads, self.dtype, name="self_attn")(q, q, tgt, self_mask)
        tgt = nn.LayerNorm(dtype=self.dtype)(tgt + attn)
        cross = _Attention(self.heads, self.dtype, name="cross_attn")(tgt + query_pos, memory + memory_pos, memory)
        tgt = nn.LayerNorm(dtype=self.dtype)(tgt + cross)
        y = nn.Dense(c, dtype=self.dtype)(nn.gelu(nn.Dense(self.ffn, dtype=self.dtype)(tgt)))
        return nn.LayerNorm(dtype=self.dtype)(tgt + y)


class DETRHead(nn.Module):
    """{level: [B, H, W, C]} -> "cls_logits" [B, Q, K], "boxes" [B, Q, 4] (the last layer),
    "aux_cls_logits" [B, L - 1, Q, K], "aux_boxes" [B, L - 1, Q, 4] (the earlier layers),
    "enc_cls_logits" [B, Q, K], "enc_boxes" [B, Q, 4] (the selected proposals); with
    `quality_branch`, "quality_logits" [B, Q] (the last layer's). With `denoising` groups
    and ground truth (training), also "dn_cls_logits" [B, L, Qd, K], "dn_boxes"
    [B, L, Qd, 4] (every layer's) and the queries' targets "dn_slot" int32 [B, Qd],
    "dn_positive" and "dn_real" bool [B, Qd] (models/heads/denoising.py)."""

    num_logits: int
    num_queries: int = 100
    num_layers: int = 3
    heads: int = 4
    ffn: int = 256
    encoder_layers: int = 1
    quality_branch: bool = False  # a per-query confidence logit off the last layer
    prior_prob: float = 0.01
    dtype: Any = jnp.float32
    num_classes: int = 0  # (for the denoising queries' label embedding)
    denoising: int = 0  # groups of denoising queries in training; 0: none
    label_noise: float = 0.5
    box_noise: float = 1.0

    @nn.compact
    def __call__(self, features: dict[int, Array], ground_truth: tuple[Array, Array, Array] | None = None
                 ) -> dict[str, Array]:  # fmt: skip
        """ground_truth: (boxes [B, M, 4] normalised (cx, cy, w, h), labels [B, M], mask
        [B, M]) in training, for the denoising queries; None: matching queries only."""
        levels = sorted(features)
        c = features[levels[0]].shape[-1]
        bsz = features[levels[0]].shape[0]
        bias = nn.initializers.constant(-math.log((1 - self.prior_prob) / self.prior_prob))
        tokens, pos, anchors = [], [], []
        for i, lvl in enumerate(levels):
            x = features[lvl]
            h, w = x.shape[1:3]
            p = sine_position(h, w, c).astype(self.dtype)
            x = x.reshape(bsz, h * w, c)
            if lvl == levels[-1]:
                for j in range(self.encoder_layers):
                    x = EncoderLayer(self.heads, self.ffn, self.dtype, name=f"encoder{j}")(x, p[None])
            level_embed = self.param(f"level_embed{i}", nn.initializers.normal(0.02), (c,))
            tokens.append(x)
            pos.append(p + level_embed.astype(self.dtype))
            ys, xs = jnp.meshgrid((jnp.arange(h) + 0.5) / h, (jnp.arange(w) + 0.5) / w, indexing="ij")
            wh = jnp.full((h * w,), 0.05 * 2.0**i)  # RT-DETR's proposal sizes: 0.05 on the first level, doubling
            anchors.append(jnp.stack([xs.reshape(-1), ys.reshape(-1), wh, wh], -1))
        memory = jnp.concatenate(tokens, 1)  # [B, N, C]
        memory_pos = jnp.concatenate(pos, 0)[None]
        anchor_logits = inverse_sigmoid(jnp.concatenate(anchors, 0))[None]  # [1, N, 4]

        # Query selection: every token proposes; the best num_queries by class score go on.
        enc = nn.LayerNorm(dtype=self.dtype)(nn.Dense(c, dtype=self.dtype, name="enc_output")(memory))
        enc_cls = nn.Dense(self.num_logits, bias_init=bias, dtype=self.dtype, name="enc_cls")(enc)
        enc_box = MLP(c, 4, 3, self.dtype, name="enc_box")(enc) + anchor_logits
        k = min(self.num_queries, memory.shape[1])
        _, top = jax.lax.top_k(jnp.max(enc_cls, -1).astype(jnp.float32), k)  # [B, Q]
        take = lambda x: jnp.take_along_axis(x, top[..., None], axis=1)  # noqa: E731
        ref = jax.nn.sigmoid(jax.lax.stop_gradient(take(enc_box)).astype(jnp.float32))
        tgt = jax.lax.stop_gradient(take(enc))
        out = {"enc_cls_logits": take(enc_cls).astype(jnp.float32),
               "enc_boxes": jax.nn.sigmoid(take(enc_box).astype(jnp.float32))}  # fmt: skip

        qd, self_mask = 0, None
        if self.denoising:
            label_embed = nn.Embed(self.num_classes + 1, c, dtype=self.dtype, name="denoising_embed")
            if self.is_initializing():  # (its parameters exist whether or not this call has ground truth)
                label_embed(jnp.zeros((1,), jnp.int32))
        if self.denoising and ground_truth is not None:
            dn = denoising.make_queries(self.make_rng("sampling"), *ground_truth, self.denoising, self.num_classes,
                                        self.label_noise, self.box_noise)  # fmt: skip
            qd = dn.labels.shape[1]
            tgt = jnp.concatenate([label_embed(dn.labels), tgt.astype(self.dtype)], 1)
            ref = jnp.concatenate([dn.boxes, ref], 1)
            self_mask = denoising.attention_mask(dn.real, self.denoising, k)
            out.update(dn_slot=dn.slot, dn_positive=dn.positive, dn_real=dn.real)

        query_pos_head = MLP(2 * c, c, 2, self.dtype, name="query_pos")
        cls_all, box_all = [], []
        for i in range(self.num_layers):
            tgt = DecoderLayer(self.heads, self.ffn, self.dtype, name=f"decoder{i}")(
                tgt, query_pos_head(ref.astype(self.dtype)), memory, memory_pos, self_mask
            )
            delta = MLP(c, 4, 3, self.dtype, name=f"box{i}")(tgt).astype(jnp.float32)
            boxes = jax.nn.sigmoid(inverse_sigmoid(ref) + delta)
            logits = nn.Dense(self.num_logits, bias_init=bias, dtype=self.dtype, name=f"cls{i}")(tgt)
            cls_all.append(logits.astype(jnp.float32))
            box_all.append(boxes)
            ref = jax.lax.stop_gradient(boxes)  # each layer refines the previous layer's boxes
        if qd:
            out["dn_cls_logits"] = jnp.stack([x[:, :qd] for x in cls_all], 1)
            out["dn_boxes"] = jnp.stack([x[:, :qd] for x in box_all], 1)
            cls_all, box_all, tgt = [x[:, qd:] for x in cls_all], [x[:, qd:] for x in box_all], tgt[:, qd:]
        out["cls_logits"], out["boxes"] = cls_all[-1], box_all[-1]
        if self.quality_branch:
            out["quality_logits"] = nn.Dense(1, dtype=self.dtype, name="quality")(tgt)[..., 0].astype(jnp.float32)
        if self.num_layers > 1:
            out["aux_cls_logits"], out["aux_boxes"] = jnp.stack(cls_all[:-1], 1), jnp.stack(box_all[:-1], 1)
        return out
