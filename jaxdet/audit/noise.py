"""Label noise on purpose, to measure an audit: a copy of a COCO detection JSON with a
chosen fraction of class flips, shifted boxes and deleted boxes, and the record of what
changed (used by score.py; never by training, which reads the noisy copy like any data)."""

from __future__ import annotations

import copy

import numpy as np

from jaxdet.errors import ConfigError

KIND_OF = {"flip": "wrong_class", "shift": "poor_box", "delete": "missing_box"}  # noise -> the audit's kind


def inject(coco: dict, flip: float = 0.0, shift: float = 0.0, delete: float = 0.0, seed: int = 0) -> tuple[dict, dict]:
    """(noisy copy of `coco`, changes). Disjoint sets of annotations (crowds left alone),
    each a fraction of the annotations: `flip` get another category (uniform over the
    others), `shift` are moved by half their width and height in a random diagonal
    direction (clipped to the image; IoU with the original 1/7 before clipping), `delete`
    are removed. changes = {"flip": [...], "shift": [...], "delete": [...]} with each
    annotation's id, image id, original and noisy bbox / category."""
    for name, frac in (("flip", flip), ("shift", shift), ("delete", delete)):
        if not 0.0 <= frac <= 1.0:
            raise ConfigError(f"--{name}={frac}: a fraction of the annotations, in [0, 1]")
    if flip + shift + delete > 1.0:
        raise ConfigError(f"--flip + --shift + --delete = {flip + shift + delete:g}: the sets are disjoint, at most 1")
    categories = sorted(c["id"] for c in coco["categories"])
    if flip and len(categories) < 2:
        raise ConfigError("--flip needs at least two categories")
    noisy = copy.deepcopy(coco)
    sizes = {im["id"]: (im["width"], im["height"]) for im in noisy["images"]}
    candidates = [i for i, a in enumerate(noisy["annotations"]) if not a.get("iscrowd", 0)]
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(candidates))
    counts = [int(round(f * len(candidates))) for f in (flip, shift, delete)]
    picked = np.split(np.asarray(candidates)[order], np.cumsum(counts))[:3]
    changes: dict[str, list[dict]] = {"flip": [], "shift": [], "delete": []}
    for i in picked[0]:
        a = noisy["annotations"][i]
        new = int(rng.choice([c for c in categories if c != a["category_id"]]))
        changes["flip"].append({"id": a["id"], "image_id": a["image_id"], "bbox": a["bbox"],
                                "category_id": a["category_id"], "noisy_category_id": new})  # fmt: skip
        a["category_id"] = new
    for i in picked[1]:
        a = noisy["annotations"][i]
        x, y, w, h = a["bbox"]
        width, height = sizes[a["image_id"]]
        sx, sy = rng.choice([-1, 1], 2)
        x1, y1 = min(max(x + sx * w / 2, 0.0), width - 1.0), min(max(y + sy * h / 2, 0.0), height - 1.0)
        x2, y2 = min(x1 + w, float(width)), min(y1 + h, float(height))
        moved = [x1, y1, x2 - x1, y2 - y1]
        changes["shift"].append({"id": a["id"], "image_id": a["image_id"], "bbox": a["bbox"],
                                 "noisy_bbox": moved, "category_id": a["category_id"]})  # fmt: skip
        a["bbox"], a["area"] = moved, (x2 - x1) * (y2 - y1)
    gone = set(int(i) for i in picked[2])
    for i in sorted(gone):
        a = noisy["annotations"][i]
        changes["delete"].append({"id": a["id"], "image_id": a["image_id"], "bbox": a["bbox"],
                                  "category_id": a["category_id"]})  # fmt: skip
    noisy["annotations"] = [a for i, a in enumerate(noisy["annotations"]) if i not in gone]
    return noisy, changes
