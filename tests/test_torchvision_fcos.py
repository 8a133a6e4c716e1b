"""`fcos.py:torchvision` against torchvision's `fcos_resnet50_fpn`: converted weights give
its head outputs; on the same outputs and targets, its targets (centre sampling, size
ranges, the smallest box), loss terms and their gradients; end to end, its eval-mode
detections. Skipped without torch/torchvision (the `bench` extra)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from torchvision_helpers import (  # noqa: E402
    _full_precision,  # noqa: F401 (autouse fixture)
    assert_same_detections,
    close,
    detector,
    loss_batch,
    nchw,
    rescale,
    save,
    square_inputs,
    torchvision_detector,
)

from experiments.configs import fcos  # noqa: E402
from jaxdet import detectors  # noqa: E402
from jaxdet.detectors import inference  # noqa: E402

SIZE, CLASSES = 128, 7  # 2^7 divides 128: jaxdet's and torchvision's points coincide on every level


def _config(size=SIZE):
    config = fcos.get_config("torchvision")
    config.data.image_size = size
    return config


def _ours(head: dict) -> dict:
    return {
        "cls_logits": jnp.asarray(head["cls_logits"].detach().numpy()),
        "box_ltrb": jnp.asarray(head["bbox_regression"].detach().numpy()),
        "ctr_logits": jnp.asarray(head["bbox_ctrness"].detach().numpy()[..., 0]),
    }


def test_torchvision_fcos_points_are_its_anchor_centres():
    from torchvision.models.detection.image_list import ImageList

    for size in (SIZE, 800):
        tv = torchvision_detector("fcos_resnet50_fpn", CLASSES)
        maps = [torch.zeros(1, 256, -(-size // 2**lvl), -(-size // 2**lvl)) for lvl in range(3, 8)]
        anchors = tv.anchor_generator(ImageList(torch.zeros(1, 3, size, size), [(size, size)]), maps)[0].numpy()
        det = detectors.build_detector(_config(size), CLASSES, None)
        np.testing.assert_array_equal(det.points, (anchors[:, :2] + anchors[:, 2:]) / 2)
        np.testing.assert_array_equal(det.strides, anchors[:, 2] - anchors[:, 0])


def test_torchvision_fcos_converted_weights_give_its_head_outputs(tmp_path):
    tv = torchvision_detector("fcos_resnet50_fpn", CLASSES)
    det, variables = detector(_config(), CLASSES, tmp_path, save(tv, tmp_path))
    images = np.asarray(inference.normalize(jnp.asarray(np.random.default_rng(3).uniform(0, 255, (2, SIZE, SIZE, 3)))))
    ours = det.module.apply(variables, jnp.asarray(images, jnp.float32), train=False)
    with torch.no_grad():
        theirs = tv.head(list(tv.backbone(nchw(images.astype(np.float32))).values()))
    close(ours["cls_logits"], theirs["cls_logits"], "cls_logits")
    close(ours["box_ltrb"], theirs["bbox_regression"], "bbox_regression")
    close(ours["ctr_logits"], theirs["bbox_ctrness"][..., 0], "bbox_ctrness")


def test_torchvision_fcos_targets_losses_and_gradients_match():
    """One batch of four images (both normalise by the batch's positives): random boxes
    over every level, an empty image, tiny and image-sized boxes, nested boxes (the
    smallest wins). Targets equal torchvision's matched indices; the three terms equal
    `compute_loss` within 1e-4 relative, and the gradient with respect to the head outputs
    within 1e-4 of its largest value."""
    from torchvision.models.detection.image_list import ImageList

    tv = torchvision_detector("fcos_resnet50_fpn", CLASSES)
    det = detectors.build_detector(_config(), CLASSES, None)
    rng = np.random.default_rng(5)
    xy = rng.uniform(0, SIZE * 0.5, (6, 2))
    cases = [
        np.concatenate([xy, xy + rng.uniform(6, SIZE * 0.5, (6, 2))], 1).astype(np.float32),
        np.zeros((0, 4), np.float32),
        np.array([[10.0, 10.0, 12.0, 12.0], [0.0, 0.0, SIZE, SIZE]], np.float32),
        np.array([[20.0, 20.0, 100.0, 100.0], [40.0, 40.0, 80.0, 80.0], [50.0, 50.0, 70.0, 70.0]], np.float32),
    ]
    batches = loss_batch(SIZE, cases)
    batch = {k: np.concatenate([b[k] for b in batches]) for k in batches[0]}
    images = np.random.default_rng(4).uniform(-2, 2, (len(cases), SIZE, SIZE, 3)).astype(np.float32)
    with torch.no_grad():
        features = list(tv.backbone(nchw(images)).values())
        head = tv.head(features)
    head = {k: v.clone().requires_grad_(True) for k, v in head.items()}
    anchors = tv.anchor_generator(ImageList(torch.zeros(len(cases), 3, SIZE, SIZE), [(SIZE, SIZE)] * 4), features)
    per_level = [f.shape[2] * f.shape[3] for f in features]
    targets = [{"boxes": torch.from_numpy(b), "labels": torch.arange(len(b)) % CLASSES} for b in cases]
    matched = []
    compute = tv.head.compute_loss
    tv.head.compute_loss = lambda t, h, a, m: matched.extend(m) or compute(t, h, a, m)
    theirs = tv.compute_loss(targets, head, anchors, per_level)
    sum(theirs.values()).backward()

    t = jax.device_get(det.assign(batch))
    for i, m in enumerate(matched):
        m = m.numpy()
        np.testing.assert_array_equal(t.positive[i], m >= 0, err_msg=f"image {i}")
        np.testing.assert_array_equal(t.boxes[i][m >= 0], cases[i][m[m >= 0]], err_msg=f"image {i}")
    assert t.positive[0].sum() > 10 and not t.positive[1].any()
    assert t.positive[3].sum() >= 3  # each nested box takes points of its own

    loss = lambda o: det.loss_fn(o, batch, jax.random.key(0))  # noqa: E731
    (_, terms), grads = jax.value_and_grad(loss, has_aux=True)(_ours(head))
    pairs = (("classification", "classification"), ("localization", "bbox_regression"), ("confidence", "bbox_ctrness"))
    for ours_key, their_key in pairs:
        theirs_value = float(theirs[their_key].detach())
        np.testing.assert_allclose(float(terms[ours_key]), theirs_value, rtol=1e-4, err_msg=ours_key)
    for ours_key, their_key in (("cls_logits", "cls_logits"), ("box_ltrb", "bbox_regression"),
                                ("ctr_logits", "bbox_ctrness")):  # fmt: skip
        g = head[their_key].grad.numpy().reshape(np.shape(grads[ours_key]))
        scale = max(float(np.abs(g).max()), 1e-12)
        np.testing.assert_allclose(np.asarray(grads[ours_key]), g, rtol=0, atol=1e-4 * scale, err_msg=ours_key)


def test_torchvision_fcos_eval_mode_detections_match(tmp_path):
    """End to end: converted weights give torchvision's eval-mode detections on the same
    images: one-to-one, the same classes, scores to 1e-5, boxes within 1e-3 px (measured
    ~660 detections per image, 2.1e-4 px, 1.6e-6 in score)."""
    torch.manual_seed(0)
    tv = torchvision_detector("fcos_resnet50_fpn", CLASSES)
    tv.detections_per_img = 1000
    pixels, images = square_inputs(tv, SIZE, seed=21)
    with torch.no_grad():
        outputs = tv.head(list(tv.backbone(tv.transform(images)[0].tensors).values()))
        rescale(tv.head.classification_head.cls_logits, outputs["cls_logits"], 1.0, -3.0)
        rescale(tv.head.regression_head.bbox_reg, outputs["bbox_regression"], 1.0, 2.0)  # distances ~2 strides
        rescale(tv.head.regression_head.bbox_ctrness, outputs["bbox_ctrness"], 1.0)
        theirs = tv(images)
    config = _config()
    config.model.max_detections = 1000
    det, variables = detector(config, CLASSES, tmp_path, save(tv, tmp_path))
    ours = jax.device_get(
        det.predict(det.module.apply(variables, inference.normalize(jnp.asarray(pixels)), train=False))
    )
    for i, t in enumerate(theirs):
        k = int(ours.valid[i].sum())
        assert k == len(t["scores"]) and 30 < k < 1000, (k, len(t["scores"]))
        assert_same_detections(ours.boxes[i, :k], ours.scores[i, :k], ours.classes[i, :k], t)
