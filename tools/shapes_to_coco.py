"""Writes `jaxdet_shapes` as a COCO-JSON folder, every image resized by --scale (the fit
report's test: the same objects, larger or smaller than the detector's priors expect).

    python tools/shapes_to_coco.py --out=/tmp/shapes_x2 --scale=2
    python -m experiments.inspect_data --config=experiments/configs/default.py --out=/tmp/inspect_x2 \
        --config.data.format=coco_json --config.data.train_annotations=/tmp/shapes_x2/train.json \
        --config.data.train_images=/tmp/shapes_x2/images --config.data.val_annotations=/tmp/shapes_x2/val.json \
        --config.data.val_images=/tmp/shapes_x2/images --config.data.image_size=256
"""

from __future__ import annotations

import argparse
import io
import json
import os

import numpy as np
from PIL import Image

from jaxdet.data import sources


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--data_dir", default="", help="TFDS data dir ('' = the default)")
    args = parser.parse_args()
    os.makedirs(os.path.join(args.out, "images"), exist_ok=True)
    for split, name in (("train", "train"), ("validation", "val")):
        source = sources.tfds_source("jaxdet_shapes", split, args.data_dir or None)
        table = source.annotations()
        categories = [{"id": i + 1, "name": n} for i, n in enumerate(table.class_names)]
        images, annotations = [], []
        for i in range(len(source)):
            pixels = np.asarray(Image.open(io.BytesIO(source.raw(i))).convert("RGB"))
            h, w = pixels.shape[:2]
            nh, nw = max(1, round(h * args.scale)), max(1, round(w * args.scale))
            file_name = f"{name}_{i:05d}.jpg"
            Image.fromarray(pixels).resize((nw, nh), Image.BILINEAR).save(os.path.join(args.out, "images", file_name))
            images.append({"id": i + 1, "file_name": file_name, "width": nw, "height": nh})
            sx, sy = nw / w, nh / h
            for (x1, y1, x2, y2), label in zip(table.boxes(i), table.labels(i)):
                box = [float(x1 * sx), float(y1 * sy), float((x2 - x1) * sx), float((y2 - y1) * sy)]
                annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": int(label) + 1,
                                    "bbox": box, "area": box[2] * box[3], "iscrowd": 0})  # fmt: skip
        with open(os.path.join(args.out, f"{name}.json"), "w") as f:
            json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
        print(f"{name}: {len(images)} images, {len(annotations)} boxes at x{args.scale}")


if __name__ == "__main__":
    main()
