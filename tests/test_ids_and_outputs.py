"""Every id and number that leaves jaxdet is the one that came in, and nothing is written
over a user's files: category ids out of evaluation and predict, predict's output names,
and an evaluation of other data kept apart from the run's own results.
"""

import glob
import json
import os

import numpy as np
import pytest
from PIL import Image

from tests.coco_folder import run, train_command, untrained_workdir, write_coco


@pytest.fixture(scope="module")
def trained(tmp_path_factory, compilation_cache) -> tuple[str, dict[str, str]]:
    """A short run on a COCO folder whose category ids are 17 and 44 (as COCO's, not 1..C)."""
    root = tmp_path_factory.mktemp("gapped")
    data = write_coco(str(root / "coco"), n_train=32, n_val=16, category_ids=(17, 44))
    workdir = str(root / "run")
    settings = {"train.steps": 16, "train.eval_every": 16, "train.checkpoint_every": 16, "model.score_threshold": 0.0}
    proc = run(train_command(workdir, data, compilation_cache, **settings))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return workdir, data


def test_gapped_category_ids_go_back_out_and_pycocotools_agrees(trained):
    """The evaluation's detections, scored by pycocotools against the folder's own JSON, give
    jaxdet's metrics; predict writes the same ids; classes.json records them."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    workdir, data = trained
    assert json.load(open(f"{workdir}/classes.json")) == [{"id": 17, "name": "class17"}, {"id": 44, "name": "class44"}]
    detections = json.load(open(f"{workdir}/eval/detections.json"))
    assert detections and {d["category_id"] for d in detections} == {17, 44}
    gt = COCO(data["val_annotations"])
    ev = COCOeval(gt, gt.loadRes(detections), "bbox")
    ev.evaluate(), ev.accumulate(), ev.summarize()
    (row,) = [r for r in map(json.loads, open(f"{workdir}/metrics.jsonl")) if r["split"] == "eval"]
    keys = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")
    np.testing.assert_allclose(ev.stats, [row[k] for k in keys], atol=1e-6)
    assert row["AR100"] > 0  # (a comparison of more than zeros)

    from jaxdet.evaluation import predict

    out = os.path.join(os.path.dirname(workdir), "pred")
    images = sorted(glob.glob(os.path.join(data["val_images"], "val_*.png")))
    results = predict.predict_files(predict.Predictor(workdir), images, out, 0.0)
    assert {r["category_id"] for r in results} == {17, 44}


def test_evaluating_other_data_leaves_the_runs_own_results_alone(trained, tmp_path):
    """experiments.eval with another config writes under eval/, never into metrics.jsonl,
    which a sweep reads as the run's result."""
    from experiments.configs import default
    from jaxdet import sweep
    from jaxdet.evaluation import evaluator

    workdir, data = trained
    before = open(f"{workdir}/metrics.jsonl").read()
    other = write_coco(str(tmp_path / "other"), n_train=2, n_val=4, category_ids=(17, 44), seed=7)
    config = default.get_config("tiny")
    for key, value in {**data, "val_annotations": other["val_annotations"], "val_images": other["val_images"]}.items():
        config.data[key] = value
    config.model.score_threshold = 0.0
    metrics = evaluator.evaluate_checkpoint(config, workdir)
    assert open(f"{workdir}/metrics.jsonl").read() == before
    (out,) = [d for d in os.listdir(f"{workdir}/eval") if d.startswith("step16-config-")]
    (row,) = [json.loads(line) for line in open(f"{workdir}/eval/{out}/metrics.jsonl")]
    assert row["AP"] == metrics["AP"] and os.path.exists(f"{workdir}/eval/{out}/detections.json")
    final = sweep.final_eval(workdir, 16)
    assert final == json.loads(before.strip().splitlines()[-1])  # still the training's own evaluation


def test_predict_never_writes_over_inputs_and_names_cannot_collide(tmp_path):
    from jaxdet.errors import ConfigError
    from jaxdet.evaluation import predict

    photos = tmp_path / "photos"
    for rel in ("a/x.jpg", "b/x.jpg", "x.png"):
        os.makedirs(photos / os.path.dirname(rel), exist_ok=True)
        Image.fromarray(np.full((40, 60, 3), len(rel) * 20, np.uint8)).save(photos / rel)
    paths = sorted(str(p) for p in photos.rglob("*.*g"))
    originals = {p: open(p, "rb").read() for p in paths}
    predictor = predict.Predictor(untrained_workdir(str(tmp_path / "run")))
    # --out is the input folder itself: the pictures go beside the inputs under new names.
    results = predict.predict_files(predictor, paths, str(photos), 0.0)
    assert all(open(p, "rb").read() == data for p, data in originals.items())
    for rel in ("a/x.jpg", "b/x.jpg", "x.png"):
        assert Image.open(photos / f"{rel}.png").size == (60, 40)
    assert {r["file_name"] for r in results} == {"a/x.jpg", "b/x.jpg", "x.png"}
    assert {r["category_id"] for r in results} <= {3, 9} and results
    # An input that an output would replace: refused before anything is written.
    Image.new("RGB", (8, 8)).save(photos / "x.png.png")  # (what the x.png picture is called)
    victim = open(photos / "x.png.png", "rb").read()
    with pytest.raises(ConfigError, match=r"would write .*x\.png\.png over the input image"):
        predict.predict_files(predictor, [str(photos / "x.png"), str(photos / "x.png.png")], str(photos), 0.0)
    assert open(photos / "x.png.png", "rb").read() == victim and not (photos / "x.png.png.png").exists()
