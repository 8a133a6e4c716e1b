"""The audit's outputs: audit.json (every image's and box's numbers, the ranking of each
kind of suspected error, and the suspects overall) and a gallery of the top suspects
(one PNG each: annotations in white, the model's detections by class, the suspect in red)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw

from jaxdet import files, visualize
from jaxdet.audit.runner import Pass
from jaxdet.audit.suspects import KINDS

ALL_KINDS = (*KINDS, "missing_box")


def rankings(found: Pass) -> dict[str, list[dict]]:
    """{kind: the boxes (detections for missing_box) with a positive score of that kind,
    highest first}."""
    out = {kind: sorted((b for b in found.boxes if b[kind] > 0), key=lambda b, k=kind: -b[k]) for kind in KINDS}
    out["missing_box"] = sorted(found.missing, key=lambda d: -d["missing_box"])
    return out


def suspects(found: Pass) -> list[dict]:
    """Every box and unexplained detection as one suspect of its most likely kind, highest
    suspicion first: {"kind", "suspicion", and the box's fields}."""
    items = []
    for b in found.boxes:
        kind = max(KINDS, key=lambda k: b[k])
        if b[kind] > 0:
            items.append({"kind": kind, "suspicion": b[kind], **b})
    items += [{"kind": "missing_box", "suspicion": d["missing_box"], **d} for d in found.missing]
    return sorted(items, key=lambda s: -s["suspicion"])


def top_per_kind(found: Pass, k: int) -> list[dict]:
    """Up to `k` suspects for the gallery, taken in turn from each kind's ranking (the
    kinds' scores are not on one scale, and one kind would fill the gallery otherwise)."""
    ranked = {kind: [{"kind": kind, "suspicion": r[kind], **r} for r in rs] for kind, rs in rankings(found).items()}
    out: list[dict] = []
    for r in range(max((len(v) for v in ranked.values()), default=0)):
        out += [ranked[kind][r] for kind in ALL_KINDS if r < len(ranked[kind])]
    return out[:k]


def write_json(found: Pass, path: str, header: dict) -> None:
    """audit.json: `header` (run, checkpoint, split), images (by grad_norm, highest first),
    boxes, missing (unexplained detections), rankings per kind and suspects overall."""
    doc = {
        **header,
        "images": sorted(found.images, key=lambda r: -r["grad_norm"]),
        "boxes": found.boxes,
        "missing": found.missing,
        "rankings": rankings(found),
        "suspects": suspects(found),
    }
    files.write_atomic(path, json.dumps(doc))


def gallery(top: list[dict], example: Callable[[int], dict], predict: Callable[[np.ndarray], dict],
            class_names: list[str], out_dir: str, upscale: int = 3, min_score: float = 0.3) -> list[str]:  # fmt: skip
    """One PNG per suspect in `top`, named <rank>_<kind>_image<id>.png; `example(index)` is
    the evaluation pipeline's example, `predict(image)` its detections in canvas pixels, of
    which those scoring `min_score` or more are drawn."""
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for rank, s in enumerate(top):
        ex = example(s["index"])
        dets = predict(ex["image"])
        keep = dets["valid"] & (dets["scores"] >= min_score)
        picture = visualize.draw_boxes(
            ex["image"], dets["boxes"][keep], dets["classes"][keep], dets["scores"][keep], class_names,
            gt_boxes=ex["boxes"][ex["box_mask"]], upscale=upscale,
        )  # fmt: skip
        img = Image.fromarray(picture)
        x, y, w, h = (v * float(ex["scale"]) * upscale for v in s["bbox"])
        draw = ImageDraw.Draw(img)
        draw.rectangle([x, y, x + w, y + h], outline=(255, 0, 0), width=3)
        draw.text((4, 4), f"#{rank + 1} {s['kind']} {s['suspicion']:.2f} image {s['image_id']}", fill=(255, 0, 0))
        path = os.path.join(out_dir, f"{rank + 1:03d}_{s['kind']}_image{s['image_id']}.png")
        img.save(path)
        paths.append(path)
    return paths
