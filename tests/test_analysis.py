"""Per-class AP and PR curves equal pycocotools'; the error breakdown on crafted cases."""

import contextlib
import copy
import io

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from test_evaluation import _case

from jaxdet.evaluation import analysis
from jaxdet.evaluation.coco import evaluate_coco_detailed


@pytest.mark.parametrize("seed", [0, 1])
def test_per_class_ap_matches_pycocotools(seed, tmp_path):
    gt, dets = _case(seed)
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        ev = COCOeval(coco_gt, coco_gt.loadRes(copy.deepcopy(dets)), "bbox")
        ev.evaluate()
        ev.accumulate()
    ref = ev.eval["precision"]
    metrics, precision = evaluate_coco_detailed(gt, dets)
    np.testing.assert_allclose(precision, ref, atol=1e-9)
    names = {c["id"]: c["name"] for c in gt["categories"]}
    ids = [c["id"] for c in gt["categories"]]
    rows = analysis.per_class_ap(precision, ids, names)
    for k, row in enumerate(rows):
        p = ref[:, :, k, 0, -1]
        want = p[p > -1].mean() if (p > -1).any() else -1.0
        assert row["AP"] == pytest.approx(want)
    # The mean over classes with ground truth is the summary AP.
    assert np.mean([r["AP"] for r in rows if r["AP"] >= 0]) == pytest.approx(metrics["AP"])
    assert rows[-1]["AP"] == -1.0  # the class absent from the ground truth
    assert "| c3 | n/a | n/a | n/a |" in analysis.per_class_markdown(rows)
    analysis.plot_pr_curves(precision, ids, names, str(tmp_path / "pr.png"))
    assert (tmp_path / "pr.png").stat().st_size > 1000


def test_error_breakdown_on_crafted_detections():
    gt = {
        "images": [{"id": 1}, {"id": 2}, {"id": 3}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [50, 50, 10, 10]},
            {"id": 3, "image_id": 1, "category_id": 1, "bbox": [80, 0, 10, 10]},  # never found: missed
            {"id": 4, "image_id": 2, "category_id": 1, "bbox": [0, 0, 10, 10], "iscrowd": 1},  # skipped
        ],
        "categories": [{"id": 1}, {"id": 2}],
    }
    d = lambda img, cat, box, s=0.9: {"image_id": img, "category_id": cat, "bbox": box, "score": s}  # noqa: E731
    dets = [
        d(1, 1, [0, 0, 10, 10]),  # correct
        d(1, 1, [0, 0, 10, 9], 0.8),  # duplicate of the same object
        d(1, 1, [50, 50, 10, 10]),  # wrong class (object 2 is class 2)
        d(1, 2, [55, 55, 10, 10]),  # class 2 at IoU 25/175 ~ 0.14: poor localisation
        d(1, 2, [200, 200, 5, 5]),  # background
        d(3, 1, [0, 0, 5, 5]),  # image without objects: background
        d(1, 1, [0, 0, 10, 10], 0.1),  # under the score threshold: not counted
    ]
    c = analysis.error_breakdown(gt, dets, score_threshold=0.3)
    assert c == {"detections": 6, "correct": 1, "wrong_class": 1, "poor_localisation": 1, "duplicate": 1,
                 "background": 2, "ground_truth": 3, "missed": 2}  # fmt: skip
    assert "missed objects 2 (66.7% of objects)" in "\n".join(analysis.error_lines(c, 0.3))
