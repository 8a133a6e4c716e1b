"""What the COCO summary does not say: AP per class, precision-recall curves, error kinds.

Per-class AP and the curves come from COCOeval's accumulated `precision` array
([IoU thresholds, recall points, classes, area ranges, max detections]), exactly as
pycocotools computes the summary AP from it. The error breakdown is a simple
TIDE-style attribution at IoU 0.5 of the detections with score >= a threshold:
  correct            matches an unmatched ground truth of its class (IoU >= 0.5);
  wrong class        IoU >= 0.5 with a ground truth of another class;
  poor localisation  0.1 <= IoU < 0.5 with a ground truth of its class;
  duplicate          IoU >= 0.5 with a ground truth of its class already matched;
  background         IoU < 0.1 with every ground truth (or an image without any);
and missed objects are ground truths no detection of their class matched.
"""

from __future__ import annotations

import numpy as np

from jaxdet import boxes as box_ops


def per_class_ap(precision: np.ndarray, category_ids: list[int], names: dict[int, str]) -> list[dict]:
    """[{category_id, name, AP, AP50, AP75}] from COCOeval's `eval["precision"]`.

    AP averages precision over IoU 0.50:0.95 and 101 recall points (area "all", 100
    detections), skipping -1 entries as pycocotools; -1 for a class without ground truth.
    """
    rows = []
    for k, cid in enumerate(category_ids):

        def mean(p):
            p = p[p > -1]
            return float(p.mean()) if p.size else -1.0

        p = precision[:, :, k, 0, -1]  # [T, R]
        rows.append({"category_id": cid, "name": names.get(cid, str(cid)), "AP": mean(p), "AP50": mean(p[0]),
                     "AP75": mean(p[5])})  # fmt: skip
    return rows


def per_class_markdown(rows: list[dict]) -> str:
    lines = ["| class | AP | AP50 | AP75 |", "| --- | --- | --- | --- |"]
    for r in rows:
        cells = [f"{r[k]:.4f}" if r[k] >= 0 else "n/a" for k in ("AP", "AP50", "AP75")]
        lines.append(f"| {r['name']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_pr_curves(precision: np.ndarray, category_ids: list[int], names: dict[int, str], path: str) -> None:
    """Precision-recall per class at IoU 0.5 and 0.75 (area all, 100 detections) to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recall = np.linspace(0, 1, precision.shape[1])
    cols = min(4, len(category_ids))
    rows = -(-len(category_ids) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.8 * rows), squeeze=False)
    for k, cid in enumerate(category_ids):
        ax = axes[k // cols][k % cols]
        for t, label in ((0, "IoU 0.5"), (5, "IoU 0.75")):
            p = precision[t, :, k, 0, -1]
            if (p > -1).any():
                ax.plot(recall, np.where(p > -1, p, np.nan), label=label)
        ax.set_title(names.get(cid, str(cid)), fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall", fontsize=8)
        ax.set_ylabel("precision", fontsize=8)
        ax.legend(fontsize=7, loc="lower left")
    for k in range(len(category_ids), rows * cols):
        axes[k // cols][k % cols].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def error_breakdown(ground_truth: dict, detections: list[dict], score_threshold: float = 0.3) -> dict[str, int]:
    """Counts of the error kinds in the module docstring (crowd ground truth is skipped)."""
    gts: dict[int, list[dict]] = {}
    for a in ground_truth["annotations"]:
        if not a.get("iscrowd", 0):
            gts.setdefault(a["image_id"], []).append(a)
    dets: dict[int, list[dict]] = {}
    for d in detections:
        if d["score"] >= score_threshold:
            dets.setdefault(d["image_id"], []).append(d)
    counts = dict.fromkeys(("detections", "correct", "wrong_class", "poor_localisation", "duplicate",
                            "background", "ground_truth", "missed"), 0)  # fmt: skip
    xyxy = lambda b: [b[0], b[1], b[0] + b[2], b[1] + b[3]]  # noqa: E731
    for image in ground_truth["images"]:
        g, d = gts.get(image["id"], []), sorted(dets.get(image["id"], []), key=lambda x: -x["score"])
        counts["ground_truth"] += len(g)
        counts["detections"] += len(d)
        matched = np.zeros(len(g), bool)
        if not d:
            counts["missed"] += len(g)
            continue
        if not g:
            counts["background"] += len(d)
            continue
        iou = np.asarray(box_ops.box_iou(np.array([xyxy(x["bbox"]) for x in d], np.float32),
                                         np.array([xyxy(x["bbox"]) for x in g], np.float32)))  # fmt: skip
        same = np.array([[x["category_id"] == y["category_id"] for y in g] for x in d])
        for i in range(len(d)):
            own = np.where(same[i], iou[i], -1.0)
            free = np.where(~matched, own, -1.0)
            if free.max() >= 0.5:
                matched[int(free.argmax())] = True
                counts["correct"] += 1
            elif own.max() >= 0.5:
                counts["duplicate"] += 1
            elif np.where(~same[i], iou[i], -1.0).max() >= 0.5:
                counts["wrong_class"] += 1
            elif own.max() >= 0.1:
                counts["poor_localisation"] += 1
            else:
                counts["background"] += 1
        counts["missed"] += int((~matched).sum())
    return counts


def error_lines(counts: dict[str, int], score_threshold: float) -> list[str]:
    n, g = max(counts["detections"], 1), max(counts["ground_truth"], 1)
    return [
        f"errors at IoU 0.5, detections with score >= {score_threshold}: {counts['detections']} detections, "
        f"{counts['ground_truth']} objects",
        f"  correct {counts['correct']} ({100 * counts['correct'] / n:.1f}% of detections)",
        f"  wrong class {counts['wrong_class']} ({100 * counts['wrong_class'] / n:.1f}%)",
        f"  poor localisation {counts['poor_localisation']} ({100 * counts['poor_localisation'] / n:.1f}%)",
        f"  duplicate {counts['duplicate']} ({100 * counts['duplicate'] / n:.1f}%)",
        f"  background false positive {counts['background']} ({100 * counts['background'] / n:.1f}%)",
        f"  missed objects {counts['missed']} ({100 * counts['missed'] / g:.1f}% of objects)",
    ]
