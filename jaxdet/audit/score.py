"""How well an audit finds injected noise (noise.py): per noise type, precision and recall
at k = the number of corrupted items, for the audit's own ranking of that kind and two
baselines: ranking by the image's loss alone, and a random order (expected values)."""

from __future__ import annotations

from jaxdet.audit.noise import KIND_OF


def _iou(a: list[float], b: list[float]) -> float:
    ax2, ay2, bx2, by2 = a[0] + a[2], a[1] + a[3], b[0] + b[2], b[1] + b[3]
    w = max(0.0, min(ax2, bx2) - max(a[0], b[0]))
    h = max(0.0, min(ay2, by2) - max(a[1], b[1]))
    inter = w * h
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def _hit(item: dict, change: dict, noise: str) -> bool:
    """Whether an audited box (a detection for deletions) is the changed annotation."""
    if item["image_id"] != change["image_id"]:
        return False
    if noise == "delete":  # an unexplained detection where the deleted box was
        return _iou(item["bbox"], change["bbox"]) >= 0.5
    noisy = change.get("noisy_bbox", change["bbox"])
    return _iou(item["bbox"], noisy) >= 0.99  # the same annotation (pixels round-trip through the canvas)


def _precision_recall(ranked: list[dict], changes: list[dict], noise: str, k: int) -> tuple[float, float]:
    found, used = 0, set()
    for item in ranked[:k]:
        match = next((j for j, c in enumerate(changes) if j not in used and _hit(item, c, noise)), None)
        if match is not None:
            used.add(match)
            found += 1
    return found / max(k, 1), found / max(len(changes), 1)


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
        by_loss = sorted(candidates, key=lambda c: -image_loss.get(c["image_id"], 0.0))
        hits = sum(any(_hit(c, ch, noise) for ch in todo) for c in candidates)
        random = min(hits / max(len(candidates), 1), 1.0)  # expected hits in k draws / k; recall the same (k = changes)
        out[noise] = {
            "k": k,
            "candidates": len(candidates),
            "audit": _precision_recall(audit["rankings"][kind], todo, noise, k),
            "loss_only": _precision_recall(by_loss, todo, noise, k),
            "random": (random, random),
        }
    return out
