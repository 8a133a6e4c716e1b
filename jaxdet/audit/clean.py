"""Acting on an audit: a copy of a COCO detection JSON with the top suspects of each kind
dealt with (annotations the audit suspects removed, unexplained detections added as
annotations), and the record of each action, to measure what the audit's suspects cost a
training (experiments.clean_suspects)."""

from __future__ import annotations

import copy
from collections.abc import Iterable

import numpy as np

from jaxdet.audit.records import TopK
from jaxdet.audit.suspects import KINDS
from jaxdet.boxes import box_iou
from jaxdet.errors import ConfigError


def _xyxy(boxes: list) -> np.ndarray:
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)


def top_suspects(boxes: Iterable[dict], missing: Iterable[dict], top_k: int, kinds: Iterable[str]) -> dict:
    """{kind: the `top_k` records of that kind, highest score first}: boxes for the
    annotation kinds (wrong_class, poor_box, spurious_box), detections for missing_box;
    streamed (memory: top_k per kind)."""
    kinds = tuple(kinds)
    unknown = set(kinds) - {*KINDS, "missing_box"}
    if unknown:
        raise ConfigError(f"unknown suspect kinds {sorted(unknown)}; valid: {[*KINDS, 'missing_box']}")
    tops = {kind: TopK(top_k) for kind in kinds}
    for b in boxes:
        for kind in set(kinds) & set(KINDS):
            if b[kind] > 0:
                tops[kind].push(b[kind], b)
    if "missing_box" in tops:
        for d in missing:
            tops["missing_box"].push(d["missing_box"], d)
    return {kind: top.sorted() for kind, top in tops.items()}


def apply(coco: dict, suspects: dict[str, list[dict]], min_iou: float = 0.99) -> tuple[dict, dict]:
    """(cleaned copy of `coco`, actions). Each annotation-kind suspect removes the
    annotation it is (same image and category, IoU >= `min_iou`: its pixels went through
    the canvas and back); each missing_box suspect adds its detection as an annotation
    (`"audit_added": true`). A suspect that matches no annotation is counted under
    "unmatched", never silently skipped. actions = {"removed": [...annotations],
    "added": [...], "unmatched": n}."""
    cleaned = copy.deepcopy(coco)
    by_image: dict[int, list[int]] = {}
    for n, a in enumerate(cleaned["annotations"]):
        by_image.setdefault(a["image_id"], []).append(n)
    gone: set[int] = set()
    unmatched = 0
    for kind, items in suspects.items():
        if kind == "missing_box":
            continue
        for s in items:
            ns = [
                n
                for n in by_image.get(s["image_id"], [])
                if cleaned["annotations"][n]["category_id"] == s["category_id"]
            ]
            iou = np.asarray(box_iou(_xyxy([s["bbox"]]), _xyxy([cleaned["annotations"][n]["bbox"] for n in ns])))
            hit = [n for n, v in zip(ns, iou.reshape(-1)) if v >= min_iou and n not in gone]
            if hit:
                gone.add(hit[0])
            else:
                unmatched += 1
    removed = [cleaned["annotations"][n] for n in sorted(gone)]
    cleaned["annotations"] = [a for n, a in enumerate(cleaned["annotations"]) if n not in gone]
    next_id = max((a["id"] for a in coco["annotations"]), default=0) + 1
    added = []
    for d in suspects.get("missing_box", []):
        x, y, w, h = d["bbox"]
        added.append({"id": next_id, "image_id": d["image_id"], "category_id": d["category_id"],
                      "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0, "audit_added": True})  # fmt: skip
        next_id += 1
    cleaned["annotations"] += added
    return cleaned, {"removed": removed, "added": added, "unmatched": unmatched}
