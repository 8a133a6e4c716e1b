"""config.data -> a random-access source of a split (`jaxdet.data.readers`), whatever its format.

Formats (`config.data.format`):
  tfds       a TFDS dataset by name (`data.name`, `data.train_split` / `data.eval_split`),
             the embedded `jaxdet_shapes` included;
  coco_json  a COCO detection JSON + image folder per split (`data.train_annotations`,
             `data.train_images`, `data.val_annotations`, `data.val_images`);
  voc_xml    a Pascal VOC folder `data.root` (JPEGImages/, Annotations/, ImageSets/Main/);
  yolo_txt   a YOLO folder `data.root` (images/{train,val}/, labels/{train,val}/, data.yaml).
Folder formats train on their "train" split and evaluate on "val"; class names and
count come from the data.
Nothing here imports TensorFlow.
"""

from __future__ import annotations

import fcntl
import os

import ml_collections

from jaxdet.data import coco_json, readers, voc_xml, yolo_txt
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
    """Process `index`'s contiguous share of a source (as tfds.even_splits)."""
    n = len(source)
    return source.take(index * n // count, (index + 1) * n // count)


def _prepared(name: str, data_dir: str | None):
    """The dataset's builder, prepared as ArrayRecord if it was not. Preparation holds an
    exclusive lock beside the dataset's folder: processes that start together on a fresh
    disk (a sweep's runs, a job's processes) would otherwise each prepare it, and every one
    but the first fail renaming its copy into place (TFDS's "Cannot rename ... already
    exists"). Prepared data is not locked, so read-only data directories work."""
    builder = readers.tfds_builder(name, data_dir)
    if os.path.isdir(builder.data_dir):
        return builder
    folder = os.path.dirname(builder.data_dir)  # <data_dir>/<name>; versions inside
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, ".prepare.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        # (Built again: whoever held the lock before may have prepared it meanwhile.)
        builder = readers.tfds_builder(name, data_dir)
        builder.download_and_prepare(file_format="array_record")
    return builder


def tfds_source(name: str, split: str, data_dir: str | None = None) -> readers.TfdsSource:
    """A TFDS detection split (features `image`, `objects/bbox|label`) read with `tfds.data_source`.

    A dataset not prepared yet is prepared as ArrayRecord first (`jaxdet_shapes`: in
    seconds, offline, without TensorFlow; catalogue datasets such as coco/2017 download
    and need TensorFlow for that one step, then are read without it). Data prepared as
    TFRecord (no random access) is refused with the command that converts it.
    """
    try:
        builder = _prepared(name, data_dir)
    except ImportError as e:
        raise ConfigError(
            f"preparing TFDS dataset {name!r} needs a package that is not installed ({e}); catalogue datasets "
            "need TensorFlow for this one step: pip install -e '.[tfds]', prepare it once, then training "
            "reads it without TensorFlow"
        ) from None
    # (An empty split list means the metadata is not known yet, as under tfds.testing.mock_data.)
    # TFDS split expressions are allowed ("train[:10%]", "train[:512]+validation"): each part's name is checked.
    unknown = [p.split("[")[0].strip() for p in split.split("+") if p.split("[")[0].strip() not in builder.info.splits]
    if builder.info.splits and unknown:
        raise ConfigError(
            f"dataset {name!r} has no split {unknown[0]!r} (in {split!r}); available: {sorted(builder.info.splits)} "
            "(slices such as 'train[:10%]' or 'train[:512]' work too)"
        )
    file_format = getattr(builder.info, "file_format", None)
    file_format = str(getattr(file_format, "value", file_format) or "")
    if file_format and "array_record" not in file_format:
        raise ConfigError(
            f"TFDS dataset {name!r} in {builder.data_dir} was prepared as {file_format}, which has no random "
            "access; convert it once with `tfds convert_format --dataset_dir="
            f"{builder.data_dir} --out_file_format=array_record` (or prepare it again with "
            "file_format=array_record)"
        )
    class_names = list(builder.info.features["objects"]["label"].names)
    return readers.TfdsSource(name, split, data_dir, class_names)


def load(data: ml_collections.ConfigDict, which: str, process_index: int = 0, process_count: int = 1, log=print):
    """The "train" or "eval" split of `data` as a random-access source; `log` gets the load report lines.

    Only annotations are loaded (a memory-mapped table for folder formats); images are read
    when the pipeline asks for them. The training split is whole on every process (each
    reads its own slice of every global batch); the evaluation split is this process's share.
    """
    if which not in ("train", "eval"):
        raise ValueError(f"which must be 'train' or 'eval', got {which!r}")
    whole = which == "train"
    if data.format == "tfds":
        source = tfds_source(data.name, data.train_split if whole else data.eval_split, data.data_dir or None)
        return source if whole else _shard(source, process_index, process_count)
    prefix = "train" if whole else "val"
    if data.format == "coco_json":
        images = data[f"{prefix}_images"]
        table, report = coco_json.load_coco_json(data[f"{prefix}_annotations"], images, skip_bad=data.skip_bad)
    elif data.format == "voc_xml":
        images = os.path.join(data.root, "JPEGImages")
        names = voc_xml.voc_class_names(data.root)
        table, report = voc_xml.load_voc(
            data.root, prefix, names, skip_bad=data.skip_bad, zero_based=data.get("voc_zero_based", False)
        )
    elif data.format == "yolo_txt":
        images = os.path.join(data.root, "images", prefix)
        names = yolo_txt.yolo_class_names(data.root)
        table, report = yolo_txt.load_yolo(data.root, prefix, names, skip_bad=data.skip_bad)
    else:
        raise ConfigError(f"unknown dataset format {data.format!r} (config.data.format); valid: {FORMATS}")
    for line in report.lines():
        log(line)
    for line in report.check(prefix, data.get("allow_no_boxes", False)):
        log(line)
    source = readers.FileSource(table.shared(), images)
    return source if whole else _shard(source, process_index, process_count)
