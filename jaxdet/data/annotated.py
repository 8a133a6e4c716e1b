"""What every folder-dataset loader returns, and the checks they share.

A loader reads one split's annotations into an `AnnotationTable` (file names, image
sizes, xyxy pixel boxes, labels, crowd/ignore regions; no pixels: images are read when
training asks for them) and a `LoadReport` of everything it repaired or skipped, which
the trainer prints at start-up: nothing is dropped without being counted.
"""

from __future__ import annotations

import dataclasses
import math
import os

from jaxdet.data.annotation_table import AnnotationTable, TableBuilder
from jaxdet.data.decode import header_size
from jaxdet.errors import ConfigError

# Above this fraction of a split's boxes dropped, the load report warns loudly.
WARN_DROPPED = 0.2


@dataclasses.dataclass
class LoadReport:
    """What loading repaired or skipped, by kind; `lines()` for the start-up log."""

    source: str
    images: int = 0
    negatives: int = 0
    boxes: int = 0
    crowd_boxes: int = 0
    clipped_boxes: int = 0
    clip_note: str = ""  # the format's coordinate convention, said where clipping is reported
    dropped_boxes: dict[str, int] = dataclasses.field(default_factory=dict)
    skipped_images: list[str] = dataclasses.field(default_factory=list)

    def drop(self, why: str) -> None:
        self.dropped_boxes[why] = self.dropped_boxes.get(why, 0) + 1

    def check(self, split: str, allow_no_boxes: bool) -> list[str]:
        """Refuses a split left with no boxes (no metric could come of it) unless
        `allow_no_boxes`; returns warning lines when more than `WARN_DROPPED` of its boxes
        were dropped (the usual sign of a format mistake: pixel YOLO labels, swapped sides)."""
        dropped = sum(self.dropped_boxes.values())
        total = self.boxes + self.crowd_boxes + dropped
        why = "; ".join(f"{n} {reason}" for reason, n in sorted(self.dropped_boxes.items()))
        if not self.boxes and not allow_no_boxes:
            raise ConfigError(
                f"the {split} split ({self.source}) has no boxes to "
                + ("train on" if split == "train" else "evaluate against")
                + (f": all {dropped} of its boxes were dropped ({why})" if dropped else ": none are annotated")
                + "; fix the annotations (coordinates in the format's units?), or pass "
                "--config.data.allow_no_boxes=True if this is what you mean"
            )
        if total and dropped > WARN_DROPPED * total:
            return [
                f"WARNING: {dropped} of {total} boxes ({100 * dropped / total:.0f}%) of the {split} split "
                f"({self.source}) were dropped ({why}): check the annotations' format and units"
            ]
        return []

    def lines(self) -> list[str]:
        out = [
            f"{self.source}: {self.images} images ({self.negatives} without objects, kept as negatives), "
            f"{self.boxes} boxes, {self.crowd_boxes} crowd boxes (evaluation only)"
        ]
        if self.clipped_boxes:
            out.append(
                f"  {self.clipped_boxes} boxes reached outside their image and were clipped to it{self.clip_note}"
            )
        for why, n in sorted(self.dropped_boxes.items()):
            out.append(f"  {n} boxes dropped: {why}")
        if self.skipped_images:
            shown = ", ".join(self.skipped_images[:5]) + (" ..." if len(self.skipped_images) > 5 else "")
            out.append(f"  {len(self.skipped_images)} unreadable images skipped (data.skip_bad=True): {shown}")
        return out


class Annotated:
    """A split being read: its class names, the dataset's own id of each label (COCO
    category id, YOLO class) and the `TableBuilder` that collects the images."""

    def __init__(self, class_names: list[str], category_ids: list[int]):
        self.class_names, self.category_ids = list(class_names), list(category_ids)
        self.builder = TableBuilder(self.class_names, self.category_ids)

    def add(self, name: str, image_id: int, size: tuple[int, int], objects, crowd, report) -> None:
        """Appends one image (file `name` relative to the split's image folder, size (height,
        width)). objects / crowd: lists of (xyxy box, label)."""
        self.builder.add(
            name,
            image_id,
            size,
            [b for b, _ in objects],
            [lab for _, lab in objects],
            [b for b, _ in crowd],
            [lab for _, lab in crowd],
        )
        report.images += 1
        report.boxes += len(objects)
        report.crowd_boxes += len(crowd)
        report.negatives += not objects

    def done(self, what: str) -> AnnotationTable:
        """The split's table; a split without a readable image is an error."""
        if not len(self.builder):
            raise ConfigError(f"{what}: no readable images")
        return self.builder.build()


def image_size(
    path: str, where: str, skip_bad: bool, report: LoadReport, size: tuple[int, int] | None = None
) -> tuple[int, int] | None:
    """(height, width) of an image file: `size` when the annotations give it (only the file's
    existence is checked), else read from the file's header. The pixels are decoded later,
    when training reads the image (a corrupt file is found and named then).

    A missing file, or one whose header is unreadable, raises ConfigError naming `path`
    and `where`, or with `skip_bad` is recorded in `report.skipped_images` and gives None.
    """
    if not os.path.isfile(path):
        problem = "does not exist"
    elif size is not None:
        return int(size[0]), int(size[1])
    else:
        size = header_size(path)
        problem = None if size else "is not a readable image (unreadable header)"
    if problem:
        if not skip_bad:
            raise ConfigError(
                f"image {path!r} ({where}) {problem}; "
                "fix or remove it, or set --config.data.skip_bad=True to skip such images"
            )
        report.skipped_images.append(path)
        return None
    return size


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
