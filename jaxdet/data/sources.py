"""config.data -> the in-memory `Source` of a split, whatever the dataset's format.

Formats (`config.data.format`):
  tfds       a TFDS dataset by name (`data.name`, `data.train_split` / `data.eval_split`),
             the embedded `jaxdet_shapes` included;
  coco_json  a COCO detection JSON + image folder per split (`data.train_annotations`,
             `data.train_images`, `data.val_annotations`, `data.val_images`);
  voc_xml    a Pascal VOC folder `data.root` (JPEGImages/, Annotations/, ImageSets/Main/);
  yolo_txt   a YOLO folder `data.root` (images/{train,val}/, labels/{train,val}/, data.yaml).
Folder formats train on their "train" split and evaluate on "val"; class names and
count come from the data.
The training split is loaded whole on every process (each takes its slice of every
global batch); the evaluation split is loaded per process shard unless `whole`.
"""

from __future__ import annotations

import os

import ml_collections
import numpy as np

from jaxdet.errors import ConfigError

FORMATS = ("tfds", "coco_json", "voc_xml", "yolo_txt")
_FOLDER_FIELDS = {
    "coco_json": ("train_annotations", "train_images", "val_annotations", "val_images"),
    "voc_xml": ("root",),
    "yolo_txt": ("root",),
}


def validate(data: ml_collections.ConfigDict) -> None:
    """Fails naming the first missing or wrong `config.data` field of the chosen format."""
    if data.format not in FORMATS:
        raise ConfigError(f"unknown dataset format {data.format!r} (config.data.format); valid: {FORMATS}")
    for field in _FOLDER_FIELDS.get(data.format, ()):
        path = data[field]
        if not path:
            raise ConfigError(f"config.data.format={data.format!r} needs config.data.{field}")
        want_file = field.endswith("annotations")  # the rest are directories
        if not (os.path.isfile(path) if want_file else os.path.isdir(path)):
            kind = "file" if want_file else "directory"
            raise ConfigError(f"config.data.{field}={path!r}: no such {kind}")


def _shard(source, index: int, count: int):
    """Process `index`'s contiguous share of a `pipeline.Source` (as tfds.even_splits)."""
    n = len(source)
    return source.take(index * n // count, (index + 1) * n // count)


def load(
    data: ml_collections.ConfigDict, which: str, process_index: int = 0, process_count: int = 1, log=print
) -> "pipeline.Source":  # noqa: F821
    """Loads the "train" or "eval" split of `data`; `log` gets the load report lines."""
    # Imported here: `validate` (used by config checks) must not pull in TensorFlow.
    from jaxdet.data import coco_json, pipeline

    if which not in ("train", "eval"):
        raise ValueError(f"which must be 'train' or 'eval', got {which!r}")
    whole = which == "train"
    if data.format == "tfds":
        split = data.train_split if whole else data.eval_split
        pi, pc = (0, 1) if whole else (process_index, process_count)
        return pipeline.load_source(data.name, split, data.data_dir or None, pi, pc)
    prefix = "train" if whole else "val"
    if data.format == "coco_json":
        loaded, report = coco_json.load_coco_json(
            data[f"{prefix}_annotations"], data[f"{prefix}_images"], skip_bad=data.skip_bad
        )
    elif data.format == "voc_xml":
        from jaxdet.data import voc_xml

        names = voc_xml.voc_class_names(data.root)
        loaded, report = voc_xml.load_voc(data.root, prefix, names, skip_bad=data.skip_bad)
    elif data.format == "yolo_txt":
        from jaxdet.data import yolo_txt

        names = yolo_txt.yolo_class_names(data.root)
        loaded, report = yolo_txt.load_yolo(data.root, prefix, names, skip_bad=data.skip_bad)
    else:
        raise ConfigError(f"unknown dataset format {data.format!r} (config.data.format); valid: {FORMATS}")
    for line in report.lines():
        log(line)
    source = pipeline.Source(
        loaded.images,
        loaded.boxes,
        loaded.labels,
        loaded.image_ids,
        np.asarray(loaded.heights),
        np.asarray(loaded.widths),
        loaded.class_names,
        loaded.crowd_boxes,
        loaded.crowd_labels,
        loaded.file_names,
    )
    return source if whole else _shard(source, process_index, process_count)
