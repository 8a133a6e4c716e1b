"""Random-access detection sources: example i's pixels are read and decoded when asked for.

Every source has `len()`, `class_names`, `category_ids` (the dataset's own id of each
class), `read(i) -> Example` (raises `BadImage`), `raw(i)` (the encoded bytes),
`where(i)` (the file or record, for error messages), `image_id(i)`, `take(lo, hi)` (a view) and
`annotations()` (the split's `AnnotationTable`, for ground truth and statistics).

- `FileSource`: folder formats (COCO JSON, VOC XML, YOLO txt): the annotation table in
  memory (memory-mapped, shared by workers), the image file read from disk per example,
  as detectron2's dataset mapper does.
- `TfdsSource`: a TFDS dataset prepared as ArrayRecord, read with `tfds.data_source`
  (random access); the record holds the encoded image and its objects.
- `MemorySource`: encoded images held in memory; for tests and small generated data.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from jaxdet.data.annotation_table import AnnotationTable, TableBuilder
from jaxdet.data.decode import BadImage, decode_rgb, header_size, orientation_note
from jaxdet.errors import ConfigError


@dataclasses.dataclass
class Example:
    """One decoded image: uint8 [H, W, 3] RGB, boxes [K, 4] float32 xyxy pixels, labels [K] int32."""

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    image_id: int


@dataclasses.dataclass
class _TableSource:
    """A source whose annotations are an `AnnotationTable`; subclasses say where the bytes are."""

    table: AnnotationTable

    def __len__(self) -> int:
        return len(self.table)

    @property
    def class_names(self) -> list[str]:
        return self.table.class_names

    @property
    def category_ids(self) -> list[int]:
        """The dataset's own id of each class (COCO category ids; VOC/YOLO class indices)."""
        return self.table.category_ids

    def raw(self, i: int) -> bytes:
        raise NotImplementedError

    def read(self, i: int) -> Example:
        """Image i decoded, with its annotations; an image of another size than its record is bad."""
        data = self.raw(i)
        image = decode_rgb(data)
        h, w = int(self.table.column("heights")[i]), int(self.table.column("widths")[i])
        if image.shape[:2] != (h, w):
            raise BadImage(
                f"is {image.shape[1]}x{image.shape[0]} pixels but its annotation says {w}x{h} (width x height)"
                + orientation_note(data)
            )
        return Example(image, self.table.boxes(i), self.table.labels(i), self.image_id(i))

    def image_id(self, i: int) -> int:
        return int(self.table.column("image_ids")[i])

    def take(self, lo: int, hi: int):
        return dataclasses.replace(self, table=self.table.take(lo, hi))

    def annotations(self) -> AnnotationTable:
        return self.table


@dataclasses.dataclass
class FileSource(_TableSource):
    """A folder dataset: `table` (file names relative to `image_dir`) and the image files."""

    image_dir: str

    def where(self, i: int) -> str:
        return os.path.join(self.image_dir, self.table.name(i))

    def raw(self, i: int) -> bytes:
        """The file's encoded bytes. Raises BadImage."""
        try:
            with open(self.where(i), "rb") as f:
                return f.read()
        except OSError as e:
            raise BadImage(f"cannot be read ({e.strerror or e})") from None


@dataclasses.dataclass
class MemorySource(_TableSource):
    """Encoded images in memory (`images[i]` belongs to `table` row i): tests, small generated sets."""

    images: list[bytes]

    def __post_init__(self):
        if len(self.images) != len(self.table.arrays["image_ids"]):
            raise ValueError(f"{len(self.images)} images for a table of {len(self.table.arrays['image_ids'])}")

    def where(self, i: int) -> str:
        return f"in-memory image {self.table.name(i)!r}"

    def raw(self, i: int) -> bytes:
        return self.images[self.table.lo + i]


def memory_source(images: list[bytes], boxes, labels, class_names, image_ids=None, sizes=None) -> MemorySource:
    """A MemorySource from per-image lists (sizes: (h, w) each; read from the headers when None)."""
    builder = TableBuilder(class_names)
    for k, data in enumerate(images):
        size = sizes[k] if sizes is not None else header_size(data)
        image_id = int(image_ids[k]) if image_ids is not None else k + 1
        builder.add(f"image_{image_id}", image_id, size, boxes[k], labels[k])
    return MemorySource(builder.build(), list(images))


def tfds_builder(name: str, data_dir: str | None):
    """`tfds.builder(name)`, or, where the dataset's code needs TensorFlow and it is not
    installed (catalogue datasets such as coco/2017), the read-only builder of the prepared
    files, which needs no dataset code: prepared data is read without TensorFlow."""
    import tensorflow_datasets as tfds

    from jaxdet.data import shapes_dataset  # noqa: F401  (registers `jaxdet_shapes` with TFDS)

    try:
        return tfds.builder(name, data_dir=data_dir)
    except (ImportError, RuntimeError) as e:  # TFDS re-raises a failed import as RuntimeError
        if "tensorflow" not in str(e).lower():
            raise
        from tensorflow_datasets.core import read_only_builder

        try:
            return read_only_builder.builder_from_files(name, data_dir=data_dir)
        except Exception:  # not prepared in data_dir (TFDS raises several types)
            raise ConfigError(
                f"TFDS dataset {name!r} is not prepared in {data_dir or 'the default TFDS data dir'} and its "
                "code needs TensorFlow to prepare it: pip install -e '.[tfds]', run once to prepare it "
                "(as ArrayRecord), then training reads it without TensorFlow"
            ) from None


# Regions not trained on and ignored by the evaluation: COCO's crowds, VOC's difficult objects.
_IGNORE_KEYS = ("is_crowd", "is_difficult")


class TfdsSource:
    """Examples lo..hi-1 of a TFDS split prepared as ArrayRecord, read with `tfds.data_source`.

    Pickles as (name, split, data_dir, range): each input worker opens its own reader.
    Records hold normalised [ymin, xmin, ymax, xmax] boxes; they become xyxy pixels
    once the image is decoded and its size known.
    """

    def __init__(self, name: str, split: str, data_dir: str | None, class_names: list[str], lo=0, hi=None):
        self.name, self.split, self.data_dir, self._class_names = name, split, data_dir, list(class_names)
        self._reader = None
        self.lo = lo
        self.hi = len(self._open()) if hi is None else hi
        self._table: AnnotationTable | None = None

    def _open(self):
        if self._reader is None:
            import tensorflow_datasets as tfds

            builder = tfds_builder(self.name, self.data_dir)
            self._reader = builder.as_data_source(split=self.split, decoders={"image": tfds.decode.SkipDecoding()})
        return self._reader

    def __getstate__(self):
        return {**self.__dict__, "_reader": None, "_table": None}

    def __len__(self) -> int:
        return self.hi - self.lo

    @property
    def class_names(self) -> list[str]:
        return self._class_names

    @property
    def category_ids(self) -> list[int]:
        """TFDS label ids: the ClassLabel index of each class."""
        return list(range(len(self._class_names)))

    def where(self, i: int) -> str:
        return f"example {self.lo + i} of TFDS {self.name} split {self.split!r}"

    def _record(self, i: int) -> tuple[bytes, int, np.ndarray, np.ndarray, np.ndarray]:
        """(encoded image, image id, normalised yxyx boxes [K, 4], labels [K], ignore flags [K])."""
        if not 0 <= i < len(self):
            raise IndexError(f"example {i} of {len(self)}")
        ex = self._open()[self.lo + i]
        objects = ex["objects"]
        yxyx = np.asarray(objects["bbox"], np.float32).reshape(-1, 4)
        labels = np.asarray(objects["label"], np.int32).reshape(-1)
        key = next((k for k in _IGNORE_KEYS if k in objects), None)
        ignore = np.asarray(objects[key], bool).reshape(-1) if key else np.zeros(len(labels), bool)
        image_id = int(ex["image/id"]) if "image/id" in ex else self.lo + i + 1
        return ex["image"], image_id, yxyx, labels, ignore

    def raw(self, i: int) -> bytes:
        return self._record(i)[0]

    def read(self, i: int) -> Example:
        data, image_id, yxyx, labels, ignore = self._record(i)
        image = decode_rgb(data)
        boxes = _pixels(yxyx, *image.shape[:2])
        return Example(image, boxes[~ignore], labels[~ignore], image_id)

    def image_id(self, i: int) -> int:
        return self._record(i)[1]

    def take(self, lo: int, hi: int) -> TfdsSource:
        lo, hi = max(0, min(lo, len(self))), max(0, min(hi, len(self)))
        view = TfdsSource.__new__(TfdsSource)
        view.__dict__.update(self.__getstate__())
        view._reader, view.lo, view.hi = self._reader, self.lo + lo, self.lo + max(lo, hi)
        return view

    def annotations(self) -> AnnotationTable:
        """Reads every record once (image headers only, no pixel decode); kept after the first call."""
        if self._table is None:
            builder = TableBuilder(self._class_names, self.category_ids)
            for i in range(len(self)):
                data, image_id, yxyx, labels, ignore = self._record(i)
                size = header_size(data)
                if size is None:
                    raise BadImage(f"{self.where(i)}: the image header is unreadable")
                boxes = _pixels(yxyx, *size)
                builder.add(
                    str(image_id), image_id, size, boxes[~ignore], labels[~ignore], boxes[ignore], labels[ignore]
                )
            self._table = builder.build()
        return self._table


def _pixels(yxyx: np.ndarray, height: int, width: int) -> np.ndarray:
    """Normalised [ymin, xmin, ymax, xmax] -> xyxy pixels."""
    return np.stack([yxyx[:, 1] * width, yxyx[:, 0] * height, yxyx[:, 3] * width, yxyx[:, 2] * height], axis=1)
