"""DETR family (Carion et al. 2020; Deformable DETR, RT-DETR): a fixed set of
`num_queries` predictions per image, matched one-to-one to the ground truth (Hungarian,
`losses/set.py`), losses only through the matched pairs (every other query learns "no
object"), no anchors and no NMS.

Each decoder layer's outputs and the encoder's selected proposals are matched and
trained on their own (auxiliary losses). The loss terms (TERMS) are per part, each in
its family: `classification`, `localization` (and `confidence`) of the last layer;
`aux_classification`, `aux_localization` summed over the earlier layers and the encoder
proposals (each also reported alone: `aux{i}/...`, `enc/...`); with `denoising` groups,
`dn_classification`, `dn_localization` of the denoising queries (known targets, no
matching; summed over the decoder layers). So `--config.loss.dn_localization_weight=0`
or `--config.loss.terms.aux_localization=l1` ablates one part. A part that is off
(`aux_loss=False`, `denoising=0`) has its terms at 0. Every part is matched with the
last layer's losses as the cost (the matcher is one, as in DETR). A confidence loss
adds a per-query quality logit on the last layer (objectness, IoU, or the centre-ness of
the predicted box's centre in its matched box), multiplied into the scores.
Box outputs are normalised (cx, cy, w, h); "encoded"-space losses (L1) compare them with
the normalised ground truth, as DETR does, and the IoU family the pixel boxes.
"""

from __future__ import annotations

import dataclasses
import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import Array

from jaxdet import assigners, postprocess
from jaxdet.detectors import base
from jaxdet.errors import ConfigError
from jaxdet.losses import assigned
from jaxdet.losses import set as set_loss
from jaxdet.losses import terms as loss_terms
from jaxdet.models.heads.detr import DETRHead


def section() -> dict:
    """config.model.detr's fields and defaults."""
    return dict(
        num_queries=100,
        decoder_layers=3,
        encoder_layers=1,  # on the top level's tokens
        heads=4,
        ffn_dim=256,
        match_class_weight=2.0,  # matching cost = this x class cost + the localization loss
        aux_loss=True,  # match and train every decoder layer and the encoder proposals
        denoising=0,  # groups of denoising queries in training (RT-DETR: 100 // max boxes); 0: none
        denoising_label_noise=0.5,  # a denoising query's label is flipped with half this probability
        denoising_box_noise=1.0,  # corner noise in half box sizes (negatives: 1-2x)
    )


def normalised_cxcywh(boxes: Array, image_size: int) -> Array:
    """xyxy pixels [..., 4] -> (cx, cy, w, h) in units of the image size."""
    s = float(image_size)
    return jnp.concatenate([(boxes[..., :2] + boxes[..., 2:]) / 2, boxes[..., 2:] - boxes[..., :2]], -1) / s


AUX_TERMS = {"aux_classification": "classification", "aux_localization": "localization"}
DN_TERMS = {"dn_classification": "classification", "dn_localization": "localization"}
TERMS = {**loss_terms.FAMILY_TERMS, **AUX_TERMS, **DN_TERMS}


@dataclasses.dataclass(frozen=True)
class DETR:
    """Head outputs: "cls_logits" [B, Q, K], "boxes" [B, Q, 4] normalised (cx, cy, w, h),
    and the auxiliary parts (models/heads/detr.py)."""

    module: nn.Module
    losses: loss_terms.LossSet  # the last layer's terms (and the matching cost)
    aux_losses: loss_terms.LossSet  # AUX_TERMS
    dn_losses: loss_terms.LossSet  # DN_TERMS
    image_size: int
    match_class_weight: float
    aux_loss: bool
    max_detections: int
    score_threshold: float
    kernels: str = "plain"

    @property
    def num_classes(self) -> int:
        return self.losses.num_classes

    @property
    def term_weights(self) -> dict[str, float]:
        return {**self.losses.weights, **self.aux_losses.weights, **self.dn_losses.weights}

    def encode(self, boxes: Array) -> Array:
        """xyxy pixels [..., 4] -> normalised (cx, cy, w, h)."""
        return normalised_cxcywh(boxes, self.image_size)

    def decode(self, raw: Array) -> Array:
        """Normalised (cx, cy, w, h) [..., 4] -> xyxy pixels."""
        raw = raw * float(self.image_size)
        return jnp.concatenate([raw[..., :2] - raw[..., 2:] / 2, raw[..., :2] + raw[..., 2:] / 2], -1)

    def _part(self, losses, cls_logits, boxes, batch, axis_name, quality_logits=None, targets=None) -> dict[str, Array]:
        """One set of predictions' terms of `losses`: Hungarian targets, or the given ones (denoising)."""
        if targets is None:
            targets = set_loss.match(
                self.losses, cls_logits, boxes, batch, self.encode, self.decode, self.match_class_weight, self.kernels
            )
        # "assigned": matched queries and no-object ones (every query of a real image, when
        # matched; denoising queries of padded slots are neither).
        # (A "centerness" confidence measures the predicted box's centre in its matched box.)
        centers = jax.lax.stop_gradient(boxes[..., :2]) * float(self.image_size)
        return assigned.term_losses(
            losses, targets, boxes, self.decode, self.encode, cls_logits=cls_logits, conf_logits=quality_logits,
            axis_name=axis_name, cls_region="assigned", conf_region="assigned", centers=centers,
        )  # fmt: skip

    def _denoising(self, outputs, batch, axis_name) -> dict[str, Array]:
        """The denoising queries' terms, summed over the decoder layers: a positive query
        learns its slot's box and true class, a negative one "no object"; padded slots none."""
        real, positive = outputs["dn_real"], outputs["dn_positive"]
        label = jnp.where(real, jnp.where(positive, assigners.POSITIVE, assigners.NEGATIVE), assigners.IGNORE)
        asg = assigners.Assignment(outputs["dn_slot"], label.astype(jnp.int32), jnp.ones(label.shape))
        targets = assigned.targets_from_assignment(asg, batch, self.num_classes)
        layers = range(outputs["dn_boxes"].shape[1]) if self.aux_loss else [outputs["dn_boxes"].shape[1] - 1]
        parts = [self._part(self.dn_losses, outputs["dn_cls_logits"][:, i], outputs["dn_boxes"][:, i], batch, axis_name,
                            targets=targets) for i in layers]  # fmt: skip
        return {k: sum(p[k] for p in parts) for k in parts[0]}

    def loss_fn(
        self, outputs: dict[str, Array], batch: dict[str, Array], rng: Array, axis_name: str | None = None
    ) -> tuple[Array, dict[str, Array]]:
        """TERMS, each part divided by its positives (the batch's boxes; x groups for
        denoising), and the auxiliary parts' own terms as reports (`aux{i}/`, `enc/`)."""
        del rng
        terms = self._part(
            self.losses, outputs["cls_logits"], outputs["boxes"], batch, axis_name, outputs.get("quality_logits")
        )
        zero = jnp.zeros((), jnp.float32)
        parts = {}
        if self.aux_loss:
            for i in range(outputs["aux_boxes"].shape[1] if "aux_boxes" in outputs else 0):
                parts[f"aux{i}/"] = self._part(self.aux_losses, outputs["aux_cls_logits"][:, i],
                                               outputs["aux_boxes"][:, i], batch, axis_name)  # fmt: skip
            enc = (outputs["enc_cls_logits"], outputs["enc_boxes"])
            parts["enc/"] = self._part(self.aux_losses, *enc, batch, axis_name)
        terms.update({t: sum((p[t] for p in parts.values()), zero) for t in AUX_TERMS})
        dn = self._denoising(outputs, batch, axis_name) if "dn_boxes" in outputs else {t: zero for t in DN_TERMS}
        terms.update(dn)
        total = self.losses.total(terms) + self.aux_losses.total(terms) + self.dn_losses.total(terms)
        for name, p in parts.items():
            terms.update({f"{name}{AUX_TERMS[t]}": v for t, v in p.items()})
        return total, terms

    def predict(self, outputs: dict[str, Array]) -> postprocess.Detections:
        """The `max_detections` best (query, class) pairs of the last layer, no NMS."""
        scores = base.class_scores(self.losses, outputs["cls_logits"], outputs.get("quality_logits"))  # [B, Q, C]
        boxes = self.decode(outputs["boxes"])
        return postprocess.top_pairs(scores, boxes, self.max_detections, self.score_threshold, self.image_size)


def build(config, ctx: base.BuildContext) -> DETR:
    m, d = config.model, config.model.detr
    losses = loss_terms.build_loss_set(config.loss, ctx.num_classes)
    aux_losses = loss_terms.build_loss_set(config.loss, ctx.num_classes, AUX_TERMS)
    dn_losses = loss_terms.build_loss_set(config.loss, ctx.num_classes, DN_TERMS)
    for each in (losses, aux_losses, dn_losses):
        base.refuse_distributions(each, "detr")
        # Every part reads the same class logits: one activation (a softmax adds a background logit).
        if each.classification.activation != losses.classification.activation:
            term = each.names["classification"]
            raise ConfigError(
                f"config.loss.terms.{term}: its loss is {each.classification.activation}-based and the last "
                f"layer's (config.loss.classification) {losses.classification.activation}-based; every part of "
                "detr reads the same class logits, so their classification losses need one activation"
            )
    if d.num_queries < 1 or d.decoder_layers < 1:
        raise ConfigError(
            f"config.model.detr: num_queries={d.num_queries}, decoder_layers={d.decoder_layers}; each needs >= 1"
        )
    if d.num_queries < config.data.max_boxes:
        raise ConfigError(
            f"config.model.detr.num_queries={d.num_queries} is below config.data.max_boxes="
            f"{config.data.max_boxes}: every ground-truth box needs a query of its own; raise num_queries "
            f"to >= {config.data.max_boxes} (or lower max_boxes)"
        )
    if m.max_detections > d.num_queries * ctx.num_classes:
        raise ConfigError(
            f"config.model.max_detections={m.max_detections} exceeds num_queries x classes = "
            f"{d.num_queries * ctx.num_classes}"
        )
    if d.denoising < 0 or not 0.0 <= d.denoising_label_noise <= 1.0 or d.denoising_box_noise < 0:
        raise ConfigError(
            f"config.model.detr: denoising={d.denoising} (groups, >= 0), denoising_label_noise="
            f"{d.denoising_label_noise} (in [0, 1]), denoising_box_noise={d.denoising_box_noise} (>= 0)"
        )
    dtype = jnp.dtype(config.train.compute_dtype)
    head = functools.partial(
        DETRHead, losses.num_logits, d.num_queries, d.decoder_layers, d.heads, d.ffn_dim, d.encoder_layers,
        quality_branch=losses.has_confidence, dtype=dtype, num_classes=ctx.num_classes, denoising=d.denoising,
        label_noise=d.denoising_label_noise, box_noise=d.denoising_box_noise,
    )  # fmt: skip
    size = config.data.image_size

    def run_head(pyramid, train, targets):
        truth = None
        if train and targets is not None:  # denoising queries are built from the training ground truth
            truth = (normalised_cxcywh(targets["boxes"], size), targets["labels"], targets["box_mask"])
        return head()(pyramid, truth)

    module = base.dense_model(config, ctx, "fpn", run_head, head_takes_targets=True)
    return DETR(
        module, losses, aux_losses, dn_losses, config.data.image_size, d.match_class_weight, d.aux_loss,
        m.max_detections, m.score_threshold, ctx.kernels,
    )  # fmt: skip


DEFINITION = base.register(
    base.DetectorDef(
        "detr",
        section,
        "fpn",
        build,
        base.loss_implies,
        "DETR family: set prediction, Hungarian matching, no NMS",
        terms=TERMS,
    )
)
