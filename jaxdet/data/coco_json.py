"""COCO-format JSON + an image folder -> the annotation table the pipeline trains on.

    --config.data.format=coco_json
    --config.data.train_annotations=PATH.json --config.data.train_images=DIR
    --config.data.val_annotations=PATH.json --config.data.val_images=DIR

Nothing is silently lost. Bad inputs either stop the load with a message naming the
file and the record, or (where a fix is unambiguous) are repaired and counted in a
`LoadReport` that the trainer logs at start-up:

- missing image: an error naming the file at start-up; a corrupt one when training first
  decodes it; with `skip_bad=True` either is skipped (replaced) and counted;
- a box with NaN, or with width or height <= 0: dropped and counted; a box reaching
  outside its image: clipped to it and counted (dropped if nothing is left);
- crowd annotations (`iscrowd=1`): not trained on, kept for evaluation (COCO's rule);
- an annotation of a missing image, a category id not in `categories`, a malformed or
  empty file: an error naming what and where;
- two image records with one id, two annotations with one id, or two image records for
  one file: an error naming both records (each file would get the other's boxes);
- images without annotations: kept, as negatives.
"""

from __future__ import annotations

import json
import os

from jaxdet.data.annotated import Annotated, LoadReport, image_size, xywh_box
from jaxdet.data.annotation_table import AnnotationTable
from jaxdet.errors import ConfigError


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


def _refuse_duplicates(path: str, data: dict) -> None:
    """Two image records with one id or one file, or two annotations with one id, are errors
    naming both records (position in the list and content)."""

    def first_repeat(records: list, key, what: str) -> None:
        seen: dict = {}
        for k, record in enumerate(records):
            value = key(k, record)
            if value is None:
                continue
            if value in seen:
                j = seen[value]
                raise ConfigError(
                    f"{path}: {what} {value!r} appears twice: {what.split()[0]}s[{j}] = {_short(records[j])} and "
                    f"{what.split()[0]}s[{k}] = {_short(record)}; each record needs its own (remove or renumber one)"
                )
            seen[value] = k

    first_repeat(data["images"], lambda k, im: int(_field(im, "id", f"{path}: images[{k}]")), "image id")
    first_repeat(
        data["images"],
        lambda k, im: os.path.normpath(str(im["file_name"])) if im.get("file_name") else None,
        "image file_name",
    )
    first_repeat(data["annotations"], lambda k, ann: ann.get("id"), "annotation id")


def _short(record: dict) -> str:
    text = json.dumps(record, sort_keys=True)
    return text if len(text) <= 160 else text[:157] + "..."


def load_coco_json(annotations: str, images_dir: str, skip_bad: bool = False) -> tuple[AnnotationTable, LoadReport]:
    """Reads a COCO detection JSON and its images (see the module docstring for the rules).

    Returns (table, report). Boxes are xyxy pixels of the stored image, whose
    size is the record's `height` / `width` (the file's header when absent; a file that
    disagrees is found when training decodes it); labels are 0..C-1 in the order of
    increasing category id. Images are not read here,
    only checked to exist.
    """
    data = _read_json(annotations)
    report = LoadReport(source=annotations)
    cats = sorted(data["categories"], key=lambda c: _field(c, "id", f"{annotations}: a category"))
    category_ids = [int(c["id"]) for c in cats]
    if len(set(category_ids)) != len(category_ids):
        raise ConfigError(f"{annotations}: category ids repeat: {category_ids}")
    label_of = {cid: i for i, cid in enumerate(category_ids)}
    class_names = [str(c.get("name", c["id"])) for c in cats]

    _refuse_duplicates(annotations, data)
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

    out = Annotated(class_names, category_ids)
    for im in data["images"]:
        image_id = int(im["id"])
        name = str(_field(im, "file_name", f"{annotations}: image {image_id}"))
        path = os.path.join(images_dir, name)
        recorded = (
            (im["height"], im["width"])
            if isinstance(im.get("height"), int) and isinstance(im.get("width"), int)
            else None
        )
        size = image_size(path, f"image_id {image_id} in {annotations}", skip_bad, report, recorded)
        if size is None:
            continue
        height, width = size
        objects, crowd = [], []
        for ann in per_image.get(image_id, []):
            box = xywh_box(ann.get("bbox"), width, height, report)
            if box is not None:
                item = (box, label_of[int(ann["category_id"])])
                (crowd if int(ann.get("iscrowd", 0)) else objects).append(item)
        out.add(name, image_id, (height, width), objects, crowd, report)
    return out.done(f"{annotations} (images in {images_dir!r})"), report
