"""The audit's outputs: audit.json (the top of each ranking of suspected errors and the
suspects overall; records.py streams every record to JSON-lines files beside it) and a
gallery of the top suspects (one PNG each: annotations in white, the model's detections by
class, the suspect in red)."""

from __future__ import annotations

import json
import os
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw

from jaxdet import files, visualize
from jaxdet.audit.records import RecordWriter


def write_json(writer: RecordWriter, record_files: dict[str, str], path: str, header: dict) -> None:
    """audit.json: `header` (run, checkpoint, split), the record counts and files (every
    image, annotated box and unexplained detection, one JSON object per line, in dataset
    order), and the top `keep` of each ranking: images by gradient norm, each kind's
    suspects, and the suspects overall (every item as its most likely kind)."""
    doc = {
        **header,
        "counts": writer.counts,
        "records": record_files,
        "top_images": writer.top_images.sorted(),
        "rankings": {kind: top.sorted() for kind, top in writer.rankings.items()},
        "suspects": writer.suspects.sorted(),
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
