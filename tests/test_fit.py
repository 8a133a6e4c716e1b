"""Defaults fitted to the data: the automatic data.max_boxes, the fit report (what each
detector's priors reach on its canvas, and the advice below 0.98), an evaluation that
never cuts the ground truth (300 boxes on one image), and its progress lines."""

import json
import os

import jax
import ml_collections
import numpy as np
import pytest
from PIL import Image

from experiments.configs import recipe
from jaxdet import configs, console, detectors, parallel
from jaxdet.data import fit
from jaxdet.data.annotation_table import TableBuilder
from jaxdet.detectors import reach
from jaxdet.errors import ConfigError


def _data(max_boxes=0, mosaic=0.0, mixup=0.0):
    return ml_collections.ConfigDict(dict(max_boxes=max_boxes, mosaic_prob=mosaic, mixup_prob=mixup))


def test_automatic_max_boxes_is_the_fullest_image_rounded_up_and_logged():
    counts = np.array([0, 1, 3, 3, 13, 2])
    lines = []
    assert fit.resolve_max_boxes(_data(), counts, lines.append) == 16
    assert lines == [
        "data.max_boxes = 16 (automatic: the most boxes of one image, rounded up to a multiple of 8; boxes per "
        "training image: median 2, 99th percentile 13, most 13)"
    ]
    assert fit.resolve_max_boxes(_data(mosaic=0.5), counts, lines.append) == 56  # 4 images' boxes in a mosaic
    assert fit.resolve_max_boxes(_data(mosaic=0.5, mixup=0.1), counts, lines.append) == 104
    assert fit.resolve_max_boxes(_data(), np.array([0, 0]), lines.append) == 8  # negatives only: the smallest pad
    lines.clear()
    assert fit.resolve_max_boxes(_data(max_boxes=2), counts, lines.append) == 2  # explicit: kept, its cut counted
    assert lines[0].startswith("warning: data.max_boxes=2 is below the 13 boxes of the fullest training image: 13 "
                               "boxes of 3 images lie beyond it")  # fmt: skip
    with pytest.raises(ConfigError, match=r"max_boxes must be >= 0 \(0 = automatic\)"):
        fit.resolve_max_boxes(_data(max_boxes=-1), counts)


def _table(boxes_per_image, size=64):
    builder = TableBuilder(["a", "b"], [1, 2])
    for i, boxes in enumerate(boxes_per_image):
        builder.add(f"{i}.png", i + 1, (size, size), boxes, np.zeros(len(boxes), int))
    return builder.build()


def _config(name, size=64):
    config = recipe(name, "tiny")
    config.data.image_size = size
    if name == "detr":
        config.data.max_boxes = 8
    return configs.resolve(config)


@pytest.mark.parametrize("name", sorted(detectors.DETECTORS))
def test_every_detector_reports_what_its_priors_reach(name):
    rng = np.random.default_rng(0)
    well = []  # boxes of 16-40 px, which every tiny recipe's priors cover at 64 px
    for _ in range(12):
        xy, wh = rng.uniform(0, 24, (3, 2)), rng.uniform(16, 40, (3, 2))
        well.append(np.concatenate([xy, np.minimum(xy + wh, 64)], 1))
    config = _config(name)
    det = detectors.build_detector(config, 2, None)
    lines = reach.report_lines(det, _table(well), config)
    assert lines[0] == f"fit report ({name} at 64 px; 36 boxes of 12 of the 12 images with boxes):"
    share = float(lines[2].split("reachable: ")[1].split()[0])
    assert share >= 0.85, lines  # (SSD's max-IoU: a prior that is two boxes' best goes to one of them)
    # Boxes of 1.5 px, under every stride: out of reach where a prior centre must lie inside the
    # box; max-IoU matchers keep them by their low-quality matches, which the strict share shows.
    tiny = [np.array([[10 * k, 10, 10 * k + 1.5, 11.5] for k in range(1, 5)]) for _ in range(4)]
    lines = reach.report_lines(det, _table(tiny), config)
    assert "16 boxes (100.0%) smaller than the smallest stride" in lines[1]
    if name in ("retinanet", "fcos", "yolov8"):  # ATSS, FCOS ranges, task-aligned candidates
        assert float(lines[2].split("reachable: ")[1].split()[0]) < 0.98 and "below 0.98" in lines[-1], lines
    if name in ("ssd", "faster_rcnn"):
        assert lines[2].endswith("(without low-quality matches): 0.000"), lines


def test_the_advice_names_the_fields_to_change():
    config = _config("retinanet", 128)
    det = detectors.build_detector(config, 2, None)
    small = [np.array([[8 * k, 8, 8 * k + 4, 12] for k in range(1, 8)])]
    advice = reach.report_lines(det, _table(small, 128), config)[-1]
    assert "median side of 4.0 px; smaller than the smallest prior" in advice
    assert "raise data.image_size (to ~" in advice and "model.min_level=2" in advice


def _coco_with_a_crowded_image(root, n_boxes=300):
    """val: one 128 px image with `n_boxes` small boxes, one with 2; train: two images."""
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    rng = np.random.default_rng(0)
    paths = {}
    for split, counts in (("train", (3, 1)), ("val", (n_boxes, 2))):
        images, annotations = [], []
        for k, n in enumerate(counts):
            name = f"{split}{k}.png"
            Image.fromarray(rng.integers(0, 255, (128, 128, 3), dtype=np.uint8)).save(
                os.path.join(root, "images", name)
            )
            images.append({"id": k + 1, "file_name": name, "width": 128, "height": 128})
            for j in range(n):
                x, y = (j % 20) * 6, (j // 20) * 8
                annotations.append({"id": len(annotations) + 1, "image_id": k + 1, "category_id": 1,
                                    "bbox": [x, y, 5, 6], "area": 30, "iscrowd": 0})  # fmt: skip
        paths[split] = os.path.join(root, f"{split}.json")
        with open(paths[split], "w") as f:
            json.dump({"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "dot"}]}, f)
    return dict(format="coco_json", train_annotations=paths["train"], train_images=os.path.join(root, "images"),
                val_annotations=paths["val"], val_images=os.path.join(root, "images"))  # fmt: skip


def test_evaluation_keeps_every_ground_truth_box_and_shows_progress(tmp_path, monkeypatch, capsys):
    from jaxdet.data.classes import Classes
    from jaxdet.detectors import inference
    from jaxdet.evaluation import coco, evaluator
    from jaxdet.evaluation.session import EvalSession

    config = recipe("retinanet", "tiny")
    config.data.update(_coco_with_a_crowded_image(str(tmp_path / "coco")))
    config.data.max_boxes, config.train.eval_batch_size = 16, 1  # far fewer than the 300 boxes
    config = configs.resolve(config)
    mesh = parallel.make_mesh(jax.local_devices()[:1])
    det = detectors.build_detector(config, 1, None)
    seen = {}
    real = coco.evaluate_coco_detailed

    def spy(gt, results):
        seen["gt"] = gt
        return real(gt, results)

    monkeypatch.setattr(coco, "evaluate_coco_detailed", spy)
    monkeypatch.setattr(console, "PROGRESS_EVERY_S", 0.0)  # a line per batch
    session = EvalSession(config, Classes(("dot",), (1,)), det, mesh, str(tmp_path / "w"))
    shapes = inference.abstract_variables(det, config.data.image_size, mesh)
    variables = jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype), shapes)
    evaluator.evaluate(session, variables, 7)
    per_image = np.bincount([a["image_id"] for a in seen["gt"]["annotations"]])
    assert per_image[1] == 300 and per_image[2] == 2
    out = capsys.readouterr().out
    assert "evaluation at step 7: 1/2 images, " in out and " images/s, ETA " in out
    assert "evaluation at step 7: 2 images in " in out


def test_centernet_loses_a_box_whose_centre_cell_holds_one_of_its_class():
    config = _config("centernet")
    det = detectors.build_detector(config, 2, None)
    s = det.stride
    boxes = np.array([[0, 0, 2 * s, 2 * s], [0.2, 0.2, 2 * s, 2 * s], [4 * s, 4 * s, 6 * s, 6 * s]], np.float32)
    same, _ = reach.reach(det, boxes, np.zeros(3, int), np.array([0, 0, 0]))
    other, _ = reach.reach(det, boxes, np.zeros(3, int), np.array([0, 1, 0]))  # its own class's heatmap
    assert same.reached.tolist() == [True, False, True] and other.reached.tolist() == [True, True, True]
