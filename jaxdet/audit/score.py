"""How well an audit finds injected noise (noise.py): per noise type, precision and recall
at k = the number of corrupted items, for the audit's own ranking of that kind and two
baselines: ranking by the image's loss alone, and a random order (expected values)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from jaxdet.audit.noise import KIND_OF
from jaxdet.audit.records import TopK
from jaxdet.boxes import box_iou


def _xyxy(boxes: list) -> np.ndarray:
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)


class _Changes:
    """One noise type's changes grouped by image, to find which a candidate is: an audited
    box (pixels round-trip through the canvas: IoU >= 0.99 with the noisy box), or for
    deletions an unexplained detection where the deleted box was (IoU >= 0.5)."""

    def __init__(self, changes: list[dict], noise: str):
        key, self.threshold = ("bbox", 0.5) if noise == "delete" else ("noisy_bbox", 0.99)
        by_image: dict[int, list[int]] = {}
        for n, c in enumerate(changes):
            by_image.setdefault(c["image_id"], []).append(n)
        self.by_image = {i: (np.asarray(ns), _xyxy([changes[n].get(key, changes[n]["bbox"]) for n in ns]))
                         for i, ns in by_image.items()}  # fmt: skip
        self.count = len(changes)

    def hits(self, candidate: dict) -> np.ndarray:
        """Indices of the changes `candidate` is."""
        if candidate["image_id"] not in self.by_image:
            return np.zeros(0, np.int64)
        ns, theirs = self.by_image[candidate["image_id"]]
        iou = np.asarray(box_iou(_xyxy([candidate["bbox"]]), theirs))[0]
        return ns[iou >= self.threshold]


def _precision_recall(ranked: list[dict], changes: _Changes, k: int) -> tuple[float, float]:
    """Precision and recall at k of the `ranked` candidates, each change found once."""
    found, used = 0, np.zeros(changes.count, bool)
    for c in ranked[:k]:
        free = [n for n in changes.hits(c) if not used[n]]
        if free:
            used[free[0]] = True
            found += 1
    return found / max(k, 1), found / max(changes.count, 1)


def table(scores: dict[str, dict]) -> list[str]:
    """Markdown lines: per noise type, k and precision / recall of each ranking."""
    lines = ["| noise | k | audit P / R | loss only P / R | random P / R |", "|---|---|---|---|---|"]
    for noise, s in scores.items():
        cells = [f"{s[m][0]:.2f} / {s[m][1]:.2f}" for m in ("audit", "loss_only", "random")]
        lines.append(f"| {noise} | {s['k']} | " + " | ".join(cells) + " |")
    return lines


def score(boxes: Iterable[dict], missing: Iterable[dict], changes: dict[str, list[dict]]) -> dict[str, dict]:
    """{noise: {"k", "candidates", "audit": (precision, recall), "loss_only": ..., "random": ...}}
    for each noise type with changes; `boxes` and `missing` are the audit's records (read
    once per noise type, so a JsonLines streams them; memory: k candidates per ranking).
    The audit ranks the candidates (boxes; detections for deletions) by its kind's score,
    loss-only by their image's loss; random is the expected value of a random order."""
    out = {}
    for noise, kind in KIND_OF.items():
        todo = changes.get(noise, [])
        if not todo:
            continue
        k, them = len(todo), _Changes(todo, noise)
        by_kind, by_loss, n, hit, distinct = TopK(k), TopK(k), 0, 0, set()
        for c in missing if noise == "delete" else boxes:
            n += 1
            found_here = them.hits(c)
            hit += bool(found_here.size)
            distinct.update(found_here.tolist())
            if c[kind] > 0:
                by_kind.push(c[kind], c)
            by_loss.push(c["image_loss"], c)
        # A random order's expected finds in its first k: the hit rate times the candidates
        # drawn (all of them when there are fewer than k), at most one per change.
        # (Two detections of one deleted object, say of two classes, find it once.)
        found = min(hit / max(n, 1) * min(n, k), len(distinct))
        out[noise] = {
            "k": k,
            "candidates": n,
            "audit": _precision_recall(by_kind.sorted(), them, k),
            "loss_only": _precision_recall(by_loss.sorted(), them, k),
            "random": (found / k, found / len(todo)),
        }
    return out
