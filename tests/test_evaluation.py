"""evaluate_coco equals pycocotools on generated cases."""

import contextlib
import copy
import io

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from jaxdet.evaluation.coco import COCO_KEYS, evaluate_coco


def _pycocotools(gt, dets):
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(dets))
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return dict(zip(COCO_KEYS, ev.stats[:12]))


def _case(seed, n_images=12, n_cats=4, crowd=True, empty_images=True, absent_class=True):
    rng = np.random.default_rng(seed)
    images = [{"id": i + 1, "width": 200, "height": 150} for i in range(n_images)]
    cats = [{"id": c + 1, "name": f"c{c}"} for c in range(n_cats)]
    anns, dets = [], []
    gt_cats = list(range(1, n_cats)) if absent_class else list(range(1, n_cats + 1))
    for img in images:
        k = 0 if (empty_images and img["id"] % 5 == 0) else int(rng.integers(1, 6))
        for _ in range(k):
            w, h = rng.uniform(4, 120), rng.uniform(4, 100)
            x, y = rng.uniform(0, 200 - w), rng.uniform(0, 150 - h)
            cat = int(rng.choice(gt_cats))
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": img["id"],
                    "category_id": cat,
                    "bbox": [x, y, w, h],
                    "area": w * h,
                    "iscrowd": int(crowd and rng.random() < 0.1),
                }
            )
            if img["id"] % 7 == 3:
                continue  # images without detections
            for _ in range(int(rng.integers(0, 3))):
                jit = rng.normal(0, 0.15, 4) * [w, h, w, h]
                dets.append(
                    {
                        "image_id": img["id"],
                        "category_id": cat if rng.random() < 0.8 else int(rng.integers(1, n_cats + 1)),
                        "bbox": [x + jit[0], y + jit[1], max(1.0, w + jit[2]), max(1.0, h + jit[3])],
                        "score": float(rng.uniform()),
                    }
                )
        for _ in range(int(rng.integers(0, 3))):  # background false positives, incl. the absent class
            dets.append(
                {
                    "image_id": img["id"],
                    "category_id": n_cats,
                    "bbox": [*rng.uniform(0, 100, 2), 20.0, 20.0],
                    "score": float(rng.uniform()),
                }
            )
    return {"images": images, "annotations": anns, "categories": cats}, dets


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_matches_pycocotools(seed):
    gt, dets = _case(seed)
    ours = evaluate_coco(gt, dets)
    ref = _pycocotools(gt, dets)
    assert set(ours) == set(COCO_KEYS)
    for k in COCO_KEYS:
        assert ours[k] == pytest.approx(ref[k], abs=1e-9), k


def test_perfect_detections_score_one_and_undefined_is_minus_one():
    gt = {
        "images": [{"id": 1, "width": 100, "height": 100}, {"id": 2, "width": 100, "height": 100}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "area": 400, "iscrowd": 0}
        ],
        "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
    }
    dets = [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "score": 0.9}]
    m = evaluate_coco(gt, dets)
    assert m["AP"] == pytest.approx(1.0) and m["APs"] == pytest.approx(1.0)
    assert m["APm"] == -1.0 and m["APl"] == -1.0  # no medium/large ground truth
    assert evaluate_coco(gt, [])["AP"] == 0.0


def test_rejects_unknown_ids():
    gt, dets = _case(0)
    with pytest.raises(ValueError, match="image_id 999"):
        evaluate_coco(gt, [{"image_id": 999, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1.0}])
