"""Pascal VOC XML and YOLO txt folders: fixtures written here, boxes, labels, bad inputs."""

import os

import numpy as np
import pytest
from PIL import Image

from jaxdet.data.voc_xml import load_voc, voc_class_names
from jaxdet.data.yolo_txt import load_yolo, yolo_class_names
from jaxdet.errors import ConfigError


def _image(path, w, h):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)


def _voc_object(name, box, difficult=0):
    x1, y1, x2, y2 = box
    return (
        f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox><xmin>{x1}</xmin>"
        f"<ymin>{y1}</ymin><xmax>{x2}</xmax><ymax>{y2}</ymax></bndbox></object>"
    )


def _voc(root, objects_by_id, train=("a", "b"), val=("c",)):
    for split, ids in (("train", train), ("val", val)):
        os.makedirs(root / "ImageSets" / "Main", exist_ok=True)
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(ids) + "\n")
    os.makedirs(root / "Annotations", exist_ok=True)
    for image_id, objects in objects_by_id.items():
        _image(str(root / "JPEGImages" / f"{image_id}.jpg"), 40, 30)
        body = "".join(objects)
        (root / "Annotations" / f"{image_id}.xml").write_text(
            f"<annotation><filename>{image_id}.jpg</filename><size><width>40</width><height>30</height>"
            f"</size>{body}</annotation>"
        )
    return str(root)


def test_voc_boxes_classes_difficult_and_negatives(tmp_path):
    root = _voc(
        tmp_path,
        {
            "a": [_voc_object("dog", (1, 1, 10, 20)), _voc_object("cat", (5, 5, 50, 25), difficult=1)],
            "b": [],  # no objects: a negative
            "c": [_voc_object("bird", (3, 4, 8, 9))],
        },
    )
    names = voc_class_names(root)
    assert names == ["bird", "cat", "dog"]  # from both splits' annotations
    data, report = load_voc(root, "train", names)
    np.testing.assert_allclose(data.boxes(0), [[0, 0, 10, 20]])  # 1-based -> 0-based corners
    assert data.labels(0).tolist() == [2]
    np.testing.assert_allclose(data.crowd(0)[0], [[4, 4, 40, 25]])  # difficult: ignore region, clipped
    assert data.boxes(1).shape == (0, 4) and report.negatives == 1 and report.clipped_boxes == 1
    val, _ = load_voc(root, "val", names)
    assert val.labels(0).tolist() == [0] and val.name(0) == "c.jpg"


def test_voc_clipping_names_the_corner_convention_and_zero_based_files_read_as_written(tmp_path):
    root = _voc(tmp_path, {"a": [_voc_object("dog", (0, 0, 10, 20))], "b": [], "c": []})  # a tool's 0-based corners
    data, report = load_voc(root, "train", ["dog"])
    np.testing.assert_allclose(data.boxes(0), [[0, 0, 10, 20]])  # (-1, -1) clipped to the image
    assert report.lines()[1] == (
        "  1 boxes reached outside their image and were clipped to it (VOC's 1-based corners: xmin=0 lies "
        "outside; data.voc_zero_based=True reads 0-based files)"
    )
    root = _voc(tmp_path / "zero", {"a": [_voc_object("dog", (2, 3, 10, 20))], "b": [], "c": []})
    data, report = load_voc(root, "train", ["dog"], zero_based=True)
    np.testing.assert_allclose(data.boxes(0), [[2, 3, 10, 20]])
    assert report.clipped_boxes == 0


def test_voc_errors_name_the_file(tmp_path):
    root = _voc(tmp_path, {"a": [_voc_object("dog", (1, 1, 10, 20))], "c": []}, train=("a", "zzz"))
    with pytest.raises(ConfigError, match=r"zzz\.xml.*does not exist"):
        load_voc(root, "train", ["dog"])
    (tmp_path / "Annotations" / "c.xml").write_text("<annotation><object>")
    with pytest.raises(ConfigError, match=r"c\.xml.*not valid XML"):
        load_voc(root, "val", ["dog"])
    with pytest.raises(ConfigError, match=r"ImageSets/Main/test\.txt"):
        load_voc(root, "test", ["dog"])
    (tmp_path / "Annotations" / "c.xml").write_text(
        "<annotation><filename>c.jpg</filename>" + _voc_object("cow", (1, 1, 5, 5)) + "</annotation>"
    )
    with pytest.raises(ConfigError, match=r"object name 'cow' is not a class"):
        load_voc(root, "val", ["dog"])


def _yolo(root, labels, names="names: [cat, dog]\n"):
    (root / "data.yaml").parent.mkdir(parents=True, exist_ok=True)
    (root / "data.yaml").write_text(names)
    for split, files in labels.items():
        for stem, text in files.items():
            _image(str(root / "images" / split / f"{stem}.png"), 40, 20)
            if text is not None:
                os.makedirs(root / "labels" / split, exist_ok=True)
                (root / "labels" / split / f"{stem}.txt").write_text(text)
    return str(root)


def test_yolo_boxes_names_and_negatives(tmp_path):
    root = _yolo(tmp_path, {"train": {"x": "1 0.5 0.5 0.5 0.5\n0 0.95 0.5 0.2 0.2\n", "y": None}, "val": {"z": ""}})
    assert yolo_class_names(root) == ["cat", "dog"]
    data, report = load_yolo(root, "train", ["cat", "dog"])
    np.testing.assert_allclose(data.boxes(0), [[10, 5, 30, 15], [34, 8, 40, 12]], atol=1e-4)  # second clipped
    assert data.labels(0).tolist() == [1, 0] and report.clipped_boxes == 1
    assert data.boxes(1).shape == (0, 4) and report.negatives == 1  # no label file: negative
    assert data.column("heights").tolist() == [20, 20] and data.column("widths").tolist() == [40, 40]  # headers
    (tmp_path / "data.yaml").write_text("names:\n  0: cat\n  1: dog\n")
    assert yolo_class_names(root) == ["cat", "dog"]


@pytest.mark.parametrize(
    "text, message",
    [
        ("5 0.5 0.5 0.1 0.1\n", r"x\.txt:1: class 5 is not in the 2 class names"),
        ("0 0.5 0.5\n", r"x\.txt:1: expected 'class cx cy w h'"),
        ("0 0.5 0.5 0.1 0.1\nzero 1 1 1 1\n", r"x\.txt:2: expected"),
    ],
)
def test_yolo_bad_label_lines(tmp_path, text, message):
    root = _yolo(tmp_path, {"train": {"x": text}})
    with pytest.raises(ConfigError, match=message):
        load_yolo(root, "train", ["cat", "dog"])


def test_yolo_label_without_image_and_missing_names(tmp_path):
    root = _yolo(tmp_path, {"train": {"x": "0 0.5 0.5 0.1 0.1\n"}})
    (tmp_path / "labels" / "train" / "ghost.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    with pytest.raises(ConfigError, match=r"label files without an image.*ghost\.txt"):
        load_yolo(root, "train", ["cat", "dog"])
    os.remove(tmp_path / "data.yaml")
    with pytest.raises(ConfigError, match="expected data.yaml"):
        yolo_class_names(root)


@pytest.mark.parametrize("fmt", ["voc_xml", "yolo_txt"])
def test_sources_load_folder_formats_from_config(tmp_path, fmt):
    from experiments.configs import default
    from jaxdet import configs
    from jaxdet.data import pipeline, sources

    if fmt == "voc_xml":
        root = _voc(tmp_path, {"a": [_voc_object("dog", (1, 1, 10, 20))], "b": [], "c": []})
    else:
        root = _yolo(tmp_path, {"train": {"x": "1 0.5 0.5 0.5 0.5\n", "y": None}, "val": {"z": ""}})
    config = default.get_config("tiny")
    config.data.format, config.data.root = fmt, root
    configs.validate(config, num_devices=1)
    lines = []
    train_src = sources.load(config.data, "train", log=lines.append)
    # Its validation split has no boxes: no metric could come of it, so it is refused unless allowed.
    with pytest.raises(ConfigError, match="val split .* has no boxes to evaluate against: none are annotated"):
        sources.load(config.data, "eval", log=lines.append)
    config.data.allow_no_boxes = True
    val_src = sources.load(config.data, "eval", log=lines.append)
    assert len(train_src) == 2 and len(val_src) == 1 and "2 images (1 without objects" in lines[0]
    batch = next(pipeline.Pipeline(train_src, 32, 4).eval(2))
    assert batch["box_mask"].sum(axis=1).tolist() == [1, 0]
    config.data.root = str(tmp_path / "missing")
    with pytest.raises(ConfigError, match=r"config.data.root=.*missing.*no such directory"):
        configs.validate(config, num_devices=1)


def test_model_class_count_follows_the_data_unless_set():
    from jaxdet.data.classes import Classes

    def model_class_names(names, num_classes):
        return list(Classes.of_model(names, range(len(names)), num_classes).names)

    assert model_class_names(["cat", "dog"], 0) == ["cat", "dog"]
    assert model_class_names(["cat", "dog"], 3) == ["cat", "dog", "class_2"]
    with pytest.raises(ConfigError, match=r"num_classes=1 is fewer than the 2 classes in the data \(cat, dog\)"):
        model_class_names(["cat", "dog"], 1)


def test_a_split_left_without_boxes_stops_the_run_and_heavy_drops_warn(tmp_path):
    """YOLO labels written in pixels instead of normalised units: every box lies outside its
    image and is dropped. Training on nothing would produce no metric: refused at start-up
    with the counts; a split that loses over 20% of its boxes is reported loudly."""
    from experiments.configs import default
    from jaxdet.data import sources

    pixels = "0 20 10 8 6\n1 30 12 10 4\n"  # (40 x 20 images: these are pixel units)
    root = _yolo(tmp_path, {"train": {"x": pixels, "y": pixels}, "val": {"z": "0 0.5 0.5 0.5 0.5\n"}})
    config = default.get_config("tiny")
    config.data.format, config.data.root = "yolo_txt", root
    with pytest.raises(ConfigError, match=r"train split .* no boxes to train on: all 4 of its boxes were dropped \(4 "):
        sources.load(config.data, "train", log=lambda line: None)
    config.data.allow_no_boxes = True
    assert len(sources.load(config.data, "train", log=lambda line: None)) == 2
    (tmp_path / "labels" / "train" / "y.txt").write_text("0 0.5 0.5 0.5 0.5\n")  # 1 of 3 dropped: 33%
    config.data.allow_no_boxes = False
    lines = []
    sources.load(config.data, "train", log=lines.append)
    assert any(line.startswith("WARNING: 2 of 3 boxes (67%) of the train split") for line in lines), lines
