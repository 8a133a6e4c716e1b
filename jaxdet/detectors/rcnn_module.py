"""Faster R-CNN's module with every shape static: backbone, neck, RPN, proposals, RoI
sampling and the box head, as one Flax module (proposals and sampling need the RPN's
outputs inside the same forward pass).

Proposals: per-level top-k, decode, clip, drop tiny boxes, NMS per level (`grouped_nms`),
the best fixed count kept with a mask; their coordinates carry no gradient. Training:
ground truth appended to the proposals, `roi_per_image` RoIs sampled per image (a
fraction positive at most).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import Array

from jaxdet import assigners, box_coder
from jaxdet import boxes as box_ops
from jaxdet.models.backbones import make_backbone
from jaxdet.models.heads.rcnn import BoxHead, RPNHead
from jaxdet.models.necks import NeckSpec, apply_neck
from jaxdet.ops import nms as nms_ops


@dataclasses.dataclass(frozen=True)
class TwoStageSpec:
    """Static settings the module needs (hashable, so the module stays a plain dataclass)."""

    image_size: int
    level_sizes: tuple[int, ...]  # anchors per pyramid level, in order
    pre_nms_topk: int  # per level
    post_nms_topk: int
    nms_iou: float
    min_box_size: float
    roi_per_image: int
    roi_positive_fraction: float
    roi_fg_iou: float
    num_classes: int
    pooled_size: int = 7


class FasterRCNNModule(nn.Module):
    """images -> RPN outputs, proposals, and box-head outputs on sampled (train) or all
    (eval) proposals. `targets` (the batch) drives RoI sampling; a "sampling" rng is used."""

    spec: TwoStageSpec
    anchors: Any  # np.ndarray [N, 4]
    num_anchors: int
    num_logits: int
    backbone: str
    backbone_norm: str
    neck: NeckSpec
    fc_dim: int
    roi_aligned: bool = True
    dtype: Any = jnp.float32
    axis_name: str | None = None
    kernels: str = "plain"

    def _proposals(self, logits: Array, deltas: Array) -> tuple[Array, Array]:
        """[B, N] objectness and [B, N, 4] deltas -> proposals [B, P, 4] (no gradient), valid [B, P]."""
        s = self.spec
        logits, deltas = jax.lax.stop_gradient(logits), jax.lax.stop_gradient(deltas)
        anchors = jnp.asarray(self.anchors)

        k = max(min(s.pre_nms_topk, n) for n in s.level_sizes)  # every level padded to k

        def one_image(logit, delta):
            boxes, scores, starts = [], [], np.cumsum((0,) + s.level_sizes[:-1])
            for start, n in zip(starts, s.level_sizes):
                top, idx = jax.lax.top_k(logit[start : start + n], min(s.pre_nms_topk, n))
                idx = idx + start
                pad = k - idx.shape[0]  # a level with fewer anchors than k: invalid padding
                boxes.append(jnp.pad(box_coder.decode_deltas(anchors[idx], delta[idx]), ((0, pad), (0, 0))))
                scores.append(jnp.pad(top, (0, pad), constant_values=-jnp.inf))
            boxes = box_ops.clip_boxes(jnp.stack(boxes), s.image_size, s.image_size)  # [L, k, 4]
            scores = jnp.stack(scores)  # [L, k]
            wh = boxes[..., 2:] - boxes[..., :2]
            valid = (wh[..., 0] >= s.min_box_size) & (wh[..., 1] >= s.min_box_size)  # (padding: -inf scores)
            # NMS per level (levels never suppress each other; non-finite scores are invalid),
            # then the best post_nms_topk.
            kept = nms_ops.grouped_nms(boxes, scores, valid, s.nms_iou, s.post_nms_topk, self.kernels)
            ok = kept >= 0
            return jnp.where(ok[:, None], boxes.reshape(-1, 4)[jnp.maximum(kept, 0)], 0.0), ok

        return jax.vmap(one_image)(logits, deltas)

    def _sample_rois(self, proposals: Array, valid: Array, targets: dict[str, Array]) -> dict[str, Array]:
        """Appends ground truth to the proposals and samples `roi_per_image` RoIs per image."""
        s = self.spec
        rngs = jax.random.split(self.make_rng("sampling"), proposals.shape[0])

        def one_image(rng, props, ok, gt_boxes, gt_labels, gt_mask):
            cands = jnp.concatenate([props, gt_boxes])
            cand_ok = jnp.concatenate([ok, gt_mask])
            iou = jnp.where(gt_mask[None, :], box_ops.box_iou(cands, gt_boxes), -1.0)  # [P + M, M]
            best = jnp.max(iou, axis=1)
            matched = jnp.argmax(iou, axis=1)
            fg = cand_ok & (best >= s.roi_fg_iou)
            bg = cand_ok & ~fg
            pos, neg = assigners.sample_balanced(rng, fg, bg, s.roi_per_image, s.roi_positive_fraction)
            (idx,) = jnp.nonzero(pos | neg, size=s.roi_per_image, fill_value=0)
            sampled = jnp.arange(s.roi_per_image) < jnp.sum(pos | neg)
            is_pos = pos[idx] & sampled
            labels = jnp.where(is_pos, gt_labels[matched[idx]], s.num_classes)
            return cands[idx], labels, gt_boxes[matched[idx]], sampled, is_pos

        rois, labels, gt, sampled, pos = jax.vmap(one_image)(
            rngs, proposals, valid, targets["boxes"], targets["labels"], targets["box_mask"]
        )
        return {
            "roi_boxes": rois,
            "roi_labels": labels,
            "roi_gt_boxes": gt,
            "roi_sampled": sampled,
            "roi_positive": pos,
        }

    @nn.compact
    def __call__(self, images: Array, train: bool = False, targets: dict | None = None) -> dict[str, Array]:
        backbone = make_backbone(self.backbone, self.backbone_norm, self.dtype, self.axis_name, self.kernels)
        pyramid = apply_neck(self.neck, backbone(images, train), train)
        c, k = self.neck.channels, self.kernels
        rpn_logits, rpn_deltas = RPNHead(c, self.num_anchors, self.dtype, k, name="rpn")(pyramid)
        proposals, valid = self._proposals(rpn_logits, rpn_deltas)
        out = {"rpn_logits": rpn_logits, "rpn_deltas": rpn_deltas, "proposals": proposals, "proposal_valid": valid}
        # One box head (one set of weights) for the sampled RoIs and the test-time proposals.
        box_head = BoxHead(
            self.fc_dim, self.num_logits, self.spec.num_classes, self.spec.pooled_size, self.roi_aligned, self.dtype, k
        )
        if targets is not None:
            out.update(self._sample_rois(proposals, valid, targets))
            out["roi_cls_logits"], out["roi_deltas"] = box_head(pyramid, out["roi_boxes"])
        if not train:
            out["det_cls_logits"], out["det_deltas"] = box_head(pyramid, proposals)
        return out
