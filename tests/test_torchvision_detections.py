"""The `:torchvision` configs' detections against torchvision's post-processing, and end to
end with converted weights. Skipped without torch/torchvision (the `bench` extra)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from torchvision_helpers import (  # noqa: E402
    _full_precision,  # noqa: F401 (autouse fixture)
    assert_same_detections,
    detector,
    rescale,
    save,
    square_inputs,
    torchvision_detector,
)

from experiments.configs import faster_rcnn, retinanet_r50  # noqa: E402
from jaxdet import detectors  # noqa: E402
from jaxdet.detectors import inference  # noqa: E402


def test_torchvision_retinanet_detections_match():
    """`retinanet_r50.py:torchvision` detections (boxes within 1e-3 px, scores, classes, the
    kept set after NMS) equal torchvision's `postprocess_detections` on the same head
    outputs and anchors, for two images with many candidates over the 0.05 threshold."""
    size, num_classes = 128, 7
    tv = torchvision_detector("retinanet_resnet50_fpn", num_classes)
    # Fewer candidates per level than pass the threshold, so that the per-level top-k matters.
    tv.detections_per_img, tv.topk_candidates = 300, 60
    config = retinanet_r50.get_config("torchvision")
    config.data.image_size = size
    config.model.pre_nms_topk = 60
    det = detectors.build_detector(config, num_classes, None)
    from torchvision.models.detection.image_list import ImageList

    feature_maps = [torch.zeros(2, 256, -(-size // 2**lvl), -(-size // 2**lvl)) for lvl in range(3, 8)]
    anchors = tv.anchor_generator(ImageList(torch.zeros(2, 3, size, size), [(size, size)] * 2), feature_maps)
    n = len(det.anchors)
    rng = np.random.default_rng(11)
    cls_logits = rng.normal(-3.0, 1.5, (2, n, num_classes)).astype(np.float32)  # ~8% over 0.05
    deltas = rng.normal(0.0, 0.5, (2, n, 4)).astype(np.float32)
    deltas[0, :50, 2:] = 9.0  # huge boxes, clipped to the image
    per_level = [(-(-size // 2**lvl)) ** 2 * 9 for lvl in range(3, 8)]
    split = lambda x: list(torch.from_numpy(x).split(per_level, dim=1))  # noqa: E731
    theirs = tv.postprocess_detections(
        {"cls_logits": split(cls_logits), "bbox_regression": split(deltas)},
        [list(a.split(per_level)) for a in anchors],
        [(size, size)] * 2,
    )
    ours = jax.device_get(det.predict({"cls_logits": jnp.asarray(cls_logits), "box_deltas": jnp.asarray(deltas)}))
    for i, t in enumerate(theirs):
        k = int(ours.valid[i].sum())
        assert k == len(t["scores"]) > 150, (k, len(t["scores"]))  # more than one level's 60
        np.testing.assert_array_equal(ours.classes[i, :k], t["labels"].numpy())
        np.testing.assert_allclose(ours.scores[i, :k], t["scores"].numpy(), rtol=1e-6)
        np.testing.assert_allclose(ours.boxes[i, :k], t["boxes"].numpy(), rtol=0, atol=1e-3)


def test_torchvision_faster_rcnn_detections_match():
    """`faster_rcnn.py:torchvision` detections (classes, kept set, scores, boxes within 1e-3
    px) equal torchvision's box-head `postprocess_detections` on the same proposals and box
    head outputs: softmax without background, class-specific boxes clipped to the image,
    the 0.05 threshold, boxes under 0.01 px dropped, class-aware NMS, the best 100.
    (jaxdet caps the candidates at model.pre_nms_topk (proposal, class) pairs, static
    shapes; here fewer pairs than that exist, so nothing is capped.)"""
    size, num_classes, num_props = 96, 5, 40
    tv = torchvision_detector("fasterrcnn_resnet50_fpn", num_classes + 1)
    config = faster_rcnn.get_config("torchvision")
    config.data.image_size = size
    det = detectors.build_detector(config, num_classes, None)
    rng = np.random.default_rng(17)
    xy = rng.uniform(0, size * 0.7, (2, num_props, 2))
    props = np.concatenate([xy, xy + rng.uniform(2, size * 0.5, (2, num_props, 2))], -1).astype(np.float32)
    props[0, :3, 2] = props[0, :3, 0] + 0.005  # too thin to keep
    cls = rng.normal(0, 2, (2 * num_props, num_classes + 1)).astype(np.float32)
    box = rng.normal(0, 0.5, (2 * num_props, (num_classes + 1) * 4)).astype(np.float32)
    box[:6, :] = 0.0  # the thin proposals stay thin
    theirs = tv.roi_heads.postprocess_detections(
        torch.from_numpy(cls), torch.from_numpy(box), [torch.from_numpy(p) for p in props], [(size, size)] * 2
    )
    order = np.r_[1 : num_classes + 1, 0]  # jaxdet: classes first, background last
    outputs = {
        "proposals": jnp.asarray(props),
        "proposal_valid": jnp.ones((2, num_props), bool),
        "det_cls_logits": jnp.asarray(cls[:, order].reshape(2, num_props, -1)),
        "det_deltas": jnp.asarray(box[:, 4:].reshape(2, num_props, num_classes, 4)),
    }
    ours = jax.device_get(det.predict(outputs))
    for i, (boxes, scores, labels) in enumerate(zip(*theirs)):
        k = int(ours.valid[i].sum())
        assert k == len(scores) > 20, (k, len(scores))
        np.testing.assert_array_equal(ours.classes[i, :k] + 1, labels.numpy())  # torchvision: 0 = background
        np.testing.assert_allclose(ours.scores[i, :k], scores.numpy(), rtol=1e-5)
        np.testing.assert_allclose(ours.boxes[i, :k], boxes.numpy(), rtol=0, atol=1e-3)


def test_torchvision_retinanet_eval_mode_detections_match(tmp_path):
    """End to end: converted weights and `retinanet_r50.py:torchvision` give torchvision's
    eval-mode detections on the same images: one-to-one, the same classes, scores to 1e-5
    and boxes within 1e-3 px (measured 1.9e-4 px, 1e-6 in score)."""
    size, num_classes = 128, 7
    torch.manual_seed(0)  # torchvision's own initialisation draws from the global generator
    tv = torchvision_detector("retinanet_resnet50_fpn", num_classes)
    tv.detections_per_img = 1000  # more than pass, so that no near-tie decides what is cut
    pixels, images = square_inputs(tv, size, seed=19)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        head = tv.head.classification_head.cls_logits
        head.weight.copy_(torch.randn(head.weight.shape, generator=g))
        outputs = tv.head(list(tv.backbone(tv.transform(images)[0].tensors).values()))
        # Logits ~ N(-5.4, 1): a few % of the (anchor, class) pairs over the 0.05 threshold.
        rescale(head, outputs["cls_logits"], 1.0, -5.4)
        rescale(tv.head.regression_head.bbox_reg, outputs["bbox_regression"], 0.3)
    config = retinanet_r50.get_config("torchvision")
    config.data.image_size = size
    config.model.max_detections = 1000
    det, variables = detector(config, num_classes, tmp_path, save(tv, tmp_path))
    with torch.no_grad():
        theirs = tv(images)
    outputs = det.module.apply(variables, inference.normalize(jnp.asarray(pixels)), train=False)
    ours = jax.device_get(det.predict(outputs))
    for i, t in enumerate(theirs):
        k = int(ours.valid[i].sum())
        assert k == len(t["scores"]) and 30 < k < 1000, (k, len(t["scores"]))
        assert_same_detections(ours.boxes[i, :k], ours.scores[i, :k], ours.classes[i, :k], t)


def test_torchvision_faster_rcnn_eval_mode_detections_match(tmp_path):
    """End to end: converted weights and `faster_rcnn.py:torchvision` give torchvision's
    eval-mode detections (RPN proposals per level, NMS, multi-scale RoIAlign, the box head,
    its post-processing) on the same images: one-to-one, the same classes, scores to 1e-5,
    boxes within 1e-3 px (measured 1.7e-4 px over ~630 detections per image). Every
    (proposal, class) pair over the threshold is compared: both keep up to 1000 detections
    and jaxdet's candidate cap exceeds the pairs."""
    size, num_classes = 128, 5
    torch.manual_seed(0)
    tv = torchvision_detector("fasterrcnn_resnet50_fpn", num_classes + 1)
    tv.roi_heads.detections_per_img = 1000
    pixels, images = square_inputs(tv, size, seed=19)
    with torch.no_grad():
        image_list = tv.transform(images)[0]
        features = tv.backbone(image_list.tensors)
        objectness, deltas = (torch.cat([o.flatten() for o in x]) for x in tv.rpn.head(list(features.values())))
        # Objectness ~ N(0, 2), not a random network's saturated sigmoids, whose ties at 1.0
        # would decide the proposals' order.
        rescale(tv.rpn.head.cls_logits, objectness, 2.0)
        rescale(tv.rpn.head.bbox_pred, deltas, 0.2)
        proposals = tv.rpn(image_list, features)[0]
        pooled = tv.roi_heads.box_roi_pool(features, proposals, image_list.image_sizes)
        cls, box = tv.roi_heads.box_predictor(tv.roi_heads.box_head(pooled))
        rescale(tv.roi_heads.box_predictor.cls_score, cls, 1.5)
        rescale(tv.roi_heads.box_predictor.bbox_pred, box, 0.3)
        theirs = tv(images)
    config = faster_rcnn.get_config("torchvision")
    config.data.image_size = size
    config.model.max_detections = 1000
    config.model.pre_nms_topk = 10000  # > proposals x classes: no candidate is capped
    det, variables = detector(config, num_classes, tmp_path, save(tv, tmp_path))
    outputs = det.module.apply(variables, inference.normalize(jnp.asarray(pixels)), train=False)
    ours = jax.device_get(det.predict(outputs))
    for i, t in enumerate(theirs):
        k = int(ours.valid[i].sum())
        assert k == len(t["scores"]) and 100 < k < 1000, (k, len(t["scores"]))
        theirs_0_based = dict(t, labels=t["labels"] - 1)  # torchvision: 0 = background
        assert_same_detections(ours.boxes[i, :k], ours.scores[i, :k], ours.classes[i, :k], theirs_0_based)
