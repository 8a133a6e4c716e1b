"""TFDS catalogue datasets (coco/2017, voc/2007) through `tfds.testing.mock_data`: nothing
is downloaded. The builders' real metadata (features, label names, splits) is used; the
examples come from `as_dataset_fn`, because mock_data's random generator gives the
members of an `objects` sequence different lengths."""

import io

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from jaxdet.data import pipeline

# Per example: [ymin, xmin, ymax, xmax] normalised boxes, labels, ignore flags.
EXAMPLES = [
    ([[0.1, 0.2, 0.5, 0.6], [0.0, 0.0, 1.0, 1.0]], [3, 7], [False, True]),
    ([], [], []),  # an image without objects
    ([[0.25, 0.25, 0.75, 0.5]], [1], [False]),
]


def _jpeg(h=48, w=64) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def _fake_as_dataset(builder, split, decoders=None, read_config=None, **kwargs):
    objects = builder.info.features["objects"].feature
    ignore_key = "is_crowd" if "is_crowd" in objects else "is_difficult"
    has_id = "image/id" in builder.info.features

    def gen():
        for i, (bbox, label, ignore) in enumerate(EXAMPLES):
            ex = {
                "image": _jpeg(),
                "objects": {
                    "bbox": np.asarray(bbox, np.float32).reshape(-1, 4),
                    "label": np.asarray(label, np.int64),
                    ignore_key: np.asarray(ignore, bool),
                },
            }
            if has_id:
                ex["image/id"] = np.int64(100 + i)
            yield ex

    signature = {
        "image": tf.TensorSpec([], tf.string),
        "objects": {
            "bbox": tf.TensorSpec([None, 4], tf.float32),
            "label": tf.TensorSpec([None], tf.int64),
            ignore_key: tf.TensorSpec([None], tf.bool),
        },
    }
    if has_id:
        signature["image/id"] = tf.TensorSpec([], tf.int64)
    return tf.data.Dataset.from_generator(gen, output_signature=signature)


@pytest.mark.parametrize("name, split, classes, ignore_key", [
    ("coco/2017", "validation", 80, "is_crowd"),
    ("voc/2007", "validation", 20, "is_difficult"),
])  # fmt: skip
def test_catalogue_dataset_label_map_and_ignored_regions(name, split, classes, ignore_key):
    with tfds.testing.mock_data(as_dataset_fn=_fake_as_dataset):
        info = tfds.builder(name).info
        assert ignore_key in info.features["objects"].feature  # the real feature the loader reads
        source = pipeline.load_source(name, split)
    assert len(source.class_names) == classes and source.class_names == info.features["objects"]["label"].names
    assert len(source) == 3 and source.heights.tolist() == [48] * 3 and source.widths.tolist() == [64] * 3
    np.testing.assert_allclose(source.boxes[0], [[12.8, 4.8, 38.4, 24.0]], rtol=1e-5)  # xyxy pixels
    assert source.labels[0].tolist() == [3]  # the crowd / difficult box is not trained on...
    np.testing.assert_allclose(source.crowd_boxes[0], [[0, 0, 64, 48]])
    assert source.boxes[1].shape == (0, 4)  # a negative image is kept
    gt = pipeline.coco_ground_truth(source)
    crowd = [a for a in gt["annotations"] if a["iscrowd"]]
    assert len(gt["annotations"]) == 3 and len(crowd) == 1  # ...but the evaluation ignores matches to it
    if name.startswith("coco"):
        assert source.image_ids.tolist() == [100, 101, 102]  # COCO's own image ids
