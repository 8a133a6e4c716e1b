"""Writes a COCO-JSON detection folder of N generated JPEGs (for input and memory benchmarks).

    python tools/make_coco_folder.py --out=/tmp/coco20k --images=20000 [--width=640 --height=480]

Each image is a smooth colour field with texture and noise (JPEG sizes near COCO's,
~100-200 KB at 640x480) and 1-12 rectangles of 5 classes; `OUT/train.json` lists them with
`OUT/images/<k>.jpg`. Deterministic in (seed, k); written by all cores in parallel.
"""

from __future__ import annotations

import argparse
import json
import os
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from PIL import Image

CLASSES = ("red", "green", "blue", "yellow", "white")
COLOURS = np.array([(220, 40, 40), (40, 200, 60), (40, 60, 220), (230, 220, 40), (245, 245, 245)], np.float32)


def _image(args) -> list[dict]:
    """Writes image k; returns its annotations (COCO [x, y, w, h]). With `empty`, the file is
    written empty and only the annotations are made (to time and size start-up at COCO scale)."""
    out, k, width, height, seed, empty = args
    rng = np.random.default_rng([seed, k])
    if empty:
        open(os.path.join(out, "images", f"{k}.jpg"), "wb").close()
        annotations = []
        for _ in range(int(rng.integers(1, 13))):
            bw, bh = int(rng.integers(12, width // 2)), int(rng.integers(12, height // 2))
            x, y = int(rng.integers(0, width - bw)), int(rng.integers(0, height - bh))
            annotations.append({"image_id": k + 1, "category_id": int(rng.integers(len(CLASSES))) + 1,
                                "bbox": [x, y, bw, bh], "iscrowd": 0})  # fmt: skip
        return annotations
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(40, 200, 3).astype(np.float32)
    slope = rng.uniform(-0.15, 0.15, (2, 3)).astype(np.float32)
    pixels = base + xx[..., None] * slope[0] + yy[..., None] * slope[1]
    pixels += 25 * np.sin(xx * rng.uniform(0.02, 0.2) + yy * rng.uniform(0.02, 0.2))[..., None]
    pixels += rng.normal(0, 12, pixels.shape).astype(np.float32)
    annotations = []
    for _ in range(int(rng.integers(1, 13))):
        bw, bh = int(rng.integers(12, width // 2)), int(rng.integers(12, height // 2))
        x, y = int(rng.integers(0, width - bw)), int(rng.integers(0, height - bh))
        cls = int(rng.integers(len(CLASSES)))
        pixels[y : y + bh, x : x + bw] = COLOURS[cls] + rng.normal(0, 8, (bh, bw, 3))
        annotations.append({"image_id": k + 1, "category_id": cls + 1, "bbox": [x, y, bw, bh], "iscrowd": 0})
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(os.path.join(out, "images", f"{k}.jpg"), quality=90)
    return annotations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--images", type=int, required=True)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--empty_files", action="store_true", help="annotations only; image files left empty")
    args = parser.parse_args()
    os.makedirs(os.path.join(args.out, "images"), exist_ok=True)
    jobs = [(args.out, k, args.width, args.height, args.seed, args.empty_files) for k in range(args.images)]
    annotations = []
    with ProcessPoolExecutor() as pool:
        for anns in pool.map(_image, jobs, chunksize=64):
            annotations += anns
    for i, ann in enumerate(annotations):
        ann["id"] = i + 1
    images = [
        {"id": k + 1, "file_name": f"{k}.jpg", "width": args.width, "height": args.height} for k in range(args.images)
    ]
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(CLASSES)]
    with open(os.path.join(args.out, "train.json"), "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
    print(f"wrote {args.images} images, {len(annotations)} boxes to {args.out}")


if __name__ == "__main__":
    main()
