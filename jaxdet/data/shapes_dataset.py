"""`jaxdet_shapes`: an embedded detection dataset, generated offline from a seed.

Each image is `IMAGE_SIZE` x `IMAGE_SIZE` RGB with 0 to 8 objects of five classes
(circle, square, triangle, ring, cross) drawn over a textured, noisy background.
Objects range from ~8 px to half the image, may overlap (later objects occlude
earlier ones, but never hide more than about half of one) and have random colours
chosen to stay visible against the local background.

Generation is pure numpy and deterministic: example `i` of split `s` depends only on
`(GENERATION_SEED, s, i)`, so every machine builds byte-identical records. It takes
seconds, so jaxdet simply builds it on first use, as ArrayRecord (random access through
`tfds.data_source`), without TensorFlow.
"""

from __future__ import annotations

import io

import numpy as np
import tensorflow_datasets as tfds
from PIL import Image

IMAGE_SIZE = 128
CLASS_NAMES = ("circle", "square", "triangle", "ring", "cross")
MAX_OBJECTS = 8
MIN_SIZE, MAX_SIZE = 8, IMAGE_SIZE // 2
GENERATION_SEED = 20261126
SPLIT_SIZES = {"train": 6000, "validation": 600}
_SPLIT_IDS = {"train": 0, "validation": 1}


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A smooth random colour field plus stripes and pixel noise: [size, size, 3] float."""
    grid = rng.uniform(0, 255, size=(5, 5, 3))
    # Bilinear upsampling of a coarse grid gives large, soft colour blotches.
    coords = np.linspace(0, 4, size)
    i0 = np.clip(np.floor(coords).astype(int), 0, 3)
    t = (coords - i0)[:, None]
    rows = grid[i0] * (1 - t[..., None]) + grid[i0 + 1] * t[..., None]  # [size, 5, 3]
    cols = rows[:, i0] * (1 - t[None, :, :]) + rows[:, i0 + 1] * t[None, :, :]
    image = cols
    if rng.random() < 0.5:  # Stripes give the detector texture that is not an object.
        freq = rng.uniform(0.05, 0.4)
        angle = rng.uniform(0, np.pi)
        yy, xx = np.mgrid[0:size, 0:size]
        wave = np.sin(freq * (xx * np.cos(angle) + yy * np.sin(angle)))
        image = image + rng.uniform(10, 40) * wave[..., None]
    image = image + rng.normal(0, rng.uniform(3, 15), size=image.shape)
    return image


def _shape_mask(kind: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """Boolean mask [size, size] of one shape filling (most of) its square frame."""
    c = (size - 1) / 2.0
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    r = size / 2.0
    name = CLASS_NAMES[kind]
    if name == "circle":
        return (xx - c) ** 2 + (yy - c) ** 2 <= r * r
    if name == "square":
        return np.ones((size, size), bool)
    if name == "triangle":
        # Apex at the top centre, base along the bottom row.
        half_width = (yy + 0.5) / size * r
        return np.abs(xx - c) <= half_width
    if name == "ring":
        d2 = (xx - c) ** 2 + (yy - c) ** 2
        inner = r * rng.uniform(0.45, 0.7)
        return (d2 <= r * r) & (d2 >= inner * inner)
    if name == "cross":
        half = max(1.0, size * rng.uniform(0.12, 0.2))
        return (np.abs(xx - c) <= half) | (np.abs(yy - c) <= half)
    raise ValueError(f"unknown shape kind {kind}")


def _overlap_ok(box: np.ndarray, boxes: list[np.ndarray]) -> bool:
    """Allow overlaps but reject placements that would hide more than half of a box."""
    for other in boxes:
        iw = min(box[2], other[2]) - max(box[0], other[0])
        ih = min(box[3], other[3]) - max(box[1], other[1])
        if iw <= 0 or ih <= 0:
            continue
        inter = iw * ih
        small = min((box[2] - box[0]) * (box[3] - box[1]), (other[2] - other[0]) * (other[3] - other[1]))
        if inter > 0.5 * small:
            return False
    return True


def generate_example(split: str, index: int, size: int = IMAGE_SIZE) -> dict:
    """Renders example `index` of `split` deterministically.

    Returns: {"image": uint8 [size, size, 3], "boxes": float32 [K, 4] xyxy pixels
    (tight around the drawn shape), "labels": int64 [K]} with 0 <= K <= MAX_OBJECTS.
    """
    rng = np.random.default_rng([GENERATION_SEED, _SPLIT_IDS[split], index])
    image = _background(rng, size)
    # About 6% of images are empty: negatives the detector must learn to leave alone.
    num = 0 if rng.random() < 0.06 else int(rng.integers(1, MAX_OBJECTS + 1))
    boxes: list[np.ndarray] = []
    labels: list[int] = []
    for _ in range(num):
        for _attempt in range(20):
            side = int(np.exp(rng.uniform(np.log(MIN_SIZE), np.log(MAX_SIZE))))
            x0 = int(rng.integers(0, size - side + 1))
            y0 = int(rng.integers(0, size - side + 1))
            kind = int(rng.integers(len(CLASS_NAMES)))
            mask = _shape_mask(kind, side, rng)
            ys, xs = np.nonzero(mask)
            box = np.array([x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1], np.float32)
            if _overlap_ok(box, boxes):
                break
        else:
            continue  # A crowded image simply gets fewer objects.
        patch = image[y0 : y0 + side, x0 : x0 + side]
        local = patch.reshape(-1, 3).mean(0)
        for _ in range(10):  # Colours far enough from the background to be seen.
            colour = rng.uniform(0, 255, size=3)
            if np.abs(colour - local).max() > 80:
                break
        shade = colour + rng.normal(0, 6, size=(side, side, 3))
        patch[mask] = shade[mask]
        boxes.append(box)
        labels.append(kind)
    pixels = np.clip(np.rint(image), 0, 255).astype(np.uint8)
    return {
        "image": pixels,
        "boxes": np.array(boxes, np.float32).reshape(-1, 4),
        "labels": np.array(labels, np.int64),
    }


class JaxdetShapes(tfds.core.GeneratorBasedBuilder):
    """Synthetic shapes for detection: registered with TFDS as `jaxdet_shapes`."""

    VERSION = tfds.core.Version("1.1.0")
    RELEASE_NOTES = {
        "1.0.0": "Initial release: 5 classes, 128x128, 6000 train / 600 validation.",
        "1.1.0": "The same examples; jaxdet prepares it as ArrayRecord (random access with tfds.data_source).",
    }

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            description=__doc__,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(IMAGE_SIZE, IMAGE_SIZE, 3), encoding_format="jpeg"),
                    "image/id": tfds.features.Scalar(np.int64),
                    "objects": tfds.features.Sequence(
                        {
                            # TFDS convention (as coco/2017): normalised [ymin, xmin, ymax, xmax].
                            "bbox": tfds.features.BBoxFeature(),
                            "label": tfds.features.ClassLabel(names=list(CLASS_NAMES)),
                        }
                    ),
                }
            ),
            supervised_keys=None,
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        del dl_manager  # Nothing to download: the data is generated.
        return {split: self._generate_examples(split) for split in SPLIT_SIZES}

    def _generate_examples(self, split: str):
        offset = 0 if split == "train" else SPLIT_SIZES["train"]
        for index in range(SPLIT_SIZES[split]):
            ex = generate_example(split, index)
            b = ex["boxes"] / IMAGE_SIZE
            # PIL encodes ~10x faster than TFDS's default path; the bytes pass through as-is.
            jpeg = io.BytesIO()
            Image.fromarray(ex["image"]).save(jpeg, format="JPEG", quality=92)
            jpeg.seek(0)
            yield (
                index,
                {
                    "image": jpeg,
                    "image/id": offset + index + 1,  # Unique ids across splits; COCO ids start at 1.
                    "objects": {
                        "bbox": np.stack([b[:, 1], b[:, 0], b[:, 3], b[:, 2]], axis=1)
                        if len(b)
                        else np.zeros((0, 4), np.float32),
                        "label": ex["labels"],
                    },
                },
            )
