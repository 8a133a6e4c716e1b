"""What the torchvision comparisons share: random torchvision models with non-trivial
norms, their converted jaxdet twins, images, one-image loss batches, detection matching.
Imported only by test files that skip without torch."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torchvision

from jaxdet import detectors
from jaxdet.detectors import inference
from jaxdet.models import convert
from jaxdet.models.necks import FPN

SIZE = 96  # odd feature sizes at several levels (96 -> 48, 24, 12, 6, 3, 2, 1)


@pytest.fixture(autouse=True)
def _full_precision():
    """The mapping of weights is checked as algebra, against torch on the CPU: jaxdet's
    convolutions run at full float32 precision here, whatever the backend's default (TF32
    on recent NVIDIA GPUs would move ResNet-50 features by ~1e-3)."""
    with jax.default_matmul_precision("highest"):
        yield


def randomize_norms(model) -> None:
    """Non-trivial BatchNorm statistics and (BatchNorm, GroupNorm) affine parameters, so that they are tested."""
    g = torch.Generator().manual_seed(0)
    for m in model.modules():
        if isinstance(m, torch.nn.GroupNorm):
            m.weight.data.copy_(torch.rand(m.num_channels, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_channels, generator=g) * 0.1)
        if isinstance(m, (torch.nn.BatchNorm2d, torchvision.ops.FrozenBatchNorm2d)):
            n = m.running_mean.shape[0]
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)


def save(model, tmp_path) -> str:
    path = str(tmp_path / "weights.pth")
    torch.save(model.state_dict(), path)
    return path


def random_images(seed: int = 0) -> np.ndarray:
    """A normalised image batch [2, SIZE, SIZE, 3] (what both models see after their transforms)."""
    pixels = np.random.default_rng(seed).uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32)
    return np.asarray(inference.normalize(jnp.asarray(pixels)))


def nchw(x: np.ndarray):
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))


def close(jax_nhwc, torch_nchw, what: str) -> None:
    ours, theirs = np.asarray(jax_nhwc), torch_nchw.detach().numpy()
    if theirs.ndim == 4:
        theirs = theirs.transpose(0, 2, 3, 1)
    scale = max(float(np.abs(theirs).max()), 1.0)
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4 * scale, err_msg=what)


def detector(config, num_classes: int, tmp_path, weights: str):
    config.model.detector_weights = weights
    det = detectors.build_detector(config, num_classes, None)
    rngs = {"params": jax.random.key(0), "sampling": jax.random.key(0)}
    size = config.data.image_size  # the detector's anchors are laid out for this size
    init = det.module.init(rngs, jnp.zeros((1, size, size, 3)), train=False)
    converter = detectors.get_definition(config.model.name).convert
    variables = convert.load_pretrained(config.model, jax.device_get(init), converter, log=lambda line: None)
    return det, variables


def fpn_outputs(det, variables, image):
    out, state = det.module.apply(variables, image, train=False, capture_intermediates=lambda m, _: isinstance(m, FPN))
    return out, state["intermediates"]["FPN_0"]["__call__"][0]


def torchvision_detector(name: str, num_classes: int):
    """A randomly initialised torchvision detector in eval mode, with non-trivial norms."""
    builder = getattr(torchvision.models.detection, name)
    tv = builder(weights=None, weights_backbone=None, num_classes=num_classes).eval()
    randomize_norms(tv)
    return tv


def loss_batch(size: int, cases: list[np.ndarray], max_boxes: int = 6) -> list[dict]:
    """One batch per image (torchvision normalises per image, jaxdet per batch: alike for one)."""
    batches = []
    for boxes in cases:
        n = len(boxes)
        padded = np.zeros((1, max_boxes, 4), np.float32)
        padded[0, :n] = boxes
        labels = np.zeros((1, max_boxes), np.int32)
        labels[0, :n] = np.arange(n) % 7
        mask = np.zeros((1, max_boxes), bool)
        mask[0, :n] = True
        batches.append({"boxes": padded, "labels": labels, "box_mask": mask, "image_mask": np.ones(1, bool)})
    return batches


def assert_same_detections(boxes, scores, classes, theirs, score_tol=1e-5, box_tol=1e-3) -> None:
    """One-to-one: every detection has a twin of the same class, score within `score_tol`
    and box within `box_tol` px (in any order: near-equal scores may sort either way)."""
    t_boxes, t_scores, t_classes = (theirs[k].numpy() for k in ("boxes", "scores", "labels"))
    free = np.ones(len(t_scores), bool)
    for b, s, c in zip(boxes, scores, classes):
        twin = free & (t_classes == c) & (np.abs(t_scores - s) <= score_tol) & (np.abs(t_boxes - b).max(1) <= box_tol)
        assert twin.any(), f"no torchvision twin for class {c} score {s} box {b}"
        free[np.argmax(twin)] = False


def rescale(layer, outputs, std: float, bias: float = 0.0) -> None:
    """Scales a final layer so that its outputs have `std` (and sets its bias): a trained
    detector's logits and box deltas (~0.1-1, what the box coder's weights normalise to),
    not a random network's (deltas up to ~9, which exp() turns float32 noise into
    centi-pixels)."""
    layer.weight.mul_(std / outputs.std())
    layer.bias.fill_(bias)


def square_inputs(tv, size: int, seed: int):
    """Pixels [2, size, size, 3] in 0..255 and torchvision's inputs for them; its transform
    leaves a square `size` image unchanged, so both models see the same pixels."""
    tv.transform.min_size, tv.transform.max_size = (size,), size
    pixels = np.random.default_rng(seed).uniform(0, 255, (2, size, size, 3)).astype(np.float32)
    return pixels, [torch.from_numpy(p.transpose(2, 0, 1) / 255.0) for p in pixels]
