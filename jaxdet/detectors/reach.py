"""The fit report: which training boxes a built detector can learn from at all.

For each box of the training split, on the canvas as evaluation resizes it, whether the
detector's own target assignment can make it positive (ultralytics' "best possible
recall"):
  dense detectors with a geometric assigner (max-IoU, ATSS, FCOS ranges): the assigner
      itself, run on the ground truth; for max-IoU also the share reached without the
      low-quality matches (torchvision's rule that every box keeps its best anchor);
  dense detectors whose assigner reads predictions (SimOTA, task-aligned): its
      candidate set, which no prediction can enlarge (a prior centre inside the box, for
      SimOTA also within center_radius strides of its centre);
  Faster R-CNN: the RPN's anchors, with its low-quality matches and without (rpn_fg_iou);
  CenterNet: a box whose centre cell holds an earlier box's of its class has no peak of its own;
  DETR: every box has a query (num_queries >= data.max_boxes, checked at build).
Only the geometry is used: nothing is trained, and images are taken evenly across the
split up to `most` images so that a COCO-size split costs seconds.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxdet import assigners
from jaxdet import boxes as box_ops
from jaxdet.data import fit

CHUNK = 64  # images per compiled call


@dataclasses.dataclass
class Reach:
    """how: what "reached" means; reached [K] bool per box (the main criterion); more:
    {criterion: share} beside it; prior_sides (smallest, largest) prior box side in px, or None."""

    how: str
    reached: np.ndarray
    more: dict[str, float]
    prior_sides: tuple[float, float] | None


def _per_box(fn, boxes, index, images) -> np.ndarray:
    """`fn(gt [B, M, 4], mask [B, M]) -> [B, M]` over the images in chunks of CHUNK (one
    compiled shape per chunk size), as one value per box [K'] in the boxes' order."""
    run, got = jax.jit(fn), []
    for lo in range(0, len(images), CHUNK):
        gt, mask = fit.padded(boxes, index, images[lo : lo + CHUNK])
        got.append(np.asarray(jax.device_get(run(gt, mask)))[mask])
    return np.concatenate(got) if got else np.zeros(0, bool)


def _assigned(assigner, boxes, index, images):
    def positive(gt, mask):
        a = assigner({"boxes": gt, "labels": jnp.zeros(mask.shape, jnp.int32), "box_mask": mask})
        hit = (a.label == assigners.POSITIVE)[..., None] & (a.matched[..., None] == jnp.arange(gt.shape[1]))
        return hit.any(1)

    return _per_box(positive, boxes, index, images)


def _best_iou(priors: np.ndarray, boxes, index, images) -> np.ndarray:
    """Each box's best IoU with any prior box [K]."""
    best = lambda gt, mask: jax.vmap(lambda g: box_ops.box_iou(g, jnp.asarray(priors)).max(-1))(gt)  # noqa: E731
    return _per_box(best, boxes, index, images)


def _candidates(priors, boxes: np.ndarray, radius: float | None) -> np.ndarray:
    """Whether any prior centre lies inside each box (or within `radius` strides of its centre)."""
    out = np.zeros(len(boxes), bool)
    c, s = priors.centers, priors.strides
    for lo in range(0, len(boxes), 256):
        b = boxes[lo : lo + 256, None, :]
        inside = (c[:, 0] > b[..., 0]) & (c[:, 0] < b[..., 2]) & (c[:, 1] > b[..., 1]) & (c[:, 1] < b[..., 3])
        if radius is not None:
            centre = 0.5 * (b[..., :2] + b[..., 2:])
            inside |= (np.abs(c[:, 0] - centre[..., 0]) < radius * s) & (np.abs(c[:, 1] - centre[..., 1]) < radius * s)
        out[lo : lo + 256] = inside.any(-1)
    return out


def _sides(priors: np.ndarray | None) -> tuple[float, float] | None:
    if priors is None:
        return None
    side = np.sqrt((priors[:, 2] - priors[:, 0]) * (priors[:, 3] - priors[:, 1]))
    return float(side.min()), float(side.max())


def reach(
    detector, boxes: np.ndarray, index: np.ndarray, labels: np.ndarray, most: int = 2000
) -> tuple[Reach, np.ndarray]:
    """(Reach, the boxes it judged [K', 4]) for `detector` on canvas `boxes` [K, 4] of
    images `index` [K] with `labels` [K] (fit.canvas_boxes), over at most `most` images
    taken evenly."""
    images = np.unique(index)
    if len(images) > most:
        images = images[np.linspace(0, len(images) - 1, most).round().astype(int)]
    keep = np.isin(index, images)
    judged = boxes[keep]
    assigner = getattr(detector, "assigner", None)
    if assigner is not None:
        p = assigner.priors
        fields = dict(assigner.fields)
        if assigner.needs_predictions:
            radius = fields.get("center_radius") if assigner.name == "simota" else None
            where = "inside the box" + (f" or within {radius} strides of its centre" if radius else "")
            how = f"{assigner.name}'s candidates (a prior centre {where})"
            return Reach(how, _candidates(p, judged, radius), {}, _sides(p.boxes)), judged
        reached = _assigned(assigner, boxes, index, images)
        more = {}
        if assigner.name == "max_iou":
            more[f"best prior IoU >= {fields['fg_iou']} (without low-quality matches)"] = float(
                (_best_iou(p.boxes, boxes, index, images) >= fields["fg_iou"]).mean()
            )
        return Reach(f"positive for the {assigner.name} assigner", reached, more, _sides(p.boxes)), judged
    if hasattr(detector, "rpn_fg_iou"):  # torchvision's RPN matcher keeps every box's best anchor, as max_iou
        best = _best_iou(detector.anchors, boxes, index, images)
        more = {f"best anchor IoU >= {detector.rpn_fg_iou} (without low-quality matches)": float(
            (best >= detector.rpn_fg_iou).mean()
        )}  # fmt: skip
        how = "positive for the RPN's max-IoU matcher"
        return Reach(how, best > 0, more, _sides(detector.anchors)), judged
    if hasattr(detector, "grid"):
        cells = np.floor(0.5 * (judged[:, :2] + judged[:, 2:]) / detector.stride).astype(int)
        key = np.stack([index[keep], labels[keep], cells[:, 0], cells[:, 1]], 1)  # a heatmap per class
        first = np.zeros(len(judged), bool)
        first[np.unique(key, axis=0, return_index=True)[1]] = True
        how = f"a heatmap peak of its own (no earlier box of its class centred in its stride-{detector.stride} cell)"
        return Reach(how, first, {}, None), judged
    return Reach("a query of its own (set prediction)", np.ones(len(judged), bool), {}, None), judged


GOOD = 0.98  # below this share of reachable boxes the report says what to change


def report_lines(detector, table, config, most: int = 2000) -> list[str]:
    """The fit report of `detector` (built for config.data.image_size) on a split's
    AnnotationTable: box sizes on the canvas, the share of boxes it can reach, and what to
    change (data.image_size, levels, anchor sizes) when that share is below GOOD."""
    size, m = config.data.image_size, config.model
    boxes, index, labels = fit.canvas_boxes(table, size)
    if not len(boxes):
        return ["fit report: the split has no boxes"]
    sides = np.sqrt(np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0))
    stride = 2 ** int(m.min_level)
    small = int((np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) < stride).sum())
    p1, p50, p99 = np.percentile(sides, [1, 50, 99])
    r, judged = reach(detector, boxes, index, labels, most)
    share = float(r.reached.mean()) if len(r.reached) else 1.0
    n_images = len(np.unique(index))
    lines = [
        f"fit report ({m.name} at {size} px; {len(judged)} boxes of {min(n_images, most)} of the {n_images} images "
        "with boxes):",
        f"  box sides sqrt(w*h) on the canvas: 1st percentile {p1:.1f}, median {p50:.1f}, 99th {p99:.1f} px; "
        f"{small} boxes ({100 * small / len(boxes):.1f}%) smaller than the smallest stride ({stride} px)",
        f"  reachable: {share:.3f} of the boxes ({r.how})"
        + "".join(f"; {name}: {value:.3f}" for name, value in r.more.items()),
    ]
    if r.prior_sides:
        lines.append(f"  prior boxes: sides {r.prior_sides[0]:.1f} to {r.prior_sides[1]:.1f} px")
    if share < GOOD:
        lines.append("  " + _advice(judged[~r.reached], r.prior_sides, size, m))
    return lines


def _advice(missed: np.ndarray, prior_sides, size: int, m) -> str:
    side = float(np.median(np.sqrt((missed[:, 2] - missed[:, 0]) * (missed[:, 3] - missed[:, 1]))))
    smallest = prior_sides[0] if prior_sides else 2.0 ** (int(m.min_level) + 2)
    largest = prior_sides[1] if prior_sides else size
    head = f"below {GOOD}: the {len(missed)} boxes out of reach have a median side of {side:.1f} px; "
    if side < smallest:
        bigger = -(-int(size * min(4.0, smallest / max(side, 1.0))) // 32) * 32
        return head + (
            f"smaller than the smallest prior ({smallest:.0f} px): raise data.image_size (to ~{bigger}), add a lower "
            f"level (model.min_level={int(m.min_level) - 1}) or use smaller anchors"
        )
    if side > largest:
        return (
            head
            + f"larger than the largest prior ({largest:.0f} px): add a level (model.max_level={int(m.max_level) + 1})"
        )
    return head + (
        "between the priors' sizes or shapes: more anchor scales or aspect ratios, a lower IoU threshold, or an "
        "assigner that adapts to the data (atss)"
    )
