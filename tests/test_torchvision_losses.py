"""The `:torchvision` configs against torchvision itself: anchors, and the loss terms and
their gradients on the same outputs and targets (RetinaNet, the RPN, the box head).
Skipped without torch/torchvision (the `bench` extra)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from torchvision_helpers import (  # noqa: E402
    _full_precision,  # noqa: F401 (autouse fixture)
    loss_batch,
    nchw,
    random_images,
    torchvision_detector,
)

from experiments.configs import faster_rcnn, retinanet_r50  # noqa: E402
from jaxdet import detectors  # noqa: E402
from jaxdet.detectors import inference  # noqa: E402


@pytest.mark.parametrize(
    "name, size",
    [("retinanet_resnet50_fpn", 96), ("retinanet_resnet50_fpn", 128), ("retinanet_resnet50_fpn", 200),
     ("fasterrcnn_resnet50_fpn", 96), ("fasterrcnn_resnet50_fpn", 800)],
)  # fmt: skip
def test_torchvision_configs_have_torchvisions_anchors(name, size):
    """`retinanet_r50.py:torchvision` and `faster_rcnn.py:torchvision` anchors = torchvision's
    AnchorGenerator, exactly, also where 2^max_level does not divide the image (torchvision's
    strides are then image // grid); jaxdet's own recipes centre theirs on the cells."""
    from torchvision.models.detection.image_list import ImageList

    recipe = retinanet_r50 if name.startswith("retinanet") else faster_rcnn
    ours, own = recipe.get_config("torchvision"), recipe.get_config("torchvision")
    own.model[ours.model.name].anchor_style, own.model[ours.model.name].anchor_offset = "centred", 0.5
    levels = range(ours.model.min_level, ours.model.max_level + 1)
    feature_maps = [torch.zeros(1, 256, -(-size // 2**lvl), -(-size // 2**lvl)) for lvl in levels]
    tv = getattr(torchvision.models.detection, name)(weights=None, weights_backbone=None, num_classes=7)
    generator = tv.anchor_generator if name.startswith("retinanet") else tv.rpn.anchor_generator
    theirs = generator(ImageList(torch.zeros(1, 3, size, size), [(size, size)]), feature_maps)[0].numpy()
    for config in (ours, own):
        config.data.image_size = size
    np.testing.assert_array_equal(detectors.build_detector(ours, 7, None).anchors, theirs)
    assert np.abs(detectors.build_detector(own, 7, None).anchors - theirs).max() > 1.0


def test_torchvision_retinanet_loss_and_gradient_match(tmp_path):
    """The three terms equal torchvision's `compute_loss` (1e-4 relative) on the same head
    outputs, anchors and targets, and so does the gradient with respect to the head outputs;
    with empty targets, tiny and image-sized boxes. (The head outputs of converted weights
    equal torchvision's: test_retinanet_features_and_head_outputs_match.)"""
    size = 128
    tv = torchvision_detector("retinanet_resnet50_fpn", 7)
    config = retinanet_r50.get_config("torchvision")
    config.data.image_size = size
    det = detectors.build_detector(config, 7, None)
    rng = np.random.default_rng(5)
    xy = rng.uniform(0, size * 0.6, (4, 2))
    random_boxes = np.concatenate([xy, xy + rng.uniform(8, size * 0.4, (4, 2))], 1).astype(np.float32)
    cases = [
        random_boxes,
        np.zeros((0, 4), np.float32),  # empty image: every anchor negative
        np.array([[10.0, 10.0, 12.0, 12.0], [0.0, 0.0, size, size]], np.float32),  # tiny and image-sized
        random_boxes[:1],
    ]
    with torch.no_grad():
        pixels = np.random.default_rng(4).uniform(0, 255, (1, size, size, 3)).astype(np.float32)
        feats = list(tv.backbone(nchw(np.asarray(inference.normalize(jnp.asarray(pixels))))).values())
    from torchvision.models.detection.image_list import ImageList

    anchors = tv.anchor_generator(ImageList(torch.zeros(1, 3, size, size), [(size, size)]), feats)
    for boxes, batch in zip(cases, loss_batch(size, cases)):
        with torch.no_grad():
            head = tv.head(feats)
        head = {k: v.clone().requires_grad_(True) for k, v in head.items()}
        target = [{"boxes": torch.from_numpy(boxes), "labels": torch.arange(len(boxes)) % 7}]
        theirs = tv.compute_loss(target, head, anchors)
        sum(theirs.values()).backward()
        outputs = {"cls_logits": jnp.asarray(head["cls_logits"].detach().numpy()),
                   "box_deltas": jnp.asarray(head["bbox_regression"].detach().numpy())}  # fmt: skip
        (total, terms), grads = jax.value_and_grad(lambda o: det.loss_fn(o, batch, jax.random.key(0)), has_aux=True)(
            outputs
        )
        for ours_key, their_key in (("classification", "classification"), ("localization", "bbox_regression")):
            np.testing.assert_allclose(float(terms[ours_key]), float(theirs[their_key]), rtol=1e-4, err_msg=ours_key)
        assert float(terms["confidence"]) == 0.0
        for ours_key, their_key in (("cls_logits", "cls_logits"), ("box_deltas", "bbox_regression")):
            g = head[their_key].grad.numpy()
            scale = max(float(np.abs(g).max()), 1e-12)
            np.testing.assert_allclose(np.asarray(grads[ours_key]), g, rtol=0, atol=1e-4 * scale, err_msg=ours_key)


def test_torchvision_rpn_loss_and_gradient_match():
    """Faster R-CNN's RPN terms (rpn_objectness, rpn_box)
    equal torchvision's `rpn.compute_loss` (1e-4) when sampling cannot differ (every anchor
    that is positive or negative is sampled on both sides), with the gradient with respect
    to the RPN outputs; several images in one batch (both normalise by the batch's sampled
    count), one of them empty, with tiny and image-sized boxes."""
    size = 96
    tv = torchvision_detector("fasterrcnn_resnet50_fpn", 6)
    tv.rpn.fg_bg_sampler.batch_size_per_image = 4096  # > the 2307 anchors at 96 px
    config = faster_rcnn.get_config("torchvision")
    config.data.image_size = size
    config.model.faster_rcnn.rpn_per_image = 4096
    det = detectors.build_detector(config, 5, None)
    rng = np.random.default_rng(7)
    xy = rng.uniform(0, size * 0.6, (3, 2))
    cases = [
        np.concatenate([xy, xy + rng.uniform(8, size * 0.4, (3, 2))], 1).astype(np.float32),
        np.zeros((0, 4), np.float32),
        np.array([[10.0, 10.0, 12.0, 12.0], [0.0, 0.0, size, size]], np.float32),
    ]
    batches = loss_batch(size, cases)
    batch = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    from torchvision.models.detection.image_list import ImageList
    from torchvision.models.detection.rpn import concat_box_prediction_layers

    with torch.no_grad():
        feats = list(tv.backbone(nchw(random_images(8)[:1].repeat(3, axis=0))).values())
        objectness, deltas = tv.rpn.head(feats)
    objectness = [o.clone().requires_grad_(True) for o in objectness]
    deltas = [d.clone().requires_grad_(True) for d in deltas]
    anchors = tv.rpn.anchor_generator(ImageList(torch.zeros(3, 3, size, size), [(size, size)] * 3), feats)
    targets = [{"boxes": torch.from_numpy(b), "labels": torch.ones(len(b), dtype=torch.int64)} for b in cases]
    labels, matched = tv.rpn.assign_targets_to_anchors(anchors, targets)
    regression_targets = tv.rpn.box_coder.encode(matched, anchors)
    flat_obj, flat_deltas = concat_box_prediction_layers(objectness, deltas)
    obj_loss, box_loss = tv.rpn.compute_loss(flat_obj, flat_deltas, labels, regression_targets)
    (obj_loss + box_loss).backward()

    outputs = {"rpn_logits": jnp.asarray(flat_obj.detach().numpy().reshape(3, -1)),
               "rpn_deltas": jnp.asarray(flat_deltas.detach().numpy().reshape(3, -1, 4))}  # fmt: skip
    total = lambda o: sum(det._rpn_terms(o, batch, jax.random.key(0), None).values())  # noqa: E731
    terms = det._rpn_terms(outputs, batch, jax.random.key(0), None)
    np.testing.assert_allclose(float(terms["rpn_objectness"]), float(obj_loss), rtol=1e-4)
    np.testing.assert_allclose(float(terms["rpn_box"]), float(box_loss), rtol=1e-4)
    grads = jax.grad(total)(outputs)
    flatten = lambda xs, c: torch.cat([x.grad.permute(0, 2, 3, 1).reshape(3, -1, c) for x in xs], 1)  # noqa: E731
    for ours, theirs in ((grads["rpn_logits"], flatten(objectness, 3)), (grads["rpn_deltas"], flatten(deltas, 12))):
        theirs = theirs.numpy().reshape(np.shape(ours))
        np.testing.assert_allclose(np.asarray(ours), theirs, rtol=0, atol=1e-4 * np.abs(theirs).max())


def test_torchvision_faster_rcnn_proposals_and_box_head_loss_match():
    """`faster_rcnn.py:torchvision`: the RPN's proposals equal torchvision's `filter_proposals`
    (top-k per level, clipping, small boxes, NMS per level; boxes to 1e-3 px, same order) on
    the same RPN outputs, and on them the box head's terms equal `fastrcnn_loss` (1e-4) with
    the gradient with respect to the box head's outputs, when RoI sampling cannot differ
    (every proposal and ground-truth box sampled); two images, one without objects."""
    from torchvision.models.detection.image_list import ImageList
    from torchvision.models.detection.roi_heads import fastrcnn_loss

    size, num_classes, pre, post = 96, 5, 50, 40
    tv = torchvision_detector("fasterrcnn_resnet50_fpn", num_classes + 1)
    tv.rpn._pre_nms_top_n, tv.rpn._post_nms_top_n = dict(training=pre, testing=pre), dict(training=post, testing=post)
    config = faster_rcnn.get_config("torchvision")
    config.data.image_size = size
    f = config.model.faster_rcnn
    f.rpn_pre_nms_topk, f.rpn_post_nms_topk = pre, post
    det = detectors.build_detector(config, num_classes, None)
    feature_maps = [torch.zeros(2, 256, -(-size // 2**lvl), -(-size // 2**lvl)) for lvl in range(2, 7)]
    anchors = tv.rpn.anchor_generator(ImageList(torch.zeros(2, 3, size, size), [(size, size)] * 2), feature_maps)
    n = len(det.anchors)
    rng = np.random.default_rng(13)
    logits = rng.normal(0.0, 2.0, (2, n)).astype(np.float32)  # distinct values: no ties in the top-k
    deltas = rng.normal(0.0, 0.3, (2, n, 4)).astype(np.float32)
    proposals = tv.rpn.box_coder.decode(torch.from_numpy(deltas.reshape(-1, 4)), anchors).view(2, -1, 4)
    per_level = [m.shape[2] * m.shape[3] * 3 for m in feature_maps]
    objectness = torch.from_numpy(logits.reshape(-1, 1))
    theirs, _ = tv.rpn.filter_proposals(proposals, objectness, [(size, size)] * 2, per_level)
    ours, valid = det.module.apply({}, jnp.asarray(logits), jnp.asarray(deltas), method="_proposals")
    for i in range(2):
        k = int(valid[i].sum())
        assert k == len(theirs[i]) > 20
        np.testing.assert_allclose(np.asarray(ours[i, :k]), theirs[i].numpy(), rtol=0, atol=1e-3)

    cases = [np.array([[10.0, 10.0, 40.0, 50.0], [50.0, 20.0, 90.0, 60.0], [0.0, 0.0, size, size]], np.float32),
             np.zeros((0, 4), np.float32)]  # fmt: skip
    batches = loss_batch(size, cases)
    batch = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    targets = [{"boxes": torch.from_numpy(b), "labels": torch.arange(len(b)) % num_classes + 1} for b in cases]
    rois, _, labels, regression_targets = tv.roi_heads.select_training_samples([t.clone() for t in theirs], targets)
    sampled = det.module.apply(
        {}, ours, valid, {k: jnp.asarray(v) for k, v in batch.items()}, method="_sample_rois",
        rngs={"sampling": jax.random.key(0)},
    )  # fmt: skip
    counts = [len(r) for r in rois]
    assert [int(c) for c in sampled["roi_sampled"].sum(1)] == counts
    assert int(sampled["roi_positive"][0].sum()) == int((labels[0] > 0).sum()) >= 3  # the ground truth at least
    for i in range(2):
        np.testing.assert_allclose(np.asarray(sampled["roi_boxes"][i, : counts[i]]), rois[i].numpy(), atol=1e-3)
    # The same box-head outputs on both sides (torchvision: background first, then classes).
    cls = torch.from_numpy(rng.normal(0, 2, (sum(counts), num_classes + 1)).astype(np.float32)).requires_grad_(True)
    box = torch.from_numpy(rng.normal(0, 1, (sum(counts), (num_classes + 1) * 4)).astype(np.float32))
    box.requires_grad_(True)
    cls_loss, box_loss = fastrcnn_loss(cls, box, labels, regression_targets)
    (cls_loss + box_loss).backward()
    slots = sampled["roi_sampled"].shape[1]

    def ours_layout(x, per_roi):
        """[sum counts, ...] torchvision rows -> [2, R, ...] jaxdet slots (zeros after the sampled)."""
        out = np.zeros((2, slots) + per_roi, np.float32)
        out[0, : counts[0]], out[1, : counts[1]] = (
            x[: counts[0]].reshape((-1,) + per_roi),
            x[counts[0] :].reshape((-1,) + per_roi),
        )
        return out

    order = np.r_[1 : num_classes + 1, 0]  # jaxdet: classes first, background last
    outputs = {
        **sampled,
        "roi_cls_logits": jnp.asarray(ours_layout(cls.detach().numpy()[:, order], (num_classes + 1,))),
        "roi_deltas": jnp.asarray(ours_layout(box.detach().numpy()[:, 4:], (num_classes, 4))),
    }
    terms = det._head_terms(outputs, batch, None)
    np.testing.assert_allclose(float(terms["roi_classification"]), float(cls_loss), rtol=1e-4)
    np.testing.assert_allclose(float(terms["roi_box"]), float(box_loss), rtol=1e-4)
    total = lambda o: sum(det._head_terms({**outputs, **o}, batch, None).values())  # noqa: E731
    grads = jax.grad(total)({k: outputs[k] for k in ("roi_cls_logits", "roi_deltas")})
    want_cls = ours_layout(cls.grad.numpy()[:, order], (num_classes + 1,))
    want_box = ours_layout(box.grad.numpy()[:, 4:], (num_classes, 4))
    np.testing.assert_allclose(np.asarray(grads["roi_cls_logits"]), want_cls, atol=1e-4 * np.abs(want_cls).max())
    np.testing.assert_allclose(np.asarray(grads["roi_deltas"]), want_box, atol=1e-4 * np.abs(want_box).max())
