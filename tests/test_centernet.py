"""CenterNet against its reference's definitions (xingyizhou/CenterNet, written out here in
numpy): the Gaussian radius and heatmap targets, the penalty-reduced focal loss, and
peak extraction by 3x3 max-pool; the encoding round-trips."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import recipe
from jaxdet import configs, detectors
from jaxdet.detectors import centernet
from jaxdet.losses import functions


def _reference_radius(height: float, width: float, min_overlap: float = 0.7) -> float:
    """The reference's `gaussian_radius((height, width), min_overlap)`."""
    b1, c1 = height + width, width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1**2 - 4 * c1)) / 2
    b2, c2 = 2 * (height + width), (1 - min_overlap) * width * height
    r2 = (b2 + math.sqrt(b2**2 - 16 * c2)) / 2
    a3, b3, c3 = 4 * min_overlap, -2 * min_overlap * (height + width), (min_overlap - 1) * width * height
    r3 = (b3 + math.sqrt(b3**2 - 4 * a3 * c3)) / 2
    return min(r1, r2, r3)


def _reference_heatmap(boxes, labels, h, w, num_classes, stride, min_overlap=0.7) -> np.ndarray:
    """The reference's `draw_umich_gaussian` over boxes (xyxy pixels): [h, w, C]."""
    heat = np.zeros((h, w, num_classes), np.float32)
    for box, label in zip(boxes, labels):
        box = np.clip(box / stride, 0, [w - 1, h - 1, w - 1, h - 1])  # (output coordinates)
        bh, bw = box[3] - box[1], box[2] - box[0]
        radius = max(0, int(_reference_radius(math.ceil(bh), math.ceil(bw), min_overlap)))
        cx, cy = int((box[0] + box[2]) / 2), int((box[1] + box[3]) / 2)
        sigma = (2 * radius + 1) / 6
        y, x = np.ogrid[-radius : radius + 1, -radius : radius + 1]
        g = np.exp(-(x * x + y * y) / (2 * sigma * sigma))
        g[g < np.finfo(g.dtype).eps * g.max()] = 0
        left, right, top, bottom = min(cx, radius), min(w - cx, radius + 1), min(cy, radius), min(h - cy, radius + 1)
        region = heat[cy - top : cy + bottom, cx - left : cx + right, label]
        np.maximum(region, g[radius - top : radius + bottom, radius - left : radius + right], out=region)
    return heat


def _detector(size=64):
    config = recipe("centernet", "tiny")
    config.data.image_size = size
    return detectors.build_detector(configs.resolve(config), 3, None)


@pytest.mark.parametrize("hw", [(1.0, 1.0), (3.0, 7.0), (12.0, 12.0), (5.0, 30.0), (40.0, 2.0)])
def test_gaussian_radius_is_the_references(hw):
    ours = float(centernet.gaussian_radius(jnp.float32(hw[0]), jnp.float32(hw[1]), 0.7))
    assert ours == pytest.approx(_reference_radius(*hw), rel=1e-5)


def test_heatmap_targets_are_the_references_gaussians():
    """Separate objects of different classes (one touching the border): per class, the
    targets (label, value) equal the reference's drawn heatmap; peaks carry their boxes."""
    det = _detector()
    boxes = np.array([[4, 6, 30, 22], [36, 30, 62, 64], [0, 44, 9, 53], [0, 0, 0, 0]], np.float32)
    labels = np.array([1, 2, 0, 0], np.int32)
    mask = np.array([True, True, True, False])
    batch = {
        "boxes": jnp.asarray(boxes[None]),
        "labels": jnp.asarray(labels[None]),
        "box_mask": jnp.asarray(mask[None]),
    }
    t = det.assign(batch)
    h, w = det.grid
    expect = _reference_heatmap(boxes[:3], labels[:3], h, w, 3, det.stride)
    ours = np.zeros((h * w, 3), np.float32)
    real = np.asarray(t.labels[0]) < 3
    ours[np.nonzero(real)[0], np.asarray(t.labels[0])[real]] = np.asarray(t.quality[0])[real]
    np.testing.assert_allclose(ours.reshape(h, w, 3), expect, rtol=1e-6, atol=1e-7)
    assert int(t.positive.sum()) == 3 and np.all(np.asarray(t.quality[0])[np.asarray(t.positive[0])] == 1.0)
    peak_boxes = np.asarray(t.boxes[0])[np.asarray(t.positive[0])]
    clipped = np.clip(boxes[:3], 0, (w - 1) * det.stride)  # (the grid is square here)
    assert sorted(map(tuple, peak_boxes.tolist())) == sorted(map(tuple, clipped.tolist()))
    # At a peak, the encoding holds the centre's offset in its cell and 0.1 x the size in strides.
    enc = np.asarray(det.encode(t.boxes))[0][np.asarray(t.positive[0])]
    assert np.all((enc[:, :2] >= 0) & (enc[:, :2] < 1))
    np.testing.assert_allclose(np.asarray(det.decode(det.encode(t.boxes)))[0][np.asarray(t.positive[0])], peak_boxes,
                               atol=1e-4)  # fmt: skip


def test_penalty_reduced_focal_loss_is_the_references():
    """`_neg_loss(_sigmoid(logits), gt)` (before its division by the peaks)."""
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, (50, 4)).astype(np.float32)
    logits[0, 0] = -20.0  # the clipped range: p = 1e-4
    gt = np.where(rng.uniform(size=(50, 4)) < 0.1, 1.0, rng.uniform(0, 0.99, (50, 4)) ** 3).astype(np.float32)
    p = np.clip(1 / (1 + np.exp(-logits.astype(np.float64))), 1e-4, 1 - 1e-4)
    pos = np.log(p) * (1 - p) ** 2 * (gt == 1)
    neg = np.log(1 - p) * p**2 * (1 - gt) ** 4 * (gt < 1)
    ours = np.asarray(functions.penalty_reduced_focal_loss(logits, gt))
    np.testing.assert_allclose(ours, -(pos + neg), rtol=1e-5, atol=1e-7)
    grad = jax.grad(lambda x: jnp.sum(functions.penalty_reduced_focal_loss(x, gt)))(jnp.asarray(logits))
    assert np.all(np.isfinite(np.asarray(grad)))


def test_detections_are_3x3_peaks_without_nms():
    """Two neighbouring cells of one class: only the larger (a local maximum) is detected;
    a peak elsewhere and one of another class in the same cell both are; boxes decode from
    the cell's offset and size."""
    det = _detector()
    h, w = det.grid
    logits = np.full((1, h * w, 3), -10.0, np.float32)
    cell = lambda x, y: y * w + x  # noqa: E731
    logits[0, cell(4, 4), 0], logits[0, cell(5, 4), 0] = 2.0, 1.0  # neighbours: one peak
    logits[0, cell(10, 12), 1] = 0.5
    logits[0, cell(4, 4), 2] = 0.0  # same cell, other class: its own peak
    raw = np.zeros((1, h * w, 4), np.float32)
    raw[0, cell(4, 4)] = [0.5, 0.25, 0.1 * 2, 0.1 * 1]  # centre (4.5, 4.25) cells, 2 x 1 cells
    d = det.predict({"cls_logits": jnp.asarray(logits), "box_raw": jnp.asarray(raw)})
    valid = np.asarray(d.valid[0])
    found = sorted(zip(np.asarray(d.classes[0])[valid].tolist(), np.asarray(d.scores[0])[valid].tolist()))
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    assert [c for c, _ in found] == [0, 1, 2]
    np.testing.assert_allclose([v for _, v in found], [sig(2.0), sig(0.5), sig(0.0)], rtol=1e-6)
    s = det.stride
    top = int(np.argmax(np.asarray(d.scores[0])))
    np.testing.assert_allclose(np.asarray(d.boxes[0, top]), [(4.5 - 1) * s, (4.25 - 0.5) * s, (4.5 + 1) * s,
                                                             (4.25 + 0.5) * s], atol=1e-4)  # fmt: skip
