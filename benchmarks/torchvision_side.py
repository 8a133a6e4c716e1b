"""The torchvision side of `experiments.bench --compare=torchvision` (needs the `bench` extra).

Runs in its own process (see `experiments/bench.py`), so its host memory peak and its
threads are its own. It times torchvision's reference training step for the detector
family: `model(images, targets)` -> sum of the loss dict -> backward -> SGD step (or, for
inference, `model(images)` in eval mode, post-processing included), on the same synthetic
batch as the jaxdet side (`jaxdet.data.synthetic`), random initialisation,
the same image size, batch and class count. On a GPU: bfloat16 autocast (AMP) and
channels_last when `compute_dtype` is bfloat16.

torchvision equivalents: retinanet -> retinanet_resnet50_fpn, fcos -> fcos_resnet50_fpn
(the same architecture with `fcos.py:torchvision`), yolo -> fcos_resnet50_fpn (the
anchor-free one-stage detector it has), faster_rcnn -> fasterrcnn_resnet50_fpn, ssd ->
ssd300_vgg16 (fixed 300x300 input). torchvision has no YOLOv8.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from benchmarks.memory import peak_host_mb
from jaxdet.data.synthetic import synthetic_batch

MODELS = {
    "retinanet": "retinanet_resnet50_fpn",
    "yolo": "fcos_resnet50_fpn",
    "fcos": "fcos_resnet50_fpn",
    "faster_rcnn": "fasterrcnn_resnet50_fpn",
    "ssd": "ssd300_vgg16",
}
# Detectors whose torchvision twin reserves label 0 for the background.
_BACKGROUND_CLASS = ("faster_rcnn", "ssd")


def build_model(detector: str, num_classes: int, image_size: int, model_kwargs: dict | None = None):
    """The torchvision model for a jaxdet detector name, randomly initialised.

    `model_kwargs` go to the torchvision builder (e.g. Faster R-CNN's proposal and RoI
    counts, set to jaxdet's so both sides do the same work)."""
    from torchvision.models import detection

    if detector not in MODELS:
        raise ValueError(f"no torchvision equivalent for detector {detector!r}; known: {sorted(MODELS)}")
    builder = getattr(detection, MODELS[detector])
    if detector == "ssd":
        if image_size != 300:
            raise ValueError(f"torchvision's ssd300_vgg16 takes 300x300 inputs; got --image_size={image_size}")
        return builder(weights=None, weights_backbone=None, num_classes=num_classes + 1, **(model_kwargs or {}))
    extra = 1 if detector in _BACKGROUND_CLASS else 0
    # min_size = max_size = the input side: torchvision's transform then leaves the size as is.
    return builder(
        weights=None,
        weights_backbone=None,
        num_classes=num_classes + extra,
        min_size=image_size,
        max_size=image_size,
        **(model_kwargs or {}),
    )


def freeze_stages(model, k: int) -> int:
    """torchvision's `trainable_backbone_layers = 4 - k` on a randomly initialised model
    (its builders ignore that argument without weights): the ResNet stem and stages 1..k
    stop requiring gradients, as jaxdet's `model.frozen_stages` k. Returns the count frozen."""
    if k < 0:
        return 0
    prefixes = ("conv1.", "bn1.", *(f"layer{i}." for i in range(1, k + 1)))
    frozen = [p for name, p in model.backbone.body.named_parameters() if name.startswith(prefixes)]
    for p in frozen:
        p.requires_grad_(False)
    return sum(p.numel() for p in frozen)


def bench_torchvision(
    detector: str,
    image_size: int,
    batch: int,
    max_boxes: int,
    num_classes: int,
    steps: int,
    warmup: int,
    compute_dtype: str = "float32",
    seed: int = 0,
    model_kwargs: dict | None = None,
    mode: str = "train",
    frozen_stages: int = -1,
) -> dict[str, Any]:
    """Times torchvision's training step (mode "train") or its eval-mode forward with its
    post-processing (mode "inference": `model(images)` under `torch.inference_mode`);
    returns the same fields as `benchmark.bench_jaxdet`."""
    import torch

    torch.manual_seed(seed)
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    model = build_model(detector, num_classes, image_size, model_kwargs).to(device)
    freeze_stages(model, frozen_stages)
    amp = cuda and compute_dtype == "bfloat16"
    if amp:
        model = model.to(memory_format=torch.channels_last)
    if mode not in ("train", "inference"):
        raise ValueError(f"mode={mode!r}; valid: 'train', 'inference'")
    model.train(mode == "train")
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9, weight_decay=1e-4)

    data = synthetic_batch(batch, image_size, max_boxes, num_classes, seed)
    offset = 1 if detector in _BACKGROUND_CLASS else 0
    images = [torch.from_numpy(im).permute(2, 0, 1).contiguous().to(device) / 255.0 for im in data["image"]]
    targets = [
        {
            "boxes": torch.from_numpy(b[m]).to(device),
            "labels": torch.from_numpy(lab[m].astype("int64") + offset).to(device),
        }
        for b, lab, m in zip(data["boxes"], data["labels"], data["box_mask"], strict=True)
    ]

    def infer() -> float:
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            detections = model(images)
        count = float(sum(len(d["scores"]) for d in detections))  # synchronises with the device
        if cuda:
            torch.cuda.synchronize()
        return count

    def train_step() -> float:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = sum(model(images, targets).values())
        loss.backward()
        opt.step()
        value = float(loss.detach())  # synchronises with the device
        if cuda:
            torch.cuda.synchronize()
        return value

    step = train_step if mode == "train" else infer
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    losses, times = [], []
    t0 = time.perf_counter()
    losses.append(step())
    first_step_s = time.perf_counter() - t0
    for i in range(warmup - 1 + steps):
        t = time.perf_counter()
        losses.append(step())
        if i >= warmup - 1:
            times.append(time.perf_counter() - t)
    step_s = statistics.median(times)
    name = torch.cuda.get_device_name(0) if cuda else f"CPU ({torch.get_num_threads()} threads)"
    return {
        "framework": "torchvision",
        "mode": mode,
        "detector": MODELS[detector],
        "backbone": "vgg16" if detector == "ssd" else "resnet50",
        "device": f"1 x {name}",
        "image_size": image_size,
        "batch": batch,
        "compute_dtype": "bfloat16 (autocast, channels_last)" if amp else "float32",
        "params_m": sum(p.numel() for p in model.parameters()) / 1e6,
        "compile_s": None,
        "first_step_s": first_step_s,
        "step_s": step_s,
        "step_s_min": min(times),
        "images_per_s": batch / step_s,
        "flops_per_step": None,
        "mfu": None,
        "peak_host_mb": peak_host_mb(),
        "peak_device_mb": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        # (inference: the detections kept after post-processing, per step)
        "losses" if mode == "train" else "detections": losses if mode == "train" else losses[-1],
    }
