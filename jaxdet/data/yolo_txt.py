"""YOLO txt folders: `--config.data.format=yolo_txt --config.data.root=DIR`.

    DIR/images/{train,val}/<stem>.(jpg|png)   DIR/labels/{train,val}/<stem>.txt
    DIR/data.yaml (`names: [...]` or `names: {0: ..., 1: ...}`) or DIR/names.txt (one per line)

A label line is `class cx cy w h`, all but the class normalised to [0, 1]. An image
without a label file is a negative (the YOLO convention); a label file without an image,
a class id outside the names, or a malformed line is an error naming file and line.
"""

from __future__ import annotations

import os

from jaxdet.data.annotated import Annotated, LoadReport, clip_box, image_size
from jaxdet.data.annotation_table import AnnotationTable
from jaxdet.errors import ConfigError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def yolo_class_names(root: str) -> list[str]:
    """Class names from DIR/data.yaml or DIR/names.txt."""
    yaml_path, txt_path = os.path.join(root, "data.yaml"), os.path.join(root, "names.txt")
    if os.path.isfile(yaml_path):
        import yaml

        try:
            with open(yaml_path) as f:
                names = (yaml.safe_load(f) or {}).get("names")
        except yaml.YAMLError as e:
            raise ConfigError(f"{yaml_path!r} is not valid YAML: {e}") from None
        if isinstance(names, dict):
            if sorted(names) != list(range(len(names))):
                raise ConfigError(f"{yaml_path!r}: names keys must be 0..N-1, got {sorted(names)}")
            names = [names[i] for i in range(len(names))]
        if not isinstance(names, list) or not names:
            raise ConfigError(f"{yaml_path!r} needs a non-empty 'names' list or {{id: name}} map")
        return [str(n) for n in names]
    if os.path.isfile(txt_path):
        with open(txt_path) as f:
            names = [line.strip() for line in f if line.strip()]
        if not names:
            raise ConfigError(f"{txt_path!r} is empty")
        return names
    raise ConfigError(f"no class names under {root!r}: expected data.yaml (names: [...]) or names.txt")


def load_yolo(
    root: str, split: str, class_names: list[str], skip_bad: bool = False
) -> tuple[AnnotationTable, LoadReport]:
    """Reads images/<split> and labels/<split> (see the module docstring)."""
    image_dir, label_dir = os.path.join(root, "images", split), os.path.join(root, "labels", split)
    if not os.path.isdir(image_dir):
        raise ConfigError(f"YOLO image folder {image_dir!r} does not exist")
    images = sorted(f for f in os.listdir(image_dir) if f.lower().endswith(IMAGE_EXTENSIONS))
    stems = {os.path.splitext(f)[0] for f in images}
    if os.path.isdir(label_dir):
        orphans = sorted(f for f in os.listdir(label_dir) if f.endswith(".txt") and f[:-4] not in stems)
        if orphans:
            raise ConfigError(f"label files without an image in {image_dir!r}: {', '.join(orphans[:5])}")
    report = LoadReport(source=f"{root} ({split})")
    out = Annotated(list(class_names), list(range(len(class_names))))
    for number, name in enumerate(images, start=1):
        size = image_size(os.path.join(image_dir, name), f"{split} split", skip_bad, report)
        if size is None:
            continue
        height, width = size
        objects = []
        label_path = os.path.join(label_dir, os.path.splitext(name)[0] + ".txt")
        if os.path.isfile(label_path):
            with open(label_path) as f:
                lines = f.read().splitlines()
            for line_no, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                parts = line.split()
                try:
                    cls, cx, cy, w, h = int(parts[0]), *(float(v) for v in parts[1:5])
                    if len(parts) != 5:
                        raise ValueError
                except (ValueError, IndexError):
                    raise ConfigError(f"{label_path}:{line_no}: expected 'class cx cy w h', got {line!r}") from None
                if not 0 <= cls < len(class_names):
                    raise ConfigError(
                        f"{label_path}:{line_no}: class {cls} is not in the {len(class_names)} class names"
                    )
                box = [(cx - w / 2) * width, (cy - h / 2) * height, (cx + w / 2) * width, (cy + h / 2) * height]
                box = clip_box(box, width, height, report)
                if box is not None:
                    objects.append((box, cls))
        out.add(name, number, (height, width), objects, [], report)
    return out.done(f"{image_dir}"), report
