"""Writes a config's dataset as a COCO-JSON folder dataset (images + annotation files).

    python -m experiments.export_coco --config=experiments/configs/default.py --out=/tmp/shapes_coco

produces OUT/annotations/{train,val}.json and OUT/{train,val}/<image_id>.<jpg|png> (the
stored encoded bytes, unchanged), ready for
    --config.data.format=coco_json --config.data.train_annotations=OUT/annotations/train.json
    --config.data.train_images=OUT/train --config.data.val_annotations=OUT/annotations/val.json
    --config.data.val_images=OUT/val
Category ids are label + 1; boxes are [x, y, width, height] in original pixels.
"""

import io
import json
import os

from absl import flags
from ml_collections import config_flags
from PIL import Image

from experiments import cli
from jaxdet.data import pipeline, sources

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file (get_config).")
_OUT = flags.DEFINE_string("out", None, "Output directory.")
flags.mark_flags_as_required(["config", "out"])


def export_split(source, images_dir: str, annotations_path: str) -> int:
    """Writes one split (a `jaxdet.data.readers` source): the encoded images as they are, and
    the COCO JSON. Returns the number of images."""
    os.makedirs(images_dir, exist_ok=True)
    coco = pipeline.coco_ground_truth(source.annotations())
    for i, record in enumerate(coco["images"]):
        encoded = source.raw(i)
        ext = {"JPEG": "jpg", "PNG": "png"}.get(Image.open(io.BytesIO(encoded)).format, "img")
        name = f"{record['id']}.{ext}"
        with open(os.path.join(images_dir, name), "wb") as f:
            f.write(encoded)
        record["file_name"] = name
    os.makedirs(os.path.dirname(annotations_path), exist_ok=True)
    with open(annotations_path, "w") as f:
        json.dump(coco, f)
    return len(source)


def main(argv):
    cli.start(argv, quiet=False)
    out = _OUT.value
    with cli.user_errors():
        for which, name in (("train", "train"), ("eval", "val")):
            source = sources.load(_CONFIG.value.data, which)
            n = export_split(source, os.path.join(out, name), os.path.join(out, "annotations", f"{name}.json"))
            print(f"{name}: {n} images -> {out}/{name}, {out}/annotations/{name}.json")


if __name__ == "__main__":
    cli.run(main)
