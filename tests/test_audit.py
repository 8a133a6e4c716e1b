"""The audit's per-example losses and gradients (jaxdet/audit) against a Python loop of
`jax.grad`, one example at a time."""

import jax
import numpy as np
import optax
import pytest

from experiments.configs import default, faster_rcnn
from jaxdet import audit, detectors
from jaxdet.data.synthetic import synthetic_batch
from jaxdet.detectors import inference
from jaxdet.training.step import init_key


@pytest.mark.parametrize("recipe", [default, pytest.param(faster_rcnn, marks=pytest.mark.slow)])  # (~35 s)
def test_per_example_gradients_equal_a_loop_of_grad(recipe):
    config = recipe.get_config("tiny")
    size = config.data.image_size
    det = detectors.build_detector(config, 3)
    variables = jax.jit(lambda x: det.module.init({"params": init_key(0), "sampling": init_key(1)}, x))(
        np.zeros((1, size, size, 3), np.float32)
    )
    batch = {k: np.asarray(v) for k, v in synthetic_batch(3, size, config.data.max_boxes, 3, seed=4).items()}
    batch["box_mask"][2] = False  # an image without boxes: its loss is the background's alone
    heads = audit.head_names(variables["params"])
    assert heads and not any(h.startswith(("ResNet", "FPN")) for h in heads)
    rng = jax.random.key(0)
    got = jax.device_get(audit.per_example_fn(det, heads)(variables, batch, rng))

    for i in range(3):
        one = {k: v[i : i + 1] for k, v in batch.items()}

        def loss(head):
            full = {"params": {**variables["params"], **head}, "batch_stats": variables.get("batch_stats", {})}
            outputs, _ = inference.forward(det, full, one, rng, train=False)
            return det.loss_fn(outputs, one, rng)[0]

        value, grads = jax.value_and_grad(loss)({k: variables["params"][k] for k in heads})
        np.testing.assert_allclose(got["loss"][i], value, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got["grad_norm"][i], optax.global_norm(grads), rtol=1e-4, atol=1e-6)
    assert got["grad_norm"].shape == (3,) and np.all(got["grad_norm"] > 0)
    assert len(set(np.round(got["loss"], 5))) == 3  # three different examples, three values


def test_each_kind_of_annotation_error_ranks_first_on_its_crafted_box():
    """Four annotated boxes and what a model would say about them: a correct box, a box with
    the wrong class, a shifted box, a box on nothing; plus an object nobody annotated."""
    from jaxdet.audit import suspects
    from jaxdet.postprocess import Detections

    boxes = np.array(
        [[[10, 10, 40, 40], [50, 10, 80, 40], [10, 50, 40, 80], [50, 50, 80, 80], [0, 0, 0, 0]]], np.float32
    )
    labels = np.array([[0, 1, 0, 2, 0]])
    mask = np.array([[True, True, True, True, False]])
    det = Detections(
        boxes=np.array(
            [
                [
                    [10, 10, 40, 40],
                    [50, 10, 80, 40],
                    [50, 10, 80, 40],
                    [22, 50, 52, 80],
                    [90, 90, 120, 120],
                    [0, 0, 0, 0],
                ]
            ],
            np.float32,
        ),  # fmt: skip
        scores=np.array([[0.9, 0.2, 0.8, 0.85, 0.95, 0.0]], np.float32),
        classes=np.array([[0, 1, 0, 0, 1, 0]], np.int32),
        valid=np.array([[True, True, True, True, True, False]]),
    )
    s = jax.device_get(suspects.box_suspicions(boxes, labels, mask, det))
    for kind, box in (("wrong_class", 1), ("poor_box", 2), ("spurious_box", 3)):
        assert np.argmax(s[kind][0]) == box, (kind, s[kind])
    np.testing.assert_allclose(s["wrong_class"][0], [0, 0.6, 0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(s["poor_box"][0], [0, 0, 0.85, 0, 0], atol=1e-6)  # IoU 18/42 = 0.43
    np.testing.assert_allclose(s["spurious_box"][0], [0.1, 0.2, 0.15, 1.0, 0], atol=1e-6)
    assert list(s["other_class"][0]) == [-1, 0, -1, -1, -1]
    np.testing.assert_allclose(s["missing_box"][0], [0, 0, 0, 0, 0.95, 0], atol=1e-6)


def test_the_audit_of_a_run_writes_every_image_and_box_once_with_the_datasets_ids(tmp_path, trained_tiny_run):
    """experiments.audit's pass on a tiny run: every training image and annotated box once,
    under the dataset's own image and category ids and original pixels; the JSON's
    rankings and the gallery written."""
    import json
    import os

    from conftest import copy_run

    from jaxdet import configs
    from jaxdet.audit import tool

    workdir = copy_run(trained_tiny_run, str(tmp_path / "run"))
    recorded, _ = configs.load_recorded(workdir)
    data = {"train_annotations": recorded.data.train_annotations}
    lines = []
    out = tool.audit(workdir, "train", top_k=5, batch_size=4, log=lines.append)
    assert [line for line in lines if line.startswith("audit: 10 images in ")], lines  # the pass's last progress line
    doc = json.load(open(os.path.join(out, "audit.json")))
    read = lambda name: [json.loads(line) for line in open(os.path.join(out, doc["records"][name]))]  # noqa: E731
    images, boxes = read("images"), read("boxes")
    assert doc["counts"] == {"images": len(images), "boxes": len(boxes), "missing": len(read("missing"))}
    truth = json.load(open(data["train_annotations"]))
    assert sorted(r["image_id"] for r in images) == sorted(i["id"] for i in truth["images"])
    assert all(r["grad_norm"] > 0 and r["self_influence"] == pytest.approx(r["grad_norm"] ** 2) for r in images)
    assert [r["image_id"] for r in doc["top_images"]] == [
        r["image_id"] for r in sorted(images, key=lambda r: -r["grad_norm"])
    ]
    annotated = sorted((a["image_id"], a["category_id"], *a["bbox"]) for a in truth["annotations"])
    audited = sorted((b["image_id"], b["category_id"], *np.round(b["bbox"], 3)) for b in boxes)
    assert audited == annotated
    assert set(doc["rankings"]) == {"wrong_class", "poor_box", "spurious_box", "missing_box"}
    assert not [f for f in os.listdir(out) if f.endswith(".partial")]
    shown = sorted(os.listdir(os.path.join(out, "gallery")))
    assert len(shown) == min(5, len(doc["suspects"])) > 0 and shown[0].startswith("001_")
    kinds = [name.split("_image")[0][4:] for name in shown]  # the kinds take turns: no kind fills the gallery
    assert len(set(kinds[:2])) == min(2, len({k for k, v in doc["rankings"].items() if v}))


def test_injected_noise_is_disjoint_recorded_and_leaves_the_input_alone(tmp_path):
    import copy
    import json

    from coco_folder import write_coco

    from jaxdet.audit import noise

    coco = json.load(open(write_coco(str(tmp_path), n_train=40, n_val=1)["train_annotations"]))
    before = copy.deepcopy(coco)
    noisy, changes = noise.inject(coco, flip=0.1, shift=0.1, delete=0.1, seed=3)
    assert coco == before
    n = len(coco["annotations"])
    assert [len(changes[k]) for k in ("flip", "shift", "delete")] == [round(0.1 * n)] * 3
    ids = [c["id"] for k in changes for c in changes[k]]
    assert len(set(ids)) == len(ids)  # disjoint
    assert len(noisy["annotations"]) == n - len(changes["delete"])
    by_id = {a["id"]: a for a in noisy["annotations"]}
    assert not {c["id"] for c in changes["delete"]} & set(by_id)
    for c in changes["flip"]:
        assert by_id[c["id"]]["category_id"] == c["noisy_category_id"] != c["category_id"]
    for c in changes["shift"]:
        x, y, w, h = by_id[c["id"]]["bbox"]
        assert by_id[c["id"]]["bbox"] == c["noisy_bbox"] != c["bbox"] and x >= 0 and y >= 0 and x + w <= 64
    with pytest.raises(ValueError, match="at most 1"):
        noise.inject(coco, flip=0.5, shift=0.4, delete=0.2)


def test_the_score_counts_hits_at_k_for_the_audit_and_its_baselines():
    from jaxdet.audit import score

    box = lambda i, b, **kw: {"image_id": i, "bbox": b, **kw}  # noqa: E731
    changes = {"flip": [box(1, [0, 0, 10, 10], noisy_category_id=2), box(2, [5, 5, 10, 10], noisy_category_id=1)]}
    boxes = [box(1, [0, 0, 10, 10], wrong_class=0.9, image_loss=0.1),
             box(2, [5, 5, 10, 10], wrong_class=0.7, image_loss=0.9),
             box(3, [0, 0, 4, 4], wrong_class=0.0, image_loss=0.8),
             box(4, [1, 1, 4, 4], wrong_class=0.8, image_loss=0.2)]  # fmt: skip
    s = score.score(boxes, [], changes)["flip"]
    assert s["k"] == 2 and s["audit"] == (0.5, 0.5)  # top 2: image 1 (hit), image 4
    assert s["loss_only"] == (0.5, 0.5)  # by loss: image 2 (hit), image 3
    assert s["random"] == (0.5, 0.5)  # 2 of 4 candidates
    assert score.table({"flip": s})[2] == "| flip | 2 | 0.50 / 0.50 | 0.50 / 0.50 | 0.50 / 0.50 |"
    # Fewer candidates than changes: a random order takes them all and finds what they hold.
    deleted = {"delete": [box(1, [20, 20, 10, 10]), box(2, [30, 30, 5, 5])]}
    d = score.score([], [box(1, [20, 20, 10, 10], missing_box=0.6, image_loss=0.1)], deleted)["delete"]
    assert d["candidates"] == 1 and d["audit"] == d["loss_only"] == d["random"] == (0.5, 0.5)


def test_the_records_stream_to_disk_and_memory_holds_only_the_kept_top(tmp_path):
    """Memory bounded whatever the split's size: 20,000 boxes through a writer keeping 5
    leave 5 per ranking in memory, those equal to the top 5 of a full stable sort, and
    every record in the files."""
    import json

    from jaxdet.audit.records import JsonLines, RecordWriter

    rng = np.random.default_rng(0)
    writer, every = RecordWriter(str(tmp_path), keep=5), []
    for b in range(100):
        boxes = [
            {"image_id": b, "box": g, "wrong_class": float(rng.choice([0.0, 0.5, rng.random()])),
             "poor_box": 0.0, "spurious_box": float(rng.random())}
            for g in range(200)
        ]  # fmt: skip
        images = [{"image_id": b, "index": b, "grad_norm": float(rng.random())}]
        writer.add(images, boxes, [])
        every += boxes
        assert all(len(top) <= 5 for top in (*writer.rankings.values(), writer.suspects, writer.top_images))
    names = writer.close()
    on_disk = list(JsonLines(str(tmp_path / names["boxes"])))
    assert on_disk == every and writer.counts == {"images": 100, "boxes": 20000, "missing": 0}
    want = sorted((b for b in every if b["wrong_class"] > 0), key=lambda b: -b["wrong_class"])[:5]
    assert [(r["image_id"], r["box"]) for r in writer.rankings["wrong_class"].sorted()] == [
        (b["image_id"], b["box"]) for b in want
    ]
    assert json.loads(open(tmp_path / names["images"]).readline())["image_id"] == 0


@pytest.mark.slow  # ~100 s: every detector's audit step compiled once
@pytest.mark.parametrize("recipe", ["yolov8", "fcos", "yolo", "ssd", "centernet", "detr", "faster_rcnn"])
def test_every_detector_has_an_audit_step(recipe):
    import importlib

    from jaxdet.audit.runner import make_audit_step

    config = importlib.import_module(f"experiments.configs.{recipe}").get_config("tiny")
    size = config.data.image_size
    det = detectors.build_detector(config, 3)
    variables = jax.jit(lambda x: det.module.init({"params": init_key(0), "sampling": init_key(1)}, x))(
        np.zeros((1, size, size, 3), np.float32)
    )
    batch = {k: np.asarray(v) for k, v in synthetic_batch(2, size, config.data.max_boxes, 3).items()}
    numbers, found, dets = jax.device_get(make_audit_step(det, audit.head_names(variables["params"]), 0.5, 0.3)(
        variables, batch))  # fmt: skip
    # The detections come from the per-example forward passes: the batched forward's.
    outputs, _ = inference.forward(det, variables, batch, jax.random.key(0), train=False)
    want = jax.device_get(det.predict(outputs)._asdict())
    for key in want:
        np.testing.assert_allclose(dets[key], want[key], atol=1e-4, err_msg=key)
    assert (
        numbers["grad_norm"].shape == (2,) and np.all(np.isfinite(numbers["loss"])) and np.all(numbers["grad_norm"] > 0)
    )
    assert found["spurious_box"].shape == batch["box_mask"].shape


def test_cleaning_removes_the_suspected_annotations_adds_the_missing_and_counts_the_unmatched():
    import copy

    from jaxdet.audit import clean

    ann = lambda i, im, c, b: {"id": i, "image_id": im, "category_id": c, "bbox": b, "area": b[2] * b[3]}  # noqa: E731
    annotations = [ann(10, 1, 3, [0, 0, 10, 10]), ann(11, 1, 4, [0, 0, 10, 10]), ann(12, 2, 3, [5, 5, 8, 8])]
    coco = {"images": [{"id": 1}, {"id": 2}], "categories": [{"id": 3}, {"id": 4}], "annotations": annotations}
    before = copy.deepcopy(coco)
    sus = lambda im, c, b, **kw: {"image_id": im, "category_id": c, "bbox": b, **kw}  # noqa: E731
    boxes = [sus(1, 4, [0.0, 0.0001, 10.0, 9.9999], wrong_class=0.9, poor_box=0.0, spurious_box=0.0),  # annotation 11
             sus(2, 4, [5, 5, 8, 8], wrong_class=0.0, poor_box=0.7, spurious_box=0.0),  # category differs: unmatched
             sus(1, 3, [0, 0, 10, 10], wrong_class=0.2, poor_box=0.0, spurious_box=0.0)]  # below the top 1  # fmt: skip
    missing = [sus(2, 4, [20, 20, 6, 6], missing_box=0.8), sus(2, 3, [30, 30, 6, 6], missing_box=0.6)]
    top = clean.top_suspects(boxes, missing, 1, ["wrong_class", "poor_box", "missing_box"])
    assert [len(v) for v in top.values()] == [1, 1, 1] and top["wrong_class"][0]["bbox"][1] == 0.0001
    cleaned, actions = clean.apply(coco, top)
    assert coco == before  # the input is left alone
    assert [a["id"] for a in actions["removed"]] == [11] and actions["unmatched"] == 1
    assert [a["id"] for a in cleaned["annotations"]] == [10, 12, 13]
    assert cleaned["annotations"][-1] == {"id": 13, "image_id": 2, "category_id": 4, "bbox": [20, 20, 6, 6],
                                          "area": 36, "iscrowd": 0, "audit_added": True}  # fmt: skip
    with pytest.raises(ValueError, match="unknown suspect kinds"):
        clean.top_suspects(boxes, missing, 1, ["wrong_box"])
