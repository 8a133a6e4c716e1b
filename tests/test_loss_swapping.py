"""Every loss in LOSSES trains every detector; term gradients add up; sweeps tabulate."""

import functools
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from experiments.configs import default
from jaxdet import detectors, losses, parallel, sweep
from jaxdet.detectors import inference
from jaxdet.detectors.config import use_detector
from jaxdet.errors import ConfigError
from jaxdet.training import optim
from jaxdet.training.step import (
    init_key,
    init_state,
    make_term_grad_step,
    make_train_step,
    per_term_gradients,
    shard_train_step,
)

# Detectors whose structure needs a confidence (objectness) loss: the RPN of a two-stage one.
NEEDS_CONFIDENCE = ("faster_rcnn",)
# Detectors whose head predicts a distribution over each box side (for distribution_focal).
DISTRIBUTION_HEADS = ("yolov8",)


def _config(detector="retinanet", **loss):
    config = default.get_config("tiny")
    use_detector(config, detector)
    if detector in NEEDS_CONFIDENCE:
        config.loss.confidence = "sigmoid_binary_cross_entropy"
    config.data.image_size = 32
    config.model.pre_nms_topk = 50
    for k, v in loss.items():
        if v is not None:
            config.loss[k] = v
    return config


def _batch(n=2, size=32, all_padding=False):
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, size / 2, (n, 3, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(4, size / 2, (n, 3, 2))], -1).astype(np.float32)
    mask = np.zeros((n, 3), bool) if all_padding else np.array([[True, True, False]] * n)
    return {
        "image": rng.uniform(0, 255, (n, size, size, 3)).astype(np.float32),
        "boxes": boxes,
        "labels": rng.integers(0, 5, (n, 3)).astype(np.int32),
        "box_mask": mask,
        "image_mask": np.ones(n, bool),
    }


def _train(config, steps=2, batch=None):
    mesh = parallel.make_mesh(jax.devices()[:1])
    det = detectors.build_detector(config, 5)
    tx, lr = optim.make_optimizer(config.optim, 10)
    state = init_state(det, tx, jax.random.key(0), config.data.image_size, mesh)
    step = shard_train_step(make_train_step(det, tx, lr), mesh)
    batch = parallel.global_batch(mesh, batch or _batch())
    out = []
    for _ in range(steps):
        state, m = step(state, batch, jax.random.key(1))
        out.append(jax.device_get(m))
    return det, state, out


SWAPS = (
    [("classification", n) for n in sorted(losses.CLASSIFICATION_LOSSES)]
    + [("localization", n) for n in sorted(losses.LOCALIZATION_LOSSES)]
    + [("confidence", n) for n in sorted(losses.CONFIDENCE_LOSSES)]
)


@functools.lru_cache(maxsize=None)
def _initial_outputs(detector: str, classification: str, confidence: str) -> dict:
    """Raw outputs of a freshly initialised model on `_batch()` (cached: the head layout only
    depends on the classification activation and whether there is a confidence output)."""
    config = _config(detector, classification=classification, confidence=confidence)
    det = detectors.build_detector(config, 5)
    batch = {k: jnp.asarray(v) for k, v in _batch().items()}
    key = jax.random.key(0)
    variables = det.module.init({"params": key, "sampling": key}, batch["image"], train=False)
    return jax.jit(lambda v, b: inference.forward(det, v, b, jax.random.key(1), train=True)[0])(variables, batch)


# Faster R-CNN's column is the slowest (~10 s per loss: two stages to trace) and shares the
# loss code with the others; it runs with `pytest -m slow` to keep the default suite in budget.
# Also slow: detectors whose train steps run elsewhere (test_detr.py; YOLOs: assigner, neck tests).
_SLOW = ("faster_rcnn", "detr", "yolo", "yolov8")
SWAP_DETECTORS = [pytest.param(d, marks=pytest.mark.slow) if d in _SLOW else d for d in sorted(detectors.DETECTORS)]
# The whole matrix is (detector x loss); the default suite runs every loss on the four
# anchor-based / YOLOX columns; the newer detectors' columns (their losses go through the
# same dense path; ~2-5 s of compile per cell) run with `pytest -m slow`, to keep the
# default suite under 15 minutes on 2 cores (all passed when they were added); their real
# train steps are in the default suite (test_detector_train_steps).
_SLOW_COLUMNS = ("faster_rcnn", "fcos", "yolov8", "detr")
SWAP_CASES = [
    pytest.param(d, f, n, marks=pytest.mark.slow) if d in _SLOW_COLUMNS else pytest.param(d, f, n)
    for d in sorted(detectors.DETECTORS)
    for f, n in SWAPS
]


@pytest.mark.parametrize("detector, family, name", SWAP_CASES)
def test_every_loss_trains_every_detector(detector, family, name):
    """Each loss on each detector: finite loss and gradients, and gradient steps lower it.

    The steps act on the head outputs directly (jit of the loss alone compiles in about a
    second, a full train step in ten); `test_detector_train_steps` runs the real step.
    """
    config = _config(detector, **{family: name})
    if detector in NEEDS_CONFIDENCE and family == "confidence" and name == "none":
        with pytest.raises(ConfigError, match="needs an objectness loss"):
            detectors.build_detector(config, 5)
        return
    if family == "localization" and losses.get_loss(family, name).space == "distribution":
        if detector not in DISTRIBUTION_HEADS:
            with pytest.raises(ConfigError, match="needs a head that predicts a distribution"):
                detectors.build_detector(config, 5)
            return
    det = detectors.build_detector(config, 5)
    batch = {k: jnp.asarray(v) for k, v in _batch().items()}
    outputs = _initial_outputs(detector, config.loss.classification, config.loss.confidence)

    fixed = {k: v for k, v in outputs.items() if not jnp.issubdtype(v.dtype, jnp.floating)}  # masks, labels
    outputs = {k: v for k, v in outputs.items() if k not in fixed}

    @jax.jit
    def loss_and_grad(out):
        loss = lambda o: det.loss_fn({**o, **fixed}, batch, jax.random.key(2))
        (total, terms), grads = jax.value_and_grad(loss, has_aux=True)(out)
        return total, terms, grads

    history = []
    for _ in range(6):
        total, terms, grads = loss_and_grad(outputs)
        assert np.isfinite(float(total)) and all(np.isfinite(float(v)) for v in terms.values()), (family, name)
        assert all(np.all(np.isfinite(np.asarray(g))) for g in grads.values()), (family, name)
        history.append(float(total))
        outputs = {k: outputs[k] - 0.1 * grads[k] for k in outputs}
    # IoU-aware targets move with the predicted boxes (under stop_gradient), so a gradient
    # step need not lower the loss; for every other loss it must.
    moving_target = (family == "classification" and losses.CLASSIFICATION_LOSSES[name].iou_aware) or (
        family == "confidence" and losses.CONFIDENCE_LOSSES[name].target == "iou"
    )
    if not moving_target:  # (L1's constant-size gradients may overshoot: some step must improve)
        assert min(history[1:]) < history[0], history
    # The detector's terms of this family (one-stage: the term named after it; Faster R-CNN:
    # e.g. rpn_box and roi_box for localization).
    family_terms = [t for t, f in detectors.get_definition(detector).terms.items() if f == family]
    assert family_terms and all(float(terms[t]) >= 0 for t in family_terms)
    if family == "confidence" and name != "none":
        assert all(float(terms[t]) > 0 for t in family_terms)  # the confidence output exists and is trained


@pytest.mark.parametrize("detector", SWAP_DETECTORS)  # (Faster R-CNN's real steps: tests/test_faster_rcnn.py)
def test_detector_train_steps(detector):
    """A few real data-parallel train steps and an eval step for each detector."""
    config = _config(detector, confidence="sigmoid_binary_cross_entropy" if detector == "yolo" else None)
    det, state, metrics = _train(config, steps=3)
    for m in metrics:
        assert all(np.isfinite(v) for v in m.values()), m
    assert metrics[-1]["loss"] < metrics[0]["loss"]
    mesh = parallel.make_mesh(jax.devices()[:1])
    dets, terms = inference.make_eval_step(det, mesh)(state.variables, parallel.global_batch(mesh, _batch()))
    assert dets["boxes"].shape == (2, config.model.max_detections, 4)
    assert all(np.isfinite(float(v)) for v in terms.values())


def test_all_padding_batch_gives_finite_loss_and_gradients():
    for cls in ("varifocal",):  # IoU-aware targets: the path with the most divisions
        _, _, metrics = _train(_config(classification=cls, confidence="iou_varifocal"), batch=_batch(all_padding=True))
        assert all(np.isfinite(v) for v in metrics[-1].values())
        assert metrics[-1]["localization"] == 0.0


def test_loss_hyperparameters_come_from_the_config():
    config = _config(focal_gamma=0.0, focal_alpha=-1.0)
    bound = losses.build_loss("classification", "sigmoid_focal", config.loss)
    logits, labels = jnp.array([[0.3, -1.0]]), jnp.array([0])
    expected = jnp.sum(losses.sigmoid_binary_cross_entropy(logits, jnp.array([[1.0, 0.0]])))
    np.testing.assert_allclose(bound.fn(logits, labels, jnp.ones(1)), [expected], rtol=1e-6)


def test_term_gradients_sum_to_the_total_gradient():
    config = _config(confidence="iou_binary_cross_entropy", localization="giou")
    mesh = parallel.make_mesh(jax.devices()[:1])
    det = detectors.build_detector(config, 5)
    tx, _ = optim.make_optimizer(config.optim, 10)
    state = init_state(det, tx, jax.random.key(0), 32, mesh)
    batch = parallel.global_batch(mesh, _batch())

    def both(state, batch):
        rng = jax.random.key(3)
        jac = per_term_gradients(det, state, batch, rng)

        def total(params):
            variables = {"params": params, "batch_stats": state.batch_stats}
            outputs, _ = inference.forward(det, variables, batch, rng, train=True)
            return det.loss_fn(outputs, batch, rng, axis_name=parallel.AXIS)[0]

        return jac, jax.grad(total)(state.params)

    fn = jax.jit(jax.shard_map(both, mesh=mesh, in_specs=(P(), P("data")), out_specs=P(), check_vma=False))
    jac, grad = fn(state, batch)
    for j, g in zip(jax.tree_util.tree_leaves(jac), jax.tree_util.tree_leaves(grad)):
        # float32 sums in another order: the absolute tolerance scales with the leaf (1e-6 at least,
        # for the conv biases before GroupNorm whose true gradient is 0 and float noise ~1e-8).
        g = np.asarray(g)
        np.testing.assert_allclose(np.asarray(j).sum(0), g, rtol=1e-4, atol=max(1e-6, 1e-4 * np.abs(g).max()))

    diag = jax.device_get(make_term_grad_step(det, mesh)(state, batch, jax.random.key(0)))
    assert all(np.isfinite(v) for v in diag.values())
    assert (
        diag["grad_norm/classification"] > 0 and diag["grad_norm/localization"] > 0 and diag["grad_norm/confidence"] > 0
    )
    for k, v in diag.items():
        if k.startswith("grad_cos/"):
            assert -1.0 - 1e-5 <= v <= 1.0 + 1e-5


def test_sweep_parsing_and_errors():
    config = default.get_config()
    grid = sweep.parse_sweep(config, ["loss.localization=l1,giou", "optim.learning_rate=0.1,0.01"])
    assert len(grid) == 4 and grid[1] == {"loss.localization": "l1", "optim.learning_rate": 0.01}
    swept = sweep.parse_sweep(config, ["model.retinanet.aspect_ratios=(0.5,1.0),(1.0,)"])
    assert swept[0]["model.retinanet.aspect_ratios"] == (0.5, 1.0)
    assert sweep.arm_name(grid[0]) == "loss.localization=l1,optim.learning_rate=0.1"
    with pytest.raises(ValueError, match="no field 'localisation'"):
        sweep.parse_sweep(config, ["loss.localisation=l1"])
    with pytest.raises(ValueError, match="--seeds"):
        sweep.parse_sweep(config, ["seed=1,2"])
    with pytest.raises(ValueError, match="one per process"):
        sweep.parse_sweep(config, ["train.cpu_devices=1,2"])


def test_linked_sweep_axis_changes_its_fields_together():
    """'a,b=(..),(..)': one axis (a recipe against another), each value typed as its field."""
    config = default.get_config()
    keys = "data.mosaic_prob,data.mixup_prob,data.close_mosaic_steps,data.train_sizes"
    grid = sweep.parse_sweep(config, [f"{keys}=(0,0,0,()), (1,0.1,100,(96,128))", "optim.ema_decay=0,0.99"])
    assert len(grid) == 4 and grid[2][keys] == (1.0, 0.1, 100, (96, 128))
    cfg = sweep.apply(config, grid[2], seed=3)
    assert (cfg.data.mosaic_prob, cfg.data.mixup_prob, cfg.data.close_mosaic_steps) == (1.0, 0.1, 100)
    assert isinstance(cfg.data.close_mosaic_steps, int) and cfg.data.train_sizes == (96, 128) and cfg.seed == 3
    name = sweep.arm_name(grid[2])
    assert name == (
        "data.mosaic_prob=1.0,data.mixup_prob=0.1,data.close_mosaic_steps=100,data.train_sizes=_96,_128_,"
        "optim.ema_decay=0.0"
    )
    records = [{"arm": sweep.arm_name(o), "overrides": o, "seed": 0, "final": {}} for o in grid]
    pairs = sweep.results.comparisons(records)
    assert (name, sweep.arm_name(grid[0]), keys) in pairs and len(pairs) == 4
    with pytest.raises(ValueError, match="each value must be a tuple of 2 values, one per field"):
        sweep.parse_sweep(config, ["data.mosaic_prob,data.mixup_prob=(1,0.1,3)"])
    with pytest.raises(ValueError, match="no field 'mixup'"):
        sweep.parse_sweep(config, ["data.mosaic_prob,data.mixup=(1,0.1)"])


@pytest.mark.slow  # ~60 s (two tiny training runs): `pytest -m slow`; parsing and errors are tested above
def test_two_arm_sweep_writes_results(tfds_dir, tmp_path, capsys):
    from jaxdet import experiment

    config = default.get_config("tiny")
    config.data.data_dir = tfds_dir
    config.train.term_grad_norms_every = 3
    runner = lambda cfg, wd: experiment.train_and_evaluate(cfg, wd, jax.devices()[:1])
    grid = sweep.parse_sweep(config, ["loss.localization=smooth_l1,giou"])
    records = sweep.run_sweep(config, str(tmp_path), grid, [0], runner)
    md, png = sweep.write_results(records, str(tmp_path))
    text = open(md).read()
    assert "| loss.localization=smooth_l1 |" in text and "| loss.localization=giou |" in text
    assert os.path.getsize(png) > 10_000
    # Same seed: every arm starts from the same parameters (and the data order is a function of the seed).
    mesh = parallel.make_mesh(jax.devices()[:1])
    inits = []
    for overrides in grid:
        cfg = sweep.apply(config, overrides, 0)
        det = detectors.build_detector(cfg, 5)
        tx, _ = optim.make_optimizer(cfg.optim, cfg.train.steps)
        inits.append(init_state(det, tx, init_key(cfg.seed), cfg.data.image_size, mesh).params)
    for a, b in zip(jax.tree_util.tree_leaves(inits[0]), jax.tree_util.tree_leaves(inits[1])):
        np.testing.assert_array_equal(a, b)
    with open(os.path.join(records[0]["workdir"], "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    diag = [r for r in rows if r["split"] == "diagnostics"]
    assert [r["step"] for r in diag] == [0, 3] and "grad_cos/classification__localization" in diag[0]
    # Re-running skips finished arms.
    capsys.readouterr()
    sweep.run_sweep(config, str(tmp_path), grid, [0], runner)
    assert capsys.readouterr().out.count("already finished") == 2
