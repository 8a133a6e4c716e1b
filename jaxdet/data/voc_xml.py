"""Pascal VOC folders: `--config.data.format=voc_xml --config.data.root=DIR`.

    DIR/JPEGImages/<id>.jpg  DIR/Annotations/<id>.xml  DIR/ImageSets/Main/{train,val}.txt

Class names are every object name in the annotations of both lists, sorted. VOC pixel
indices are 1-based: (xmin - 1, ymin - 1, xmax, ymax) as in detectron2 (data.voc_zero_based=True:
(xmin, ymin, xmax, ymax), for tools that write 0-based files). Objects marked
`difficult` are neither trained on nor counted in evaluation (they become ignore
regions, COCO's crowd), as in mmdetection and the VOC metric.
"""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET

from jaxdet.data.annotated import Annotated, LoadReport, clip_box, image_size
from jaxdet.data.annotation_table import AnnotationTable
from jaxdet.errors import ConfigError


def _split_ids(root: str, split: str) -> list[str]:
    path = os.path.join(root, "ImageSets", "Main", f"{split}.txt")
    if not os.path.isfile(path):
        raise ConfigError(f"VOC split list {path!r} does not exist (expected ImageSets/Main/{split}.txt)")
    with open(path) as f:
        ids = [line.split()[0] for line in f if line.strip()]
    if not ids:
        raise ConfigError(f"VOC split list {path!r} is empty")
    return ids


def _parse(root: str, image_id: str) -> ET.Element:
    path = os.path.join(root, "Annotations", f"{image_id}.xml")
    if not os.path.isfile(path):
        raise ConfigError(f"annotation {path!r} for image {image_id!r} (listed in ImageSets/Main) does not exist")
    try:
        return ET.parse(path).getroot()
    except ET.ParseError as e:
        raise ConfigError(f"annotation {path!r} is not valid XML: {e}") from None


def voc_class_names(root: str) -> list[str]:
    """Sorted object names over the train and val lists' annotations."""
    names = set()
    for split in ("train", "val"):
        for image_id in _split_ids(root, split):
            for obj in _parse(root, image_id).iter("object"):
                names.add((obj.findtext("name") or "").strip())
    names.discard("")
    if not names:
        raise ConfigError(f"no object names in the annotations under {root!r}")
    return sorted(names)


def _size(ann) -> tuple[int, int] | None:
    """(height, width) from the annotation's <size>, or None (then the image header is read)."""
    try:
        h, w = int(ann.findtext("size/height")), int(ann.findtext("size/width"))
    except (TypeError, ValueError):
        return None
    return (h, w) if h > 0 and w > 0 else None


def load_voc(
    root: str, split: str, class_names: list[str], skip_bad: bool = False, zero_based: bool = False
) -> tuple[AnnotationTable, LoadReport]:
    """Reads ImageSets/Main/<split>.txt's images and annotations (see the module docstring);
    `zero_based`: corners as 0-based pixel indices (some labelling tools), not VOC's 1-based."""
    report = LoadReport(source=f"{root} ({split})")
    # Labelling tools that write VOC's 1-based corners put an object at the image's edge at
    # xmin=0, which lies outside: clipping it is right, and the log line says why it happens.
    report.clip_note = (
        " (0-based corners: data.voc_zero_based=True)"
        if zero_based
        else " (VOC's 1-based corners: xmin=0 lies outside; data.voc_zero_based=True reads 0-based files)"
    )
    offset = 0.0 if zero_based else 1.0
    label_of = {name: i for i, name in enumerate(class_names)}
    out = Annotated(list(class_names), list(range(len(class_names))))
    for number, image_id in enumerate(_split_ids(root, split), start=1):
        ann = _parse(root, image_id)
        where = os.path.join(root, "Annotations", f"{image_id}.xml")
        name = ann.findtext("filename") or f"{image_id}.jpg"
        size = image_size(
            os.path.join(root, "JPEGImages", name), f"listed in {split}.txt", skip_bad, report, _size(ann)
        )
        if size is None:
            continue
        height, width = size
        objects, ignore = [], []
        for obj in ann.iter("object"):
            cls = (obj.findtext("name") or "").strip()
            if cls not in label_of:
                raise ConfigError(f"{where}: object name {cls!r} is not a class; classes: {class_names}")
            bb = obj.find("bndbox")
            try:
                x1, y1, x2, y2 = (float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
            except (AttributeError, TypeError, ValueError):
                raise ConfigError(f"{where}: an object {cls!r} has no numeric bndbox xmin/ymin/xmax/ymax") from None
            box = clip_box([x1 - offset, y1 - offset, x2, y2], width, height, report)
            if box is not None:
                difficult = (obj.findtext("difficult") or "0").strip() == "1"
                (ignore if difficult else objects).append((box, label_of[cls]))
        out.add(name, number, (height, width), objects, ignore, report)
    return out.done(f"{root} ({split})"), report
