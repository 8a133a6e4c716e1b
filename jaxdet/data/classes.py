"""A run's classes: the name and the dataset's own id of each label the model predicts.

Labels inside jaxdet are 0..C-1. Wherever a category leaves jaxdet (COCO results from
evaluation and `predict`, ground truth for the metrics, exports) it goes out as the id the
dataset gave it: COCO JSON category ids (1..90 with gaps on COCO 2017, any integers
elsewhere), VOC / YOLO class indices, TFDS label ids. The run records them in
`workdir/classes.json` as COCO's `categories` list.
"""

from __future__ import annotations

import dataclasses
import json
import os

from jaxdet import files
from jaxdet.errors import ConfigError


@dataclasses.dataclass(frozen=True)
class Classes:
    """names[k] and ids[k] belong to label k."""

    names: tuple[str, ...]
    ids: tuple[int, ...]

    def __post_init__(self):
        if len(self.names) != len(self.ids) or len(set(self.ids)) != len(self.ids):
            raise ValueError(f"each class needs one distinct id: names {self.names}, ids {self.ids}")

    def __len__(self) -> int:
        return len(self.names)

    def category_id(self, label: int) -> int:
        """The dataset's id of label `label` (0..C-1)."""
        return self.ids[int(label)]

    def categories(self) -> list[dict]:
        """COCO `categories`: [{"id", "name"}] in label order."""
        return [{"id": int(i), "name": n} for i, n in zip(self.ids, self.names)]

    @classmethod
    def of_model(cls, names: list[str], ids: list[int], num_classes: int) -> Classes:
        """The model's classes: the data's, or `num_classes` (> 0) of them; the extra ones are
        named class_k and numbered after the data's largest id."""
        if not num_classes:
            return cls(tuple(names), tuple(int(i) for i in ids))
        if num_classes < len(names):
            raise ConfigError(
                f"config.model.num_classes={num_classes} is fewer than the {len(names)} classes in the data "
                f"({', '.join(names[:10])}{' ...' if len(names) > 10 else ''}); use 0 to follow the data"
            )
        extra = range(len(names), num_classes)
        top = max(ids, default=-1)
        return cls(
            tuple(names) + tuple(f"class_{k}" for k in extra),
            tuple(int(i) for i in ids) + tuple(top + 1 + j for j in range(len(extra))),
        )

    def write(self, workdir: str) -> None:
        """workdir/classes.json (written to a temporary file, then renamed)."""
        files.write_atomic(os.path.join(workdir, "classes.json"), json.dumps(self.categories()))

    @classmethod
    def read(cls, workdir: str) -> Classes:
        """What `write` wrote. A run recorded before ids were kept (a list of names) gets the
        ids it wrote out then, label + 1."""
        path = os.path.join(workdir, "classes.json")
        if not os.path.exists(path):
            raise ConfigError(f"{path} does not exist: is {workdir!r} the workdir of a jaxdet run?")
        with open(path) as f:
            recorded = json.load(f)
        if all(isinstance(c, str) for c in recorded):
            return cls(tuple(recorded), tuple(range(1, len(recorded) + 1)))
        return cls(tuple(str(c["name"]) for c in recorded), tuple(int(c["id"]) for c in recorded))
