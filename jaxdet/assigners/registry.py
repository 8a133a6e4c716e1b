"""One table of label assigners for the dense detectors (`config.model.<detector>.assigner`).

An assigner turns a detector's priors (anchors or points) and an image's padded ground
truth into an `Assignment`; what it needs from the detector is declared here, so any
dense detector takes any assigner whose inputs it has and refuses the others naming what
is missing (mmdetection's swappable `assigner=dict(type=...)`, with static shapes):

    name          needs                     fields read from the detector's section
    max_iou       prior boxes               fg_iou, bg_iou (torchvision: every box keeps its best prior)
    atss          prior boxes               atss_topk
    simota        predictions               center_radius, simota_k
    task_aligned  predictions               tal_topk, tal_alpha, tal_beta (soft classification targets)
    fcos          size ranges per level     center_radius (and FCOS's regress_range)

Anchor detectors' prior boxes are their anchors; point detectors' (FCOS, YOLO, YOLOv8)
are squares of side `prior_scale` strides around each point (ATSS's FCOS: 8 strides).
Predictions (decoded boxes, class scores) are constants for matching: no gradient
flows through an assignment.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np
from jax import Array

from jaxdet import assigners
from jaxdet.assigners.atss import atss_assign
from jaxdet.errors import ConfigError

# What a detector can offer an assigner, and how a refusal names it.
INPUTS = {
    "boxes": "prior boxes (anchors, or point detectors' prior_scale squares)",
    "predictions": "its own predictions at training time (decoded boxes and class scores)",
    "bounds": "a box-size range per pyramid level (FCOS's regress_range)",
}

# The assigners' fields and their defaults; a detector's section holds those of the
# assigners it can take (`section_fields`), with its own defaults where they differ.
FIELDS: dict[str, Any] = dict(
    fg_iou=0.5,
    bg_iou=0.4,
    atss_topk=9,
    tal_topk=13,
    tal_alpha=1.0,
    tal_beta=6.0,
    center_radius=2.5,
    simota_k=10,
)


@dataclasses.dataclass(frozen=True)
class Priors:
    """A dense detector's priors, host-side and static. centers [A, 2] xy pixels; strides
    [A]; level_sizes: priors per pyramid level, in order (sum = A); boxes [A, 4] xyxy or
    None; bounds (lower [A], upper [A]) of the largest side distance a prior regresses, or None."""

    centers: np.ndarray
    strides: np.ndarray
    level_sizes: tuple[int, ...]
    boxes: np.ndarray | None = None
    bounds: tuple[np.ndarray, np.ndarray] | None = None

    def offers(self, predictions: bool) -> tuple[str, ...]:
        have = {"boxes": self.boxes is not None, "bounds": self.bounds is not None, "predictions": predictions}
        return tuple(name for name in INPUTS if have[name])


def _max_iou(p: Priors, f: dict, gt: tuple, pred: tuple) -> assigners.Assignment:
    boxes, _, mask = gt
    return assigners.max_iou_assign(p.boxes, boxes, mask, f["fg_iou"], f["bg_iou"], True)


def _atss(p: Priors, f: dict, gt: tuple, pred: tuple) -> assigners.Assignment:
    boxes, _, mask = gt
    return atss_assign(p.boxes, p.level_sizes, boxes, mask, f["atss_topk"])


def _simota(p: Priors, f: dict, gt: tuple, pred: tuple) -> assigners.Assignment:
    return assigners.simota_assign(p.centers, p.strides, *pred, *gt, f["center_radius"], f["simota_k"])


def _task_aligned(p: Priors, f: dict, gt: tuple, pred: tuple) -> assigners.Assignment:
    return assigners.task_aligned_assign(p.centers, *pred, *gt, f["tal_topk"], f["tal_alpha"], f["tal_beta"])


def _fcos(p: Priors, f: dict, gt: tuple, pred: tuple) -> assigners.Assignment:
    boxes, _, mask = gt
    return assigners.fcos_assign(p.centers, p.strides, boxes, mask, *p.bounds, f["center_radius"])


@dataclasses.dataclass(frozen=True)
class Spec:
    """needs: keys of INPUTS; fields: the section fields read; soft: the assignment's `iou`
    is a soft classification target (TAL); run(priors, fields, (gt_boxes [M, 4], gt_labels
    [M], gt_mask [M]), (pred_boxes [A, 4], pred_scores [A, C]) or ()) -> Assignment [A]."""

    needs: tuple[str, ...]
    fields: tuple[str, ...]
    soft: bool
    run: Callable[..., assigners.Assignment]


TABLE: dict[str, Spec] = {
    "max_iou": Spec(("boxes",), ("fg_iou", "bg_iou"), False, _max_iou),
    "atss": Spec(("boxes",), ("atss_topk",), False, _atss),
    "simota": Spec(("predictions",), ("center_radius", "simota_k"), False, _simota),
    "task_aligned": Spec(("predictions",), ("tal_topk", "tal_alpha", "tal_beta"), True, _task_aligned),
    "fcos": Spec(("bounds",), ("center_radius",), False, _fcos),
}


def section_fields(default: str, **overrides) -> dict[str, Any]:
    """`assigner=default` and every assigner field (FIELDS, with `overrides`), for a
    detector's section(); a field set to None is left out (the detector reads it otherwise)."""
    if default not in TABLE:
        raise ValueError(f"unknown assigner {default!r}; valid: {sorted(TABLE)}")
    fields = {**FIELDS, **overrides}
    return {"assigner": default, **{k: v for k, v in fields.items() if v is not None}}


@dataclasses.dataclass(frozen=True)
class Assigner:
    """A chosen assigner bound to a detector's priors and its section's fields."""

    name: str
    priors: Priors
    fields: tuple[tuple[str, Any], ...]  # (field, value), hashable

    @property
    def spec(self) -> Spec:
        return TABLE[self.name]

    @property
    def soft(self) -> bool:
        return self.spec.soft

    @property
    def needs_predictions(self) -> bool:
        return "predictions" in self.spec.needs

    def __call__(
        self, batch: dict[str, Array], predictions: Callable[[], tuple[Array, Array]] | None = None
    ) -> assigners.Assignment:
        """Assignment [B, A] for the batch's padded ground truth ("boxes" [B, M, 4], "labels"
        [B, M], "box_mask" [B, M]); `predictions` () -> (boxes [B, A, 4], scores [B, A, C])
        is called only by assigners that need it, its values held constant."""
        fields, spec, priors = dict(self.fields), self.spec, self.priors
        gt = (batch["boxes"], batch["labels"], batch["box_mask"])
        if not self.needs_predictions:
            return jax.vmap(lambda *g: spec.run(priors, fields, g, ()))(*gt)
        if predictions is None:
            raise ValueError(f"assigner {self.name!r} needs the detector's predictions")
        pred = tuple(jax.lax.stop_gradient(x) for x in predictions())
        return jax.vmap(lambda g0, g1, g2, *pr: spec.run(priors, fields, (g0, g1, g2), pr))(*gt, *pred)


def build(section, path: str, detector: str, priors: Priors, predictions: bool = True, **fields) -> Assigner:
    """The assigner `section.assigner` names, checked against what `detector` offers.

    section: the detector's config section (reads `assigner` and that assigner's fields);
    path: its config path, for messages ("config.model.fcos"); predictions: whether the
    detector can hand its predictions to an assigner at training time.
    """
    name = section.assigner
    offers = priors.offers(predictions)
    takes = [n for n, s in TABLE.items() if set(s.needs) <= set(offers)]
    if name not in TABLE:
        raise ConfigError(f"{path}.assigner={name!r}; valid: {sorted(TABLE)} ({detector} takes {takes})")
    missing = [k for k in TABLE[name].needs if k not in offers]
    if missing:
        raise ConfigError(
            f"{path}.assigner={name!r} needs {' and '.join(INPUTS[k] for k in missing)}, which {detector} "
            f"does not have; {detector} takes {takes}"
        )
    values = {k: fields[k] if k in fields else section[k] for k in TABLE[name].fields}
    _check(values, path, name)
    return Assigner(name, priors, tuple(sorted(values.items())))


def _check(values: dict, path: str, name: str) -> None:
    for field in ("atss_topk", "tal_topk", "simota_k"):
        if field in values and values[field] < 1:
            raise ConfigError(f"{path}.{field}={values[field]}; the {name} assigner needs at least 1 prior per box")
    if "fg_iou" in values and not 0.0 <= values["bg_iou"] <= values["fg_iou"] <= 1.0:
        raise ConfigError(
            f"{path}.fg_iou={values['fg_iou']}, bg_iou={values['bg_iou']}; need 0 <= bg_iou <= fg_iou <= 1"
        )
    if "center_radius" in values and values["center_radius"] <= 0:
        raise ConfigError(f"{path}.center_radius={values['center_radius']}; need > 0 strides")


def point_priors(
    points: np.ndarray,
    strides: np.ndarray,
    level_sizes: Sequence[int],
    prior_scale: float,
    bounds: tuple[np.ndarray, np.ndarray] | None = None,
) -> Priors:
    """Priors of a point detector: points [P, 2], strides [P], and squares of side
    prior_scale x stride centred on the points as prior boxes."""
    half = (0.5 * prior_scale * strides)[:, None]
    boxes = np.concatenate([points - half, points + half], axis=1).astype(np.float32)
    return Priors(points.astype(np.float32), strides.astype(np.float32), tuple(level_sizes), boxes, bounds)


def anchor_priors(anchors: np.ndarray, level_sizes: Sequence[int], levels: Sequence[int]) -> Priors:
    """Priors of an anchor detector: anchors [A, 4] xyxy level by level, `level_sizes`
    anchors on pyramid levels `levels` (stride 2^level)."""
    if sum(level_sizes) != anchors.shape[0] or len(level_sizes) != len(levels):
        raise ValueError(f"level_sizes {tuple(level_sizes)} on levels {tuple(levels)}: not {anchors.shape[0]} anchors")
    strides = np.concatenate([np.full(n, 2.0**lvl, np.float32) for n, lvl in zip(level_sizes, levels)])
    centers = (0.5 * (anchors[:, :2] + anchors[:, 2:])).astype(np.float32)
    return Priors(centers, strides, tuple(level_sizes), anchors.astype(np.float32))
