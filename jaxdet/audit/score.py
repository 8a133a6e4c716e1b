"""How well an audit finds injected noise (noise.py): per noise type, precision and recall
at k = the number of corrupted items, for the audit's own ranking of that kind and two
baselines: ranking by the image's loss alone, and a random order (expected values)."""

from __future__ import annotations

import numpy as np

from jaxdet.audit.noise import KIND_OF
from jaxdet.boxes import box_iou


def _xyxy(items: list[dict], key: str = "bbox") -> np.ndarray:
    b = np.asarray([it[key] for it in items], np.float32).reshape(-1, 4)
    return np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)


def _hits(candidates: list[dict], changes: list[dict], noise: str) -> np.ndarray:
    """[N, K] whether candidate n is changed annotation k: an audited box (pixels round-trip
    through the canvas: IoU >= 0.99 with the noisy box), or for deletions an unexplained
    detection where the deleted box was (IoU >= 0.5)."""
    if not candidates:
        return np.zeros((0, len(changes)), bool)
    key, threshold = ("bbox", 0.5) if noise == "delete" else ("noisy_bbox", 0.99)
    theirs = _xyxy([{**c, "noisy_bbox": c.get("noisy_bbox", c["bbox"])} for c in changes], key)
    iou = np.asarray(box_iou(_xyxy(candidates), theirs))
    same = np.asarray([c["image_id"] for c in candidates])[:, None] == np.asarray([c["image_id"] for c in changes])
    return same & (iou >= threshold)


def _precision_recall(order: list[int], hits: np.ndarray, k: int) -> tuple[float, float]:
    """Precision and recall at k of candidates in `order`, each change found once."""
    found, used = 0, np.zeros(hits.shape[1], bool)
    for n in order[:k]:
        free = np.nonzero(hits[n] & ~used)[0]
        if free.size:
            used[free[0]] = True
            found += 1
    return found / max(k, 1), found / max(hits.shape[1], 1)


def table(scores: dict[str, dict]) -> list[str]:
    """Markdown lines: per noise type, k and precision / recall of each ranking."""
    lines = ["| noise | k | audit P / R | loss only P / R | random P / R |", "|---|---|---|---|---|"]
    for noise, s in scores.items():
        cells = [f"{s[m][0]:.2f} / {s[m][1]:.2f}" for m in ("audit", "loss_only", "random")]
        lines.append(f"| {noise} | {s['k']} | " + " | ".join(cells) + " |")
    return lines


def score(audit: dict, changes: dict[str, list[dict]]) -> dict[str, dict]:
    """{noise: {"k", "audit": (precision, recall), "loss_only": ..., "random": ...}} for each
    noise type with changes. Loss-only ranks the same candidates (boxes; detections for
    deletions) by their image's loss; random is the expected value of a random order."""
    image_loss = {r["image_id"]: r["loss"] for r in audit["images"]}
    out = {}
    for noise, kind in KIND_OF.items():
        todo = changes.get(noise, [])
        if not todo:
            continue
        k = len(todo)
        candidates = audit["missing"] if noise == "delete" else audit["boxes"]
        hits = _hits(candidates, todo, noise)
        # The audit's ranking of its kind (as audit.json's rankings) and the loss-only one, over the same candidates.
        by_kind = sorted((n for n, c in enumerate(candidates) if c[kind] > 0), key=lambda n: -candidates[n][kind])
        by_loss = sorted(range(len(candidates)), key=lambda n: -image_loss.get(candidates[n]["image_id"], 0.0))
        random = min(
            hits.any(axis=1).sum() / max(len(candidates), 1), 1.0
        )  # expected hits in k draws / k; recall alike
        out[noise] = {
            "k": k,
            "candidates": len(candidates),
            "audit": _precision_recall(by_kind, hits, k),
            "loss_only": _precision_recall(by_loss, hits, k),
            "random": (float(random), float(random)),
        }
    return out
