"""COCO-JSON folder datasets: a fixture written here, and every bad input the loader meets."""

import json
import os

import numpy as np
import pytest
from PIL import Image

from jaxdet.data.coco_json import load_coco_json
from jaxdet.errors import ConfigError


def _write_dataset(root, annotations=None, images=None, categories=None):
    """Three images (PNG, JPEG, JPEG), two categories with ids 3 and 7 (not 0-based)."""
    os.makedirs(root / "img", exist_ok=True)
    rng = np.random.default_rng(0)
    for name, (w, h) in {"a.png": (40, 30), "b.jpg": (50, 20), "c.jpg": (16, 16)}.items():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / "img" / name)
    data = {
        "images": images
        or [
            {"id": 1, "file_name": "a.png", "width": 40, "height": 30},
            {"id": 2, "file_name": "b.jpg", "width": 50, "height": 20},
            {"id": 5, "file_name": "c.jpg", "width": 16, "height": 16},  # no annotations
        ],
        "annotations": annotations
        if annotations is not None
        else [
            {"id": 10, "image_id": 1, "category_id": 7, "bbox": [2, 3, 10, 5], "iscrowd": 0},
            {"id": 11, "image_id": 1, "category_id": 3, "bbox": [30, 20, 20, 20], "iscrowd": 0},  # clipped
            {"id": 12, "image_id": 2, "category_id": 3, "bbox": [1, 1, 0, 4], "iscrowd": 0},  # zero width
            {"id": 13, "image_id": 2, "category_id": 3, "bbox": [1, 1, float("nan"), 4], "iscrowd": 0},
            {"id": 14, "image_id": 2, "category_id": 7, "bbox": [100, 100, 5, 5], "iscrowd": 0},  # outside
            {"id": 15, "image_id": 2, "category_id": 7, "bbox": [0, 0, 50, 20], "iscrowd": 1},  # crowd
            {"id": 16, "image_id": 2, "category_id": 7, "bbox": [5, 5, 10, 10]},  # no iscrowd: 0
        ],
        "categories": categories or [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}],
    }
    path = root / "ann.json"
    path.write_text(json.dumps(data))
    return str(path), str(root / "img")


def test_loads_boxes_labels_and_reports_repairs(tmp_path):
    ann, img = _write_dataset(tmp_path)
    data, report = load_coco_json(ann, img)
    assert data.class_names == ["cat", "dog"]  # in the order of the category ids (3, 7)
    assert data.column("image_ids").tolist() == [1, 2, 5]
    assert data.column("heights").tolist() == [30, 20, 16] and data.column("widths").tolist() == [40, 50, 16]
    np.testing.assert_allclose(data.boxes(0), [[2, 3, 12, 8], [30, 20, 40, 30]])  # second clipped to 40x30
    assert data.labels(0).tolist() == [1, 0]
    np.testing.assert_allclose(data.boxes(1), [[5, 5, 15, 15]])
    np.testing.assert_allclose(data.crowd(1)[0], [[0, 0, 50, 20]])
    assert data.boxes(2).shape == (0, 4)  # kept as a negative
    assert [data.name(i) for i in range(3)] == ["a.png", "b.jpg", "c.jpg"]
    assert report.images == 3 and report.negatives == 1 and report.boxes == 3 and report.crowd_boxes == 1
    assert report.clipped_boxes == 1
    assert report.dropped_boxes == {
        "width or height <= 0": 1,
        "NaN or infinite coordinates": 1,
        "entirely outside the image": 1,
    }
    text = "\n".join(report.lines())
    assert "1 boxes dropped: width or height <= 0" in text and "clipped" in text


def test_corrupt_image_is_found_when_read_and_named_or_replaced_and_counted(tmp_path):
    """Images are decoded when training reads them, not at start-up: a corrupt file is
    found then, and named (or, with skip_bad, replaced by the next readable one and counted)."""
    from jaxdet.data import pipeline, readers

    ann, img = _write_dataset(tmp_path)
    with open(os.path.join(img, "b.jpg"), "r+b") as f:  # keep the header, cut the pixels
        f.truncate(60)
    table, report = load_coco_json(ann, img)  # loading reads no pixels
    assert len(table) == 3 and not report.skipped_images
    source = readers.FileSource(table, img)
    stream = pipeline.Pipeline(source, 32, 4).eval(3)
    with pytest.raises(ConfigError, match=r"image .*b\.jpg is not a readable image.*for evaluation.*skip_bad"):
        next(stream)
    batch = next(pipeline.Pipeline(source, 32, 4, skip_bad=True).eval(3))
    assert batch["image_mask"].tolist() == [True, False, True]  # left out of the metrics...
    assert batch["bad_image"].tolist() == [-1, 1, -1] and batch["image_id"][1] == 2  # ...and counted by name
    train = pipeline.Pipeline(source, 32, 4, skip_bad=True).train(batch_size=6, seed=0)
    first = next(train)  # two epochs of three images: b.jpg twice, each replaced by the next image
    assert (first["bad_image"] == 1).sum() == 2 and 2 not in first["image_id"].tolist()
    with pytest.raises(ConfigError, match=r"b\.jpg is not a readable image.*training example"):
        next(pipeline.Pipeline(source, 32, 4).train(batch_size=6, seed=0))


def test_image_of_another_size_than_its_record_is_named(tmp_path):
    from jaxdet.data import pipeline, readers

    images = [{"id": 1, "file_name": "a.png", "width": 41, "height": 30}]  # the file is 40 x 30
    ann, img = _write_dataset(tmp_path, images=images, annotations=[])
    source = readers.FileSource(load_coco_json(ann, img)[0], img)
    with pytest.raises(ConfigError, match=r"a\.png is 40x30 pixels but its annotation says 41x30"):
        next(pipeline.Pipeline(source, 32, 4).eval(1))


def test_missing_image_file(tmp_path):
    ann, img = _write_dataset(tmp_path)
    os.remove(os.path.join(img, "c.jpg"))
    with pytest.raises(ConfigError, match=r"c\.jpg.*does not exist"):
        load_coco_json(ann, img)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"annotations": [{"id": 1, "image_id": 99, "category_id": 3, "bbox": [0, 0, 1, 1]}]}, "image_id 99"),
        ({"annotations": [{"id": 4, "image_id": 1, "category_id": 5, "bbox": [0, 0, 1, 1]}]}, "category_id 5"),
        ({"annotations": [{"id": 4, "category_id": 3, "bbox": [0, 0, 1, 1]}]}, "annotation 4 has no 'image_id'"),
    ],
)
def test_bad_annotations_are_named(tmp_path, kwargs, message):
    ann, img = _write_dataset(tmp_path, **kwargs)
    with pytest.raises(ConfigError, match=message):
        load_coco_json(ann, img)


@pytest.mark.parametrize(
    "images, annotations, message",
    [
        ([{"id": 1, "file_name": "a.png"}, {"id": 1, "file_name": "b.jpg"}], [],
         r"image id 1 appears twice: images\[0\] = .*a\.png.* and images\[1\] = .*b\.jpg"),
        ([{"id": 1, "file_name": "a.png"}, {"id": 2, "file_name": "./a.png"}], [],
         r"image file_name 'a\.png' appears twice: images\[0\] = .* and images\[1\] = .*\./a\.png"),
        ([{"id": 1, "file_name": "a.png"}],
         [{"id": 7, "image_id": 1, "category_id": 3, "bbox": [0, 0, 4, 4]},
          {"id": 7, "image_id": 1, "category_id": 7, "bbox": [1, 1, 4, 4]}],
         r"annotation id 7 appears twice: annotations\[0\] = .* and annotations\[1\] = "),
    ],
)  # fmt: skip
def test_duplicate_ids_and_files_are_errors_naming_both_records(tmp_path, images, annotations, message):
    """Accepted, duplicates gave each file the other's boxes (a perfect detector scored 0.866 AP)."""
    ann, img = _write_dataset(tmp_path, images=images, annotations=annotations)
    with pytest.raises(ConfigError, match=message):
        load_coco_json(ann, img)


def test_size_mismatch_names_an_exif_rotation(tmp_path):
    """jaxdet reads the stored pixels (as COCO's tools); a file whose EXIF says "rotate" and
    whose record has the rotated size gets an error that says so."""
    from jaxdet.data import pipeline, readers

    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees clockwise when shown
    os.makedirs(tmp_path / "img")
    Image.new("RGB", (40, 30)).save(tmp_path / "img" / "r.jpg", exif=exif)
    images = [{"id": 1, "file_name": "r.jpg", "width": 30, "height": 40}]  # the size as shown
    ann, img = _write_dataset(tmp_path, images=images, annotations=[])
    source = readers.FileSource(load_coco_json(ann, img)[0], img)
    message = r"r\.jpg is 40x30 pixels but its annotation says 30x40.*EXIF orientation tag \(6"
    with pytest.raises(ConfigError, match=message):
        next(pipeline.Pipeline(source, 32, 4).eval(1))


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "not valid JSON"),
        ("{not json", "not valid JSON"),
        ("[]", "expected a JSON object"),
        ('{"images": [], "annotations": [], "categories": [{"id": 1}]}', "lists no images"),
        ('{"images": [{"id": 1}], "categories": [{"id": 1}]}', "no 'annotations' list"),
    ],
)
def test_malformed_or_empty_files_are_named(tmp_path, content, message):
    path = tmp_path / "ann.json"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_coco_json(str(path), str(tmp_path))
    with pytest.raises(ConfigError, match="does not exist"):
        load_coco_json(str(tmp_path / "missing.json"), str(tmp_path))


def _config(tmp_path, **data):
    from experiments.configs import default

    config = default.get_config("tiny")
    config.data.format = "coco_json"
    for key, value in data.items():
        config.data[key] = value
    return config


def test_config_names_missing_or_wrong_paths(tmp_path):
    from jaxdet import configs

    ann, img = _write_dataset(tmp_path)
    with pytest.raises(ConfigError, match="needs config.data.train_annotations"):
        configs.validate(_config(tmp_path), num_devices=1)
    paths = dict(train_annotations=ann, train_images=img, val_annotations=ann, val_images=img)
    configs.validate(_config(tmp_path, **paths), num_devices=1)
    with pytest.raises(ConfigError, match=r"config.data.val_images='/nope': no such directory"):
        configs.validate(_config(tmp_path, **{**paths, "val_images": "/nope"}), num_devices=1)
    with pytest.raises(ConfigError, match=r"unknown dataset format 'coco'.*coco_json"):
        configs.validate(_config(tmp_path, **{**paths, "format": "coco"}), num_devices=1)


def test_sources_feed_training_and_evaluation(tmp_path):
    """The loaded split trains on non-crowd boxes; its ground truth keeps crowd regions."""
    from jaxdet.data import pipeline, sources

    ann, img = _write_dataset(tmp_path)
    config = _config(tmp_path, train_annotations=ann, train_images=img, val_annotations=ann, val_images=img)
    lines = []
    train_src = sources.load(config.data, "train", log=lines.append)
    assert len(train_src) == 3 and [train_src.table.name(i) for i in range(3)] == ["a.png", "b.jpg", "c.jpg"]
    assert train_src.table.directory is not None  # memory-mapped: workers share it instead of copying
    assert "3 images (1 without objects" in lines[0]
    gt = pipeline.coco_ground_truth(train_src.annotations())
    crowd = [a for a in gt["annotations"] if a["iscrowd"]]
    assert len(gt["annotations"]) == 4 and len(crowd) == 1 and crowd[0]["image_id"] == 2
    # Evaluation shards: two processes see disjoint halves covering every image.
    halves = [sources.load(config.data, "eval", p, 2, log=lambda _: None) for p in range(2)]
    assert sorted(np.concatenate([h.table.column("image_ids") for h in halves]).tolist()) == [1, 2, 5]
    batch = next(pipeline.Pipeline(train_src, 32, 4).eval(3))
    assert batch["box_mask"].sum(axis=1).tolist() == [2, 1, 0]  # crowd boxes are not trained on


def test_export_writes_a_split_that_loads_back_the_same(tmp_path):
    """experiments.export_coco: the encoded images as they were and a COCO JSON that the
    loader reads back to the same annotations (crowd regions included)."""
    from experiments.export_coco import export_split
    from jaxdet.data import readers

    ann, img = _write_dataset(tmp_path / "src")
    source = readers.FileSource(load_coco_json(ann, img)[0], img)
    out = tmp_path / "out"
    assert export_split(source, str(out / "images"), str(out / "ann.json")) == 3
    again, _ = load_coco_json(str(out / "ann.json"), str(out / "images"))
    for i in range(3):
        np.testing.assert_allclose(again.boxes(i), source.table.boxes(i))
        np.testing.assert_allclose(again.crowd(i)[0], source.table.crowd(i)[0])
        assert again.labels(i).tolist() == source.table.labels(i).tolist()
        assert open(out / "images" / again.name(i), "rb").read() == source.raw(i)
