"""What every folder-dataset loader returns, and the checks they share.

A loader reads one split into an `Annotated` (encoded images, xyxy pixel boxes, labels,
crowd/ignore regions) and a `LoadReport` of everything it repaired or skipped, which the
trainer prints at start-up: nothing is dropped without being counted.
"""

from __future__ import annotations

import dataclasses
import io
import math

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
    """A split as parallel per-image lists: encoded images, [K_i, 4] xyxy pixel boxes,
    [K_i] labels 0..C-1, [C_i, 4] crowd/ignore regions (evaluation only) and their labels."""

    class_names: list[str]
    category_ids: list[int]  # the dataset's own id of each label (COCO category id, YOLO class)
    images: list[bytes] = dataclasses.field(default_factory=list)
    boxes: list[np.ndarray] = dataclasses.field(default_factory=list)
    labels: list[np.ndarray] = dataclasses.field(default_factory=list)
    crowd_boxes: list[np.ndarray] = dataclasses.field(default_factory=list)
    crowd_labels: list[np.ndarray] = dataclasses.field(default_factory=list)
    file_names: list[str] = dataclasses.field(default_factory=list)
    image_ids: list[int] = dataclasses.field(default_factory=list)
    heights: list[int] = dataclasses.field(default_factory=list)
    widths: list[int] = dataclasses.field(default_factory=list)

    def add(self, encoded: bytes, name: str, image_id: int, size: tuple[int, int], objects, crowd, report) -> None:
        """Appends one image. objects / crowd: lists of (xyxy box, label)."""
        self.images.append(encoded)
        self.file_names.append(name)
        self.image_ids.append(int(image_id))
        self.heights.append(int(size[0]))
        self.widths.append(int(size[1]))
        for boxes, labels, items in ((self.boxes, self.labels, objects), (self.crowd_boxes, self.crowd_labels, crowd)):
            boxes.append(np.asarray([b for b, _ in items], np.float32).reshape(-1, 4))
            labels.append(np.asarray([lab for _, lab in items], np.int32))
        report.images += 1
        report.boxes += len(objects)
        report.crowd_boxes += len(crowd)
        report.negatives += not objects

    def done(self, what: str) -> Annotated:
        """Turns ids and sizes into arrays; a split without a readable image is an error."""
        if not self.images:
            raise ConfigError(f"{what}: no readable images")
        self.image_ids = np.asarray(self.image_ids, np.int64)
        self.heights, self.widths = np.asarray(self.heights), np.asarray(self.widths)
        return self


def _image_size(data: bytes) -> tuple[int, int] | None:
    """(height, width) after a full decode, or None if the file is not a readable image."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()  # decodes every pixel: a truncated file fails here, not mid-training
            return im.height, im.width
    except Exception:  # PIL raises many types for bad data
        return None


def read_image(path: str, where: str, skip_bad: bool, report: LoadReport) -> tuple[bytes, tuple[int, int]] | None:
    """(encoded bytes, (height, width)) of an image file after a full decode.

    A missing, unreadable or corrupt file raises ConfigError naming `path` and `where`,
    or with `skip_bad` is recorded in `report.skipped_images` and gives None.
    """
    try:
        with open(path, "rb") as f:
            encoded = f.read()
        size = _image_size(encoded)
        problem = None if size else "is not a readable image (corrupt or unsupported)"
    except OSError as e:
        size, problem = None, f"cannot be read ({e.strerror or e})"
    if problem:
        if not skip_bad:
            raise ConfigError(
                f"image {path!r} ({where}) {problem}; "
                "fix or remove it, or set --config.data.skip_bad=True to skip such images"
            )
        report.skipped_images.append(path)
        return None
    return encoded, size


def xywh_box(bbox, width: int, height: int, report: LoadReport) -> list[float] | None:
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
    return clip_box([x, y, x + w, y + h], width, height, report)


def clip_box(box, width: int, height: int, report: LoadReport) -> list[float] | None:
    """xyxy pixels -> clipped to the image, or None when NaN, empty or wholly outside (counted)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        report.drop("NaN or infinite coordinates")
        return None
    if x2 <= x1 or y2 <= y1:
        report.drop("width or height <= 0")
        return None
    cx1, cy1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
    cx2, cy2 = min(max(x2, 0.0), width), min(max(y2, 0.0), height)
    if (cx1, cy1, cx2, cy2) != (x1, y1, x2, y2):
        if cx2 <= cx1 or cy2 <= cy1:
            report.drop("entirely outside the image")
            return None
        report.clipped_boxes += 1
    return [cx1, cy1, cx2, cy2]
