"""The detector structure: the shared dense loss path, swappable necks, and parameter
trees that stay those of checkpoints written before detectors shared their parts."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import recipe
from jaxdet import detectors, losses
from jaxdet.losses import assigned
from jaxdet.losses import terms as loss_terms


def _config(name, **model):
    config = recipe(name, "tiny")
    config.data.image_size = 32
    for k, v in model.items():
        config.model[k] = v
    return config


def _targets():
    """4 anchors of one image: positive (class 1), negative, ignored, negative."""
    boxes = jnp.asarray([[[0, 0, 10, 10]] * 4], jnp.float32)
    return assigned.Targets(
        labels=jnp.asarray([[1, 3, 3, 3]]),
        boxes=boxes,
        positive=jnp.asarray([[True, False, False, False]]),
        negative=jnp.asarray([[False, True, False, True]]),
        valid=jnp.ones((1, 4), bool),
    )


@pytest.mark.parametrize(
    "region, anchors, normalize_by, norm",
    [("assigned", [0, 1, 3], "positives", 1.0), ("everywhere", [0, 1, 2, 3], "positives", 1.0),
     ("positives", [0], "assigned", 3.0)],
)  # fmt: skip
def test_term_losses_sum_each_term_over_its_region_and_divide_by_one_normaliser(region, anchors, normalize_by, norm):
    ls = loss_terms.LossSet(
        losses.get_loss("classification", "sigmoid_binary_cross_entropy"),
        losses.get_loss("localization", "l1"),
        losses.get_loss("confidence", "sigmoid_binary_cross_entropy"),
        {"classification": 1.0, "localization": 2.0, "confidence": 0.5},
        num_classes=3,
    )
    t = _targets()
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(size=(1, 4, 3)), jnp.float32)
    conf = jnp.asarray(rng.normal(size=(1, 4)), jnp.float32)
    raw = jnp.asarray(rng.normal(size=(1, 4, 4)), jnp.float32) + 5.0  # "encoded" = the boxes themselves + noise
    terms = assigned.term_losses(
        ls, t, raw, lambda r: r, lambda b: b, logits, conf, None,
        cls_region=region, conf_region=region, normalize_by=normalize_by,
    )  # fmt: skip
    onehot = np.eye(3)[[1]] if True else None
    per_anchor_cls = np.asarray(
        losses.sigmoid_binary_cross_entropy(logits[0], np.concatenate([onehot, np.zeros((3, 3))]))
    )
    expect_cls = per_anchor_cls.sum(-1)[anchors].sum() / norm
    expect_loc = np.abs(np.asarray(raw[0, 0]) - np.asarray(t.boxes[0, 0])).sum() / norm  # positives only
    np.testing.assert_allclose(float(terms["classification"]), expect_cls, rtol=1e-5)
    np.testing.assert_allclose(float(terms["localization"]), expect_loc, rtol=1e-5)
    conf_target = np.array([1.0, 0, 0, 0])
    per_anchor_conf = np.asarray(losses.sigmoid_binary_cross_entropy(conf[0], conf_target))
    np.testing.assert_allclose(float(terms["confidence"]), per_anchor_conf[anchors].sum() / norm, rtol=1e-5)
    np.testing.assert_allclose(float(ls.total(terms)), float(terms["classification"] + 2 * terms["localization"]
                               + 0.5 * terms["confidence"]), rtol=1e-6)  # fmt: skip


def test_padded_images_are_neither_positive_nor_negative():
    from jaxdet import assigners

    asg = assigners.Assignment(
        matched=jnp.zeros((2, 3), jnp.int32), label=jnp.ones((2, 3), jnp.int32), iou=jnp.ones((2, 3))
    )
    batch = {"labels": jnp.asarray([[2], [2]]), "boxes": jnp.ones((2, 1, 4)), "image_mask": jnp.asarray([True, False])}
    t = assigned.targets_from_assignment(asg, batch, num_classes=3)
    assert t.positive.tolist() == [[True] * 3, [False] * 3] and not t.negative.any()
    assert t.labels.tolist() == [[2, 2, 2], [3, 3, 3]] and t.valid.tolist() == [[True] * 3, [False] * 3]


# Top-level parameter names of each detector: those of the modules before they shared a
# backbone -> neck -> head module, so checkpoints written before still restore.
TREES = {
    "retinanet": {"ResNet_0", "FPN_0", "RetinaNetHead_0"},
    "yolo": {"ResNet_0", "PAN_0", "YOLOHead_0"},
    # (one extra level, P6: a 1x1 and a stride-2 3x3 conv, each with its norm)
    "ssd": {"ResNet_0", "Conv_0", "Conv_1", "BatchNorm_0", "BatchNorm_1",
            "cls_p3", "box_p3", "cls_p4", "box_p4", "cls_p5", "box_p5", "cls_p6", "box_p6"},
    "faster_rcnn": {"ResNet_0", "FPN_0", "rpn", "BoxHead_0"},
    "fcos": {"ResNet_0", "FPN_0", "FCOSHead_0"},
    "yolov8": {"CSPDarknet_0", "C2fPAN_0", "YOLOv8Head_0"},
    "detr": {"ResNet_0", "FPN_0", "DETRHead_0"},
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(detectors.DETECTORS))
def test_parameter_trees_are_those_of_earlier_checkpoints(name):
    """Every registered detector: a backbone at the top of its tree beside its neck and head,
    float32 parameters; those with checkpoints written before (TREES) keep their names."""
    det = detectors.build_detector(_config(name), 5)
    key = jax.random.key(0)
    shapes = jax.eval_shape(lambda: det.module.init({"params": key, "sampling": key}, jnp.zeros((1, 32, 32, 3))))
    roots = set(shapes["params"])
    assert len(roots & {"ResNet_0", "CSPDarknet_0"}) == 1 and len(roots) >= 3, roots
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(shapes["params"])} == {jnp.dtype(jnp.float32)}
    if name in TREES:
        assert roots == TREES[name]


@pytest.mark.parametrize(
    "name, neck",
    [pytest.param("retinanet", "pan", marks=pytest.mark.slow), ("yolo", "fpn"), ("ssd", "fpn"), ("fcos", "pan")],
)  # (RetinaNet with PAN: FCOS takes PAN in the default suite)
def test_necks_swap_under_any_dense_detector(name, neck):
    """`model.neck` replaces the detector's own neck: one output per anchor / point, finite loss."""
    det = detectors.build_detector(_config(name, neck=neck), 5)
    key = jax.random.key(0)
    images = jnp.zeros((2, 32, 32, 3))
    variables = det.module.init({"params": key}, images)
    assert {"PAN_0" if neck == "pan" else "FPN_0"} <= set(variables["params"])
    out = det.module.apply(variables, images)
    count = len(getattr(det, "anchors", getattr(det, "points", None)))
    assert all(v.shape[1] == count for v in out.values())
    batch = {"boxes": jnp.asarray([[[2.0, 2, 20, 20]]] * 2), "labels": jnp.zeros((2, 1), jnp.int32),
             "box_mask": jnp.ones((2, 1), bool)}  # fmt: skip
    total, terms = det.loss_fn(out, batch, key)
    assert np.isfinite(float(total)) and float(terms["localization"]) > 0
