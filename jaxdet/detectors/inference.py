"""The model's forward pass as evaluation and prediction run it: pixel normalisation, the
module on a batch, and the jitted, data-parallel eval step (detections and loss terms) and
predict step (detections alone). Training's step (training/step.py) uses `forward` too."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxdet import checkpoints, postprocess
from jaxdet.errors import ConfigError
from jaxdet.parallel import AXIS

# The fixed ImageNet statistics the backbone normalises with (pixels 0..255).
PIXEL_MEAN = np.array([123.675, 116.28, 103.53], np.float32)
PIXEL_STD = np.array([58.395, 57.12, 57.375], np.float32)


def normalize(images: jax.Array) -> jax.Array:
    """uint8 (or float) pixels 0..255 [B, H, W, 3] -> float32, ImageNet mean and std removed."""
    return (images.astype(jnp.float32) - PIXEL_MEAN) / PIXEL_STD


def forward(detector, variables: dict, batch: dict[str, jax.Array], rng: jax.Array, train: bool) -> tuple[dict, Any]:
    """The detector's module on a batch: (raw outputs, updated batch_stats or {}).

    Every module takes `targets` (the batch) and a "sampling" rng: one-stage heads ignore
    them; two-stage detectors sample their training regions from them. A batch of images
    alone (prediction) has no targets: then nothing is sampled.
    """
    images = normalize(batch["image"])
    rngs = {"sampling": rng}
    targets = batch if "boxes" in batch else None
    if train:
        outputs, mutated = detector.module.apply(
            variables, images, train=True, targets=targets, rngs=rngs, mutable=["batch_stats"]
        )
        return outputs, mutated.get("batch_stats", {})
    return detector.module.apply(variables, images, train=False, targets=targets, rngs=rngs), variables.get(
        "batch_stats", {}
    )


def abstract_variables(detector, image_size: int, mesh: Mesh) -> dict:
    """The shapes, dtypes and (replicated) shardings of the detector's variables ({"params",
    "batch_stats"}) for `image_size` square images, without computing them: a restore target."""
    rng = jax.random.key(0)
    dummy = jax.ShapeDtypeStruct((1, image_size, image_size, 3), jnp.float32)
    shapes = jax.eval_shape(lambda x: detector.module.init({"params": rng, "sampling": rng}, x, train=False), dummy)
    replicated = NamedSharding(mesh, P())
    variables = {"params": shapes["params"], "batch_stats": shapes.get("batch_stats", {})}
    return jax.tree_util.tree_map(lambda s: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=replicated), variables)


@dataclasses.dataclass(frozen=True)
class TTA:
    """Test-time augmentation of the eval step: the mirrored images (`flip`), each canvas
    side of `sizes` (with the detector built for it: {size: detector}; the batch's images
    resized on the device), each view's detections mapped back onto the batch's canvas and
    merged by `merge` ("nms" or "wbf", postprocess.merge) at `iou_threshold`."""

    flip: bool
    sizes: tuple[tuple[int, Any], ...]
    merge: str
    iou_threshold: float
    max_detections: int
    nms_form: str = "plain"


def tta_views(
    detector, tta: TTA, variables: dict, images: jax.Array, rng: jax.Array, plain: postprocess.Detections | None = None
) -> list[postprocess.Detections]:
    """The detections of every view `tta` asks for, on the canvas of `images` [B, S, S, 3]:
    the plain view (`plain` when given) first, its mirror, then each size and its mirror."""
    side = images.shape[1]

    def predict(det, x):
        return det.predict(forward(det, variables, {"image": x}, rng, train=False)[0])

    views = []
    for size, det in ((side, detector), *tta.sizes):
        x = images if size == side else jax.image.resize(images, (images.shape[0], size, size, 3), "linear")
        found = [plain if size == side and plain is not None else predict(det, x)]
        if tta.flip:
            found.append(postprocess.hflip(predict(det, x[:, :, ::-1]), float(size)))
        views += [postprocess.rescale(d, side / size) for d in found]
    return views


def make_eval_step(detector, mesh: Mesh, tta: TTA | None = None) -> Callable:
    """jit(shard_map) of `(variables, batch) -> (detections, loss terms)` in eval mode
    (variables: {"params", "batch_stats"}).

    Detections are split along "data" like the batch; the loss terms are averaged (on the
    images as given). `tta`: test-time augmentation, the detections of every view (`TTA`)
    mapped back onto the image and merged.
    """

    def eval_fn(variables: dict, batch: dict[str, jax.Array]):
        rng = jax.random.key(0)
        outputs, _ = forward(detector, variables, batch, rng, train=False)
        _, terms = detector.loss_fn(outputs, batch, rng, axis_name=AXIS)
        terms = jax.lax.pmean(terms, AXIS)
        detections = detector.predict(outputs)
        if tta is not None:
            views = tta_views(detector, tta, variables, batch["image"], rng, detections)
            detections = postprocess.merge(views, tta.iou_threshold, tta.max_detections, tta.nms_form, tta.merge)
        return detections._asdict(), terms

    mapped = jax.shard_map(eval_fn, mesh=mesh, in_specs=(P(), P(AXIS)), out_specs=(P(AXIS), P()), check_vma=False)
    return jax.jit(mapped)


def make_predict_step(detector, mesh: Mesh) -> Callable:
    """jit(shard_map) of `(variables, images [B, S, S, 3] uint8-range floats) -> detections`:
    what inference runs, the eval-mode forward and the detector's post-processing (score
    threshold, top-k, NMS or the set predictor's top-k; static shapes), no targets, no loss.
    Detections (`postprocess.Detections` as a dict, [B, D, ...]) are split along "data"."""

    def predict_fn(variables: dict, images: jax.Array):
        outputs, _ = forward(detector, variables, {"image": images}, jax.random.key(0), train=False)
        return detector.predict(outputs)._asdict()

    mapped = jax.shard_map(predict_fn, mesh=mesh, in_specs=(P(), P(AXIS)), out_specs=P(AXIS), check_vma=False)
    return jax.jit(mapped)


def restore_weights(workdir: str, which: str, detector, image_size: int, mesh) -> tuple[dict, int]:
    """(variables, step) of a run's checkpoint `which` (latest, best or a step): the weights
    alone, its "model" item, no optimizer built or read."""
    ckpts, step = checkpoints.find(workdir, which)
    try:
        target = {"model": abstract_variables(detector, image_size, mesh)}
        items, step = ckpts.restore_newest(target, checkpoints.candidates(ckpts, which, step))
    finally:
        ckpts.close()
    if items is None:
        raise ConfigError(f"no checkpoint in {ckpts.directory} restores (see the lines above)")
    return items["model"], step
