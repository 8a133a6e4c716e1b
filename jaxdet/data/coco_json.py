"""COCO-format JSON + an image folder -> the in-memory arrays the pipeline trains on.

    --config.data.format=coco_json
    --config.data.train_annotations=PATH.json --config.data.train_images=DIR
    --config.data.val_annotations=PATH.json --config.data.val_images=DIR

Nothing is silently lost. Bad inputs either stop the load with a message naming the
file and the record, or (where a fix is unambiguous) are repaired and counted in a
`LoadReport` that the trainer logs at start-up:

- unreadable or corrupt image: an error naming the file; with `skip_bad=True` the image
  is skipped and counted;
- a box with NaN, or with width or height <= 0: dropped and counted; a box reaching
  outside its image: clipped to it and counted (dropped if nothing is left);
- crowd annotations (`iscrowd=1`): not trained on, kept for evaluation (COCO's rule);
- an annotation of a missing image, a category id not in `categories`, a malformed or
  empty file: an error naming what and where;
- images without annotations: kept, as negatives.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
import os

import numpy as np
from PIL import Image

from jaxdet.errors import ConfigError


@dataclasses.dataclass
class LoadReport:
    """What loading repaired or skipped, by kind; `lines()` for the start-up log."""

    source: str
    images: int = 0
    negatives: int = 0
    boxes: int = 0
    crowd_boxes: int = 0
    clipped_boxes: int = 0
    dropped_boxes: dict[str, int] = dataclasses.field(default_factory=dict)
    skipped_images: list[str] = dataclasses.field(default_factory=list)

    def drop(self, why: str) -> None:
        self.dropped_boxes[why] = self.dropped_boxes.get(why, 0) + 1

    def lines(self) -> list[str]:
        out = [
            f"{self.source}: {self.images} images ({self.negatives} without objects, kept as negatives), "
            f"{self.boxes} boxes, {self.crowd_boxes} crowd boxes (evaluation only)"
        ]
        if self.clipped_boxes:
            out.append(f"  {self.clipped_boxes} boxes reached outside their image and were clipped to it")
        for why, n in sorted(self.dropped_boxes.items()):
            out.append(f"  {n} boxes dropped: {why}")
        if self.skipped_images:
            shown = ", ".join(self.skipped_images[:5]) + (" ..." if len(self.skipped_images) > 5 else "")
            out.append(f"  {len(self.skipped_images)} unreadable images skipped (data.skip_bad=True): {shown}")
        return out


@dataclasses.dataclass
class Annotated:
    """A split as parallel lists: encoded images, [K_i, 4] xyxy pixel boxes, [K_i] labels."""

    images: list[bytes]
    boxes: list[np.ndarray]
    labels: list[np.ndarray]
    crowd_boxes: list[np.ndarray]  # [C_i, 4] xyxy, evaluation only
    crowd_labels: list[np.ndarray]
    image_ids: np.ndarray
    heights: np.ndarray
    widths: np.ndarray
    file_names: list[str]
    class_names: list[str]
    category_ids: list[int]  # the file's category id of each label


def _read_json(path: str) -> dict:
    if not os.path.isfile(path):
        raise ConfigError(f"annotation file {path!r} does not exist")
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"cannot read annotation file {path!r}: {e}") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"annotation file {path!r} is not valid JSON: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"annotation file {path!r}: expected a JSON object with images/annotations/categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise ConfigError(
                f"annotation file {path!r} has no {key!r} list (COCO format needs images, annotations and categories)"
            )
    if not data["images"]:
        raise ConfigError(f"annotation file {path!r} lists no images")
    if not data["categories"]:
        raise ConfigError(f"annotation file {path!r} lists no categories")
    return data


def _field(record: dict, key: str, where: str):
    if key not in record:
        raise ConfigError(f"{where} has no {key!r} field")
    return record[key]


def _image_size(data: bytes, path: str) -> tuple[int, int] | None:
    """(height, width) after a full decode, or None if the file is not a readable image."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()  # decodes every pixel: a truncated file fails here, not mid-training
            return im.height, im.width
    except Exception:  # PIL raises many types for bad data
        return None


def load_coco_json(annotations: str, images_dir: str, skip_bad: bool = False) -> tuple[Annotated, LoadReport]:
    """Reads a COCO detection JSON and its images (see the module docstring for the rules).

    Boxes come back as xyxy pixels of the stored image; labels are 0..C-1 in the order of
    increasing category id (`category_ids[label]` maps back).
    """
    data = _read_json(annotations)
    report = LoadReport(source=annotations)
    cats = sorted(data["categories"], key=lambda c: _field(c, "id", f"{annotations}: a category"))
    category_ids = [int(c["id"]) for c in cats]
    if len(set(category_ids)) != len(category_ids):
        raise ConfigError(f"{annotations}: category ids repeat: {category_ids}")
    label_of = {cid: i for i, cid in enumerate(category_ids)}
    class_names = [str(c.get("name", c["id"])) for c in cats]

    per_image: dict[int, list[dict]] = {}
    known_images = {int(_field(im, "id", f"{annotations}: an image")) for im in data["images"]}
    for k, ann in enumerate(data["annotations"]):
        where = f"{annotations}: annotation {ann.get('id', f'#{k}')}"
        image_id = int(_field(ann, "image_id", where))
        if image_id not in known_images:
            raise ConfigError(f"{where} refers to image_id {image_id}, which is not in 'images'")
        cid = int(_field(ann, "category_id", where))
        if cid not in label_of:
            raise ConfigError(f"{where} has category_id {cid}, not in 'categories' (ids {category_ids})")
        per_image.setdefault(image_id, []).append(ann)

    out = Annotated([], [], [], [], [], [], [], [], [], class_names, category_ids)
    ids, heights, widths = [], [], []
    for im in data["images"]:
        image_id = int(im["id"])
        name = str(_field(im, "file_name", f"{annotations}: image {image_id}"))
        path = os.path.join(images_dir, name)
        try:
            with open(path, "rb") as f:
                encoded = f.read()
            size = _image_size(encoded, path)
            problem = None if size else "is not a readable image (corrupt or unsupported)"
        except OSError as e:
            size, problem = None, f"cannot be read ({e.strerror or e})"
        if problem:
            if not skip_bad:
                raise ConfigError(
                    f"image {path!r} (image_id {image_id} in {annotations}) {problem}; "
                    "fix or remove it, or set --config.data.skip_bad=True to skip such images"
                )
            report.skipped_images.append(path)
            continue
        height, width = size
        boxes, labels, crowd, crowd_labels = [], [], [], []
        for ann in per_image.get(image_id, []):
            box = _clean_box(ann.get("bbox"), width, height, report)
            if box is None:
                continue
            if int(ann.get("iscrowd", 0)):
                crowd.append(box)
                crowd_labels.append(label_of[int(ann["category_id"])])
                report.crowd_boxes += 1
            else:
                boxes.append(box)
                labels.append(label_of[int(ann["category_id"])])
        out.images.append(encoded)
        out.boxes.append(np.asarray(boxes, np.float32).reshape(-1, 4))
        out.labels.append(np.asarray(labels, np.int32))
        out.crowd_boxes.append(np.asarray(crowd, np.float32).reshape(-1, 4))
        out.crowd_labels.append(np.asarray(crowd_labels, np.int32))
        out.file_names.append(name)
        ids.append(image_id)
        heights.append(height)
        widths.append(width)
        report.images += 1
        report.boxes += len(boxes)
        report.negatives += not boxes
    if not ids:
        raise ConfigError(f"{annotations}: none of its {len(data['images'])} images could be read from {images_dir!r}")
    out.image_ids = np.asarray(ids, np.int64)
    out.heights, out.widths = np.asarray(heights), np.asarray(widths)
    return out, report


def _clean_box(bbox, width: int, height: int, report: LoadReport) -> list[float] | None:
    """COCO [x, y, w, h] -> xyxy clipped to the image, or None (dropped, counted)."""
    if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
        report.drop("bbox is not [x, y, width, height]")
        return None
    try:
        x, y, w, h = (float(v) for v in bbox)
    except (TypeError, ValueError):
        report.drop("bbox has non-numeric values")
        return None
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        report.drop("NaN or infinite coordinates")
        return None
    if w <= 0 or h <= 0:
        report.drop("width or height <= 0")
        return None
    x1, y1, x2, y2 = x, y, x + w, y + h
    cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
    cx2, cy2 = min(max(x2, 0.0), width), min(max(y2, 0.0), height)
    if (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2):
        if cx2 <= cx1 or cy2 <= cy1:
            report.drop("entirely outside the image")
            return None
        report.clipped_boxes += 1
    return [cx1, cy1, cx2, cy2]
