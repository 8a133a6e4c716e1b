"""Writes a COCO-JSON detection folder of real photographs with handwritten digits pasted on
them: a dataset with other classes than `jaxdet_shapes`, for fine-tuning measurements.

    pip install scikit-learn scikit-image   # (the images: neither is a jaxdet dependency)
    python tools/make_digits_set.py --out=/tmp/digits --train=1000 --val=300
    python tools/make_digits_set.py --out=/tmp/dense --dense   # 20-60 small digits per image

Backgrounds are random crops of scikit-image's sample photographs (astronaut, coffee, cat,
rocket, ...), flipped and resized to --size; the objects are scikit-learn's 8x8 handwritten
digits (1,797 scans), upscaled to 12-40 px (--dense: 8-16 px), in a random colour, with
their own ink as the mask. Classes "0".."9" (category ids 1..10). Training images use the
first 1,400 digit scans, validation the rest, so no scan is in both. Deterministic in --seed.
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
from PIL import Image

PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "camera", "coins", "hubble_deep_field",
          "immunohistochemistry", "retina", "cat", "horse", "brick", "grass", "gravel", "moon")  # fmt: skip


def _photos() -> list[np.ndarray]:
    import skimage.data

    out = []
    for name in PHOTOS:
        image = np.asarray(getattr(skimage.data, name)())
        if image.dtype == bool:
            image = image.astype(np.uint8) * 255
        if image.ndim == 2:
            image = np.repeat(image[..., None], 3, -1)
        out.append(image[..., :3].astype(np.uint8))
    return out


def _background(rng, photos, size: int) -> np.ndarray:
    photo = photos[rng.integers(len(photos))]
    h, w = photo.shape[:2]
    side = int(rng.integers(min(h, w) // 3, min(h, w) + 1))
    y, x = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = Image.fromarray(photo[y : y + side, x : x + side]).resize((size, size), Image.BILINEAR)
    out = np.asarray(crop, np.float32)
    return out[:, ::-1] if rng.random() < 0.5 else out


def _overlap(a, b) -> float:
    """Intersection of two squares (x, y, side) over the smaller one's area."""
    ix = max(0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[1] + a[2], b[1] + b[2]) - max(a[1], b[1]))
    return ix * iy / min(a[2], b[2]) ** 2


def _image(rng, photos, digits, labels, size: int, dense: bool) -> tuple[np.ndarray, list]:
    pixels = _background(rng, photos, size)
    n = int(rng.integers(20, 61)) if dense else int(rng.integers(1, 7))
    lo, hi = (8, 17) if dense else (12, 41)
    objects, squares = [], []
    for _ in range(n):
        k = int(rng.integers(len(digits)))
        side = int(rng.integers(lo, hi))
        ink = np.asarray(Image.fromarray((digits[k] * 255 / 16).astype(np.uint8)).resize((side, side), Image.BILINEAR))
        alpha = (ink.astype(np.float32) / 255)[..., None]
        for _ in range(10):  # a place that covers no earlier digit by more than a fifth of either
            x, y = int(rng.integers(0, size - side + 1)), int(rng.integers(0, size - side + 1))
            if all(_overlap((x, y, side), placed) <= 0.2 for placed in squares):
                break
        else:
            continue
        squares.append((x, y, side))
        colour = rng.uniform(0, 255, 3)
        region = pixels[y : y + side, x : x + side]
        pixels[y : y + side, x : x + side] = region * (1 - alpha) + colour * alpha
        ys, xs = np.nonzero(ink > 64)  # the digit's own extent inside its square
        if len(xs):
            objects.append((int(labels[k]), [x + int(xs.min()), y + int(ys.min()), int(xs.max() - xs.min() + 1),
                                             int(ys.max() - ys.min() + 1)]))  # fmt: skip
    return np.clip(pixels, 0, 255).astype(np.uint8), objects


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--train", type=int, default=1000)
    parser.add_argument("--val", type=int, default=300)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--dense", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from sklearn.datasets import load_digits

    digits = load_digits()
    photos = _photos()
    os.makedirs(os.path.join(args.out, "images"), exist_ok=True)
    categories = [{"id": d + 1, "name": str(d)} for d in range(10)]
    for split, n, scans in (("train", args.train, slice(0, 1400)), ("val", args.val, slice(1400, None))):
        rng = np.random.default_rng([args.seed, split == "val"])
        images, annotations = [], []
        for i in range(n):
            pixels, objects = _image(rng, photos, digits.images[scans], digits.target[scans], args.size, args.dense)
            name = f"{split}_{i:05d}.jpg"
            Image.fromarray(pixels).save(os.path.join(args.out, "images", name), quality=92)
            images.append({"id": i + 1, "file_name": name, "width": args.size, "height": args.size})
            for label, box in objects:
                annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": label + 1,
                                    "bbox": box, "area": box[2] * box[3], "iscrowd": 0})  # fmt: skip
        with open(os.path.join(args.out, f"{split}.json"), "w") as f:
            json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
        print(f"{split}: {n} images, {len(annotations)} boxes")
    print(f"--config.data.format=coco_json --config.data.train_annotations={args.out}/train.json "
          f"--config.data.train_images={args.out}/images --config.data.val_annotations={args.out}/val.json "
          f"--config.data.val_images={args.out}/images")  # fmt: skip


if __name__ == "__main__":
    main()
