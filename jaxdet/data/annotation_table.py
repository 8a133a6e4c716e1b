"""A split's annotations as a few flat arrays, memory-mapped and shared by input workers.

COCO train2017 has 118,287 images and ~860,000 boxes: as Python lists of small arrays
and strings that is hundreds of MB per process, copied again into every input worker.
Here it is ten flat arrays (~20 MB for COCO) written once to a temporary directory and
opened with `mmap_mode="r"`: the input workers unpickle a table as its directory name
and map the same pages, so the annotations exist once in memory however many workers
read them. Images are never part of a table: sources read them on access.

Ragged per-image data (boxes, crowd regions, file names) are stored as one array plus
`[n + 1]` start offsets: image i's boxes are `boxes[box_start[i]:box_start[i + 1]]`.
"""

from __future__ import annotations

import atexit
import dataclasses
import os
import shutil
import tempfile

import numpy as np

from jaxdet.data.classes import Classes

_ARRAYS = (
    "image_ids",  # [n] int64, the dataset's own image ids
    "heights",  # [n] int32, pixels of the stored image
    "widths",  # [n] int32
    "box_start",  # [n + 1] int64
    "boxes",  # [N, 4] float32, xyxy pixels
    "labels",  # [N] int32, 0..C-1
    "crowd_start",  # [n + 1] int64
    "crowd_boxes",  # [Nc, 4] float32: regions not trained on, ignored by the evaluation
    "crowd_labels",  # [Nc] int32
    "name_start",  # [n + 1] int64
    "names",  # [L] uint8: file names (relative to the split's image folder), UTF-8, concatenated
)


@dataclasses.dataclass
class AnnotationTable:
    """The annotations of images lo..hi-1 of a split (see the module docstring)."""

    class_names: list[str]
    arrays: dict[str, np.ndarray]
    lo: int = 0
    hi: int | None = None
    directory: str | None = None  # set when the arrays are memory-mapped from files
    # The dataset's own id of each label (COCO category id, VOC/YOLO/TFDS class index):
    # what goes back out wherever a category leaves jaxdet. Default: the label itself.
    category_ids: list[int] | None = None

    def __post_init__(self):
        if self.hi is None:
            self.hi = len(self.arrays["image_ids"])
        if self.category_ids is None:
            self.category_ids = list(range(len(self.class_names)))
        self.classes  # (builds the Classes once to check them: one distinct id per class)

    @property
    def classes(self) -> Classes:
        """The split's class names with the dataset's id of each."""
        return Classes(tuple(self.class_names), tuple(self.category_ids))

    def __len__(self) -> int:
        return self.hi - self.lo

    def _span(self, key: str, i: int) -> slice:
        if not 0 <= i < len(self):
            raise IndexError(f"image {i} of a table of {len(self)}")
        start = self.arrays[key]
        return slice(int(start[self.lo + i]), int(start[self.lo + i + 1]))

    def boxes(self, i: int) -> np.ndarray:
        """[K, 4] float32 xyxy pixels of image i (a copy)."""
        return np.array(self.arrays["boxes"][self._span("box_start", i)])

    def labels(self, i: int) -> np.ndarray:
        return np.array(self.arrays["labels"][self._span("box_start", i)])

    def crowd(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        span = self._span("crowd_start", i)
        return np.array(self.arrays["crowd_boxes"][span]), np.array(self.arrays["crowd_labels"][span])

    def name(self, i: int) -> str:
        return bytes(self.arrays["names"][self._span("name_start", i)]).decode("utf-8")

    def column(self, key: str) -> np.ndarray:
        """A per-image array (image_ids, heights, widths) for images lo..hi-1."""
        return np.asarray(self.arrays[key][self.lo : self.hi])

    def box_counts(self) -> np.ndarray:
        """[n] boxes (not crowd regions) per image."""
        return np.diff(self.arrays["box_start"][self.lo : self.hi + 1])

    def take(self, lo: int, hi: int) -> AnnotationTable:
        """Images lo..hi-1 of this table: a view, nothing is copied."""
        lo, hi = max(0, min(lo, len(self))), max(0, min(hi, len(self)))
        return dataclasses.replace(self, lo=self.lo + lo, hi=self.lo + max(lo, hi))

    def shared(self) -> AnnotationTable:
        """This table backed by memory-mapped files (written once), so that it pickles as a path."""
        if self.directory is not None:
            return self
        for parent in dict.fromkeys([_shared_tmp(), tempfile.gettempdir()]):
            if parent is None:
                continue
            _remove_stale(parent)
            directory = tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=parent)
            atexit.register(shutil.rmtree, directory, ignore_errors=True)
            try:
                for key in _ARRAYS:
                    np.save(os.path.join(directory, f"{key}.npy"), self.arrays[key])
            except OSError:  # e.g. a container's small /dev/shm: the disk's temporary directory then
                shutil.rmtree(directory, ignore_errors=True)
                continue
            return dataclasses.replace(self, arrays=_open(directory), directory=directory)
        raise OSError(f"could not write the annotation table to /dev/shm or {tempfile.gettempdir()}")

    def __getstate__(self):
        state = dict(self.__dict__)
        if self.directory is not None:  # workers map the same files instead of receiving copies
            state["arrays"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        if self.arrays is None:
            self.arrays = _open(self.directory)


_PREFIX = "jaxdet-annotations-"


def _remove_stale(parent: str) -> None:
    """Removes tables left by processes that no longer run (killed before their atexit ran)."""
    for name in os.listdir(parent):
        if not name.startswith(_PREFIX):
            continue
        pid = name[len(_PREFIX) :].split("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(os.path.join(parent, name), ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _open(directory: str) -> dict[str, np.ndarray]:
    return {key: np.load(os.path.join(directory, f"{key}.npy"), mmap_mode="r") for key in _ARRAYS}


def _shared_tmp() -> str | None:
    # /dev/shm is memory the kernel shares between processes without a disk behind it.
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


class TableBuilder:
    """Collects a split image by image, then `build()`s its `AnnotationTable`."""

    def __init__(self, class_names: list[str], category_ids: list[int] | None = None):
        self.class_names = list(class_names)
        self.category_ids = None if category_ids is None else [int(c) for c in category_ids]
        self._ids, self._heights, self._widths, self._names = [], [], [], []
        self._boxes, self._labels, self._crowd_boxes, self._crowd_labels = [], [], [], []

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, name: str, image_id: int, size: tuple[int, int], boxes, labels, crowd_boxes=(), crowd_labels=()):
        """One image: size (height, width); boxes [K, 4] xyxy pixels, labels [K]."""
        self._ids.append(int(image_id))
        self._heights.append(int(size[0]))
        self._widths.append(int(size[1]))
        self._names.append(name.encode("utf-8"))
        self._boxes.append(np.asarray(boxes, np.float32).reshape(-1, 4))
        self._labels.append(np.asarray(labels, np.int32).reshape(-1))
        self._crowd_boxes.append(np.asarray(crowd_boxes, np.float32).reshape(-1, 4))
        self._crowd_labels.append(np.asarray(crowd_labels, np.int32).reshape(-1))

    def build(self) -> AnnotationTable:
        def starts(parts):
            return np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)

        def flat(parts, shape, dtype):
            return np.concatenate(parts).astype(dtype) if parts else np.zeros(shape, dtype)

        arrays = {
            "image_ids": np.asarray(self._ids, np.int64),
            "heights": np.asarray(self._heights, np.int32),
            "widths": np.asarray(self._widths, np.int32),
            "box_start": starts(self._boxes),
            "boxes": flat(self._boxes, (0, 4), np.float32),
            "labels": flat(self._labels, (0,), np.int32),
            "crowd_start": starts(self._crowd_boxes),
            "crowd_boxes": flat(self._crowd_boxes, (0, 4), np.float32),
            "crowd_labels": flat(self._crowd_labels, (0,), np.int32),
            "name_start": starts(self._names),
            "names": np.frombuffer(b"".join(self._names), np.uint8).copy(),
        }
        return AnnotationTable(self.class_names, arrays, category_ids=self.category_ids)
