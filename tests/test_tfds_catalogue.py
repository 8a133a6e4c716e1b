"""TFDS catalogue datasets (coco/2017, voc/2007) through `tfds.testing.mock_data`: nothing
is downloaded and TensorFlow is not needed. The builders' real metadata (features, label
names, splits) is used; the records come from `as_data_source_fn` (what `tfds.data_source`
reads), because mock_data's random generator gives the members of an `objects` sequence
different lengths."""

import io
from unittest import mock

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from jaxdet.data import pipeline, sources
from jaxdet.errors import ConfigError

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


def _fake_as_data_source(builder, split, decoders=None, **kwargs):
    """What `tfds.data_source(..., decoders={"image": SkipDecoding()})` returns: random-access
    records with the encoded image and the objects as stored."""
    objects = builder.info.features["objects"].feature
    ignore_key = "is_crowd" if "is_crowd" in objects else "is_difficult"
    records = []
    for i, (bbox, label, ignore) in enumerate(EXAMPLES):
        ex = {
            "image": _jpeg(),
            "objects": {
                "bbox": np.asarray(bbox, np.float32).reshape(-1, 4),
                "label": np.asarray(label, np.int64),
                ignore_key: np.asarray(ignore, bool),
            },
        }
        if "image/id" in builder.info.features:
            ex["image/id"] = np.int64(100 + i)
        records.append(ex)
    return records


def test_prepared_data_is_read_without_the_dataset_code(tfds_dir, monkeypatch):
    """Where a dataset's code needs TensorFlow and it is absent, the prepared files are read
    through TFDS's read-only builder: the same records."""
    expected = sources.tfds_source("jaxdet_shapes", "validation[:3]", tfds_dir).read(2)

    def no_tensorflow(*args, **kwargs):
        raise ImportError("No module named 'tensorflow'")

    monkeypatch.setattr(tfds, "builder", no_tensorflow)
    source = sources.tfds_source("jaxdet_shapes", "validation[:3]", tfds_dir)
    assert len(source) == 3 and source.class_names == ["circle", "square", "triangle", "ring", "cross"]
    got = source.read(2)
    np.testing.assert_array_equal(got.image, expected.image)
    np.testing.assert_array_equal(got.boxes, expected.boxes)
    with pytest.raises(ConfigError, match=r"'voc/2007' is not prepared in .* needs TensorFlow.*\[tfds\]"):
        sources.tfds_source("voc/2007", "validation", tfds_dir)


@pytest.mark.parametrize("name, split, classes, ignore_key", [
    ("coco/2017", "validation", 80, "is_crowd"),
    ("voc/2007", "validation", 20, "is_difficult"),
])  # fmt: skip
def test_catalogue_dataset_label_map_and_ignored_regions(name, split, classes, ignore_key):
    pytest.importorskip("tensorflow", reason="catalogue builders' code imports TensorFlow (the [tfds] extra)")
    array_record = tfds.core.file_adapters.FileFormat.ARRAY_RECORD
    with (
        tfds.testing.mock_data(as_data_source_fn=_fake_as_data_source),
        mock.patch.object(
            tfds.core.DatasetInfo, "file_format", new_callable=mock.PropertyMock, return_value=array_record
        ),
    ):
        info = tfds.builder(name).info
        assert ignore_key in info.features["objects"].feature  # the real feature the loader reads
        source = sources.tfds_source(name, split)
        table = source.annotations()
        first = source.read(0)
    assert len(source.class_names) == classes and source.class_names == info.features["objects"]["label"].names
    assert (
        len(source) == 3
        and table.column("heights").tolist() == [48] * 3
        and table.column("widths").tolist() == [64] * 3
    )
    np.testing.assert_allclose(first.boxes, [[12.8, 4.8, 38.4, 24.0]], rtol=1e-5)  # xyxy pixels
    assert first.labels.tolist() == [3] and first.image.shape == (
        48,
        64,
        3,
    )  # the crowd / difficult box is not trained on...
    np.testing.assert_allclose(table.crowd(0)[0], [[0, 0, 64, 48]])
    assert table.boxes(1).shape == (0, 4)  # a negative image is kept
    gt = pipeline.coco_ground_truth(table)
    crowd = [a for a in gt["annotations"] if a["iscrowd"]]
    assert len(gt["annotations"]) == 3 and len(crowd) == 1  # ...but the evaluation ignores matches to it
    if name.startswith("coco"):
        assert table.column("image_ids").tolist() == [100, 101, 102]  # COCO's own image ids


def test_data_prepared_as_tfrecord_is_refused_with_the_conversion_command():
    pytest.importorskip("tensorflow", reason="catalogue builders' code imports TensorFlow (the [tfds] extra)")
    tfrecord = tfds.core.file_adapters.FileFormat.TFRECORD
    with (
        tfds.testing.mock_data(as_data_source_fn=_fake_as_data_source),
        mock.patch.object(tfds.core.DatasetInfo, "file_format", new_callable=mock.PropertyMock, return_value=tfrecord),
        pytest.raises(ConfigError, match=r"prepared as tfrecord, which has no random access.*convert_format"),
    ):
        sources.tfds_source("voc/2007", "validation")
