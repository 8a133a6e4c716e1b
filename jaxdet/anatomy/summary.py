"""Sums of the per-batch numbers (step.py) over a checkpoint's images, and what
anatomy.json says of them: shares, norms, cosines, IoU profiles. Holds O(terms x
locations) numbers whatever the number of images."""

from __future__ import annotations

import numpy as np

from jaxdet.anatomy import layout as L
from jaxdet.anatomy.step import Plan

_SUMMED = ("values", "energy", "group", "magnitude", "other", "iou_sum", "iou_count", "products")


class Accumulator:
    """Adds one batch's numbers at a time; `summary` gives the checkpoint's entry."""

    def __init__(self, plan: Plan, image_size: int, min_level: int, max_level: int):
        self.plan, self.batches, self.images = plan, 0, 0
        self.sums: dict[str, np.ndarray] = {}
        self.location: dict[str, np.ndarray] = {}
        self.layouts: dict[str, list[L.Level] | None] = {}
        self._levels = (image_size, min_level, max_level)

    def add(self, numbers: dict, images: int) -> None:
        for key in _SUMMED:
            value = np.asarray(numbers[key], np.float64)
            self.sums[key] = self.sums.get(key, 0.0) + value
        for term, value in numbers["location"].items():
            self.location[term] = self.location.get(term, 0.0) + np.asarray(value, np.float64)
            if term not in self.layouts:
                self.layouts[term] = L.infer(numbers["centers"].get(term), *self._levels)
        self.batches += 1
        self.images += images

    def summary(self, step: int) -> dict:
        """{"step", "images", "terms": {term: ...}, "modules": {module: {"norm", "cos"}}}."""
        p, s = self.plan, self.sums
        terms = {}
        for i, term in enumerate(p.terms):
            energy = float(s["energy"][i])
            share = lambda x: float(x) / energy if energy > 0 else None  # noqa: E731
            entry = {
                "weight": p.weights[i],
                "value": float(s["values"][i]) / self.batches,
                # RMS over batches of the gradient norm with respect to the head outputs
                "output_grad_norm": float(np.sqrt(energy / self.batches)),
                "shares": {g: share(s["group"][i, j]) for j, g in enumerate(p.groups)},
                "other": share(s["other"][i]),
                # The same split of the gradient's norm summed location by location (not squared):
                # many small pulls (easy negatives) weigh more here than in `shares`.
                "magnitude_shares": {
                    g: float(s["magnitude"][i, j] / s["magnitude"][i].sum()) if energy > 0 else None
                    for j, g in enumerate(p.groups)
                },  # fmt: skip
            }
            lay = self.layouts.get(term)
            if lay is not None and energy > 0:
                entry["levels"] = {f"P{lv.level}": float(self.location[term][lv.start : lv.stop].sum()) / energy
                                   for lv in lay}  # fmt: skip
            counts = s["iou_count"][i]
            mean = np.where(counts > 0, s["iou_sum"][i] / np.maximum(counts, 1), np.nan)
            entry["iou"] = {
                "edges": list(p.iou_edges),
                "mean_magnitude": [None if np.isnan(v) else float(v) for v in mean],
                "count": [int(c) for c in counts],
            }
            terms[term] = entry
        return {"step": step, "images": self.images, "batches": self.batches, "terms": terms,
                "modules": module_summary(p, s["products"] / self.batches)}  # fmt: skip


def module_summary(plan: Plan, products: np.ndarray) -> dict:
    """products [M, T, T] (mean over batches) -> per module each term's RMS gradient norm
    and the cosine between every two terms' gradients (None where either is zero)."""
    out = {}
    for m, module in enumerate(plan.modules):
        diag = np.diag(products[m])
        cos = {}
        for a in range(len(plan.terms)):
            for b in range(a + 1, len(plan.terms)):
                denom = np.sqrt(diag[a] * diag[b])
                cos[f"{plan.terms[a]}__{plan.terms[b]}"] = float(products[m, a, b] / denom) if denom > 0 else None
        out[module] = {"norm": {t: float(np.sqrt(max(diag[i], 0.0))) for i, t in enumerate(plan.terms)}, "cos": cos}
    return out
