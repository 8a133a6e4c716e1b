"""The DETR detector's training step: one compilation for any number of objects, and the
denoising queries (models/heads/denoising.py): their noise, their attention mask, their
targets, and that they leave the matching queries' outputs exactly as without them."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import recipe
from jaxdet import detectors, parallel
from jaxdet.detectors import inference
from jaxdet.errors import ConfigError
from jaxdet.models.heads import denoising
from jaxdet.models.heads.detr import DETRHead
from jaxdet.training import optim
from jaxdet.training.step import init_state, make_train_step, shard_train_step

SIZE, M, K = 32, 4, 5


def _config(groups=0):
    config = recipe("detr", "tiny")
    config.data.image_size = SIZE
    config.data.max_boxes = M
    config.model.detr.num_queries = 8
    config.model.detr.denoising = groups
    return config


def _batch(objects: int, n: int = 2, seed: int = 0):
    """n images, each with `objects` real boxes of the M padded slots."""
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, SIZE / 2, (n, M, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(4, SIZE / 2, (n, M, 2))], -1).astype(np.float32)
    return {
        "image": rng.uniform(0, 255, (n, SIZE, SIZE, 3)).astype(np.float32),
        "boxes": boxes,
        "labels": rng.integers(0, K, (n, M)).astype(np.int32),
        "box_mask": np.broadcast_to(np.arange(M) < objects, (n, M)).copy(),
        "image_mask": np.ones(n, bool),
    }


def test_train_step_compiles_once_for_batches_of_0_to_m_objects():
    """With denoising queries (the path with the most object-count-dependent parts; the
    plain set loss trains in test_loss_swapping.py::test_detector_train_steps)."""
    groups = 2
    config = _config(groups)
    det = detectors.build_detector(config, K)
    mesh = parallel.make_mesh(jax.devices()[:1])
    tx, lr = optim.make_optimizer(config.optim, 10)
    state = init_state(det, tx, jax.random.key(0), SIZE, mesh)
    chex.clear_trace_counter()  # (the counter is per function name; other tests trace a step_fn too)
    traced = chex.assert_max_traces(make_train_step(det, tx, lr), n=1)
    step = shard_train_step(traced, mesh)
    for objects in range(M + 1):  # 0 (every query "no object") .. M real boxes
        state, metrics = step(state, parallel.global_batch(mesh, _batch(objects, seed=objects)), jax.random.key(1))
        metrics = jax.device_get(metrics)
        assert all(np.isfinite(v) for v in metrics.values()), (objects, metrics)
        assert metrics["nonfinite"] == 0.0
        if objects == 0:  # an empty batch trains classification only
            assert metrics["localization"] == 0.0 and metrics["classification"] > 0
        else:
            assert metrics["localization"] > 0
        assert {"dn_classification", "aux_localization", "aux0/localization", "enc/classification"} <= set(metrics)
    assert int(state.step) == M + 1


def _queries(groups=3, label_noise=0.0, seed=0):
    rng = np.random.default_rng(seed)
    boxes = np.concatenate([rng.uniform(0.3, 0.7, (2, M, 2)), rng.uniform(0.05, 0.2, (2, M, 2))], -1)
    labels = rng.integers(0, K, (2, M))
    mask = np.array([[True, True, True, False], [True, False, False, False]])
    q = denoising.make_queries(jax.random.key(seed), jnp.asarray(boxes, jnp.float32), jnp.asarray(labels), mask,
                               groups, K, label_noise)  # fmt: skip
    return q, boxes, labels, mask


def test_denoising_queries_move_positives_less_than_half_a_box_and_negatives_between_one_and_two_halves():
    q, boxes, labels, mask = _queries()
    slot, positive, real = np.asarray(q.slot), np.asarray(q.positive), np.asarray(q.real)
    assert q.boxes.shape == (2, 3 * 2 * M, 4) and slot[0].tolist() == list(range(M)) * 6
    assert positive[0].tolist() == ([True] * M + [False] * M) * 3
    np.testing.assert_array_equal(real, np.take_along_axis(mask, slot, 1))
    gt = np.take_along_axis(boxes, slot[..., None], 1)
    to_xyxy = lambda b: np.concatenate([b[..., :2] - b[..., 2:] / 2, b[..., :2] + b[..., 2:] / 2], -1)  # noqa: E731
    half = np.tile(gt[..., 2:] / 2, (1, 1, 2))
    shift = np.abs(to_xyxy(np.asarray(q.boxes)) - to_xyxy(gt)) / half  # (no clipping: boxes in the middle)
    assert (shift[real & positive] <= 1 + 1e-4).all() and (shift[real & ~positive] >= 1 - 1e-4).all()
    assert (shift[real & ~positive] <= 2 + 1e-4).all() and shift[real & positive].mean() > 0.2  # noise is there
    np.testing.assert_array_equal(np.asarray(q.labels), np.where(real, np.take_along_axis(labels, slot, 1), K))
    flipped, _, _, _ = _queries(groups=50, label_noise=1.0)  # flip half; a random class is the true one 1/K
    rate = (np.asarray(flipped.labels) != np.take_along_axis(labels, np.asarray(flipped.slot), 1))[np.asarray(
        flipped.real)].mean()  # fmt: skip
    assert abs(rate - 0.5 * (1 - 1 / K)) < 0.06, rate


def test_attention_mask_hides_denoising_from_matching_queries_groups_from_each_other_and_padding():
    q, _, _, _ = _queries(groups=2)
    mask = np.asarray(denoising.attention_mask(q.real, 2, num_queries=3))[:, 0]  # [B, T, T], T = 16 + 3
    qd = 2 * 2 * M
    assert mask.shape == (2, qd + 3, qd + 3)
    assert mask[:, qd:, qd:].all() and not mask[:, qd:, :qd].any()  # matching: only matching keys
    assert mask[:, :qd, qd:].all()  # denoising queries read the matching ones
    group = np.arange(qd) // (2 * M)
    real = np.asarray(q.real)
    for b in range(2):
        expect = (group[:, None] == group[None, :]) & (real[b][None, :] | np.eye(qd, dtype=bool))
        np.testing.assert_array_equal(mask[b, :qd, :qd], expect)


def test_denoising_leaves_the_matching_queries_outputs_unchanged():
    rng = np.random.default_rng(0)
    features = {lvl: jnp.asarray(rng.normal(size=(2, SIZE >> lvl, SIZE >> lvl, 16)), jnp.float32) for lvl in (3, 4)}
    q, boxes, labels, mask = _queries()
    truth = (jnp.asarray(boxes, jnp.float32), jnp.asarray(labels), jnp.asarray(mask))
    head = DETRHead(K, num_queries=6, num_layers=2, heads=2, ffn=32, num_classes=K, denoising=3)
    key = jax.random.key(0)
    variables = head.init({"params": key, "sampling": key}, features)
    assert "denoising_embed" in variables["params"]
    plain = head.apply(variables, features)
    noised = head.apply(variables, features, truth, rngs={"sampling": jax.random.key(1)})
    assert "dn_boxes" not in plain and noised["dn_boxes"].shape == (2, 2, 3 * 2 * M, 4)
    for k in ("cls_logits", "boxes", "aux_cls_logits", "aux_boxes", "enc_boxes"):
        np.testing.assert_allclose(np.asarray(noised[k]), np.asarray(plain[k]), atol=1e-5, err_msg=k)


def test_denoising_loss_trains_positives_on_their_box_and_negatives_on_no_object():
    config = _config(groups=2)
    det = detectors.build_detector(config, K)
    batch = {k: jnp.asarray(v) for k, v in _batch(objects=2).items()}
    key = jax.random.key(0)
    # (jitted: run op by op, the model and the matcher's loops take ~3x longer here)
    variables = jax.jit(lambda k: det.module.init({"params": k, "sampling": k}, batch["image"], train=False))(key)
    outputs = jax.jit(lambda v: inference.forward(det, v, batch, jax.random.key(1), train=True)[0])(variables)
    real_positive = np.asarray(outputs["dn_real"] & outputs["dn_positive"])
    assert real_positive.sum() == 2 * 2 * 2  # images x groups x real boxes

    def dn_localization(dn_boxes):
        return det.loss_fn({**outputs, "dn_boxes": dn_boxes}, batch, key)[1]["dn_localization"]

    grads = np.asarray(jax.jit(jax.grad(dn_localization))(outputs["dn_boxes"]))  # [B, L, Qd, 4]
    moved = np.abs(grads).sum(axis=(1, 3)) > 0
    np.testing.assert_array_equal(moved, real_positive)  # box losses only through real positives
    loss_fn = jax.jit(lambda out: det.loss_fn(out, batch, key))
    total, terms = loss_fn(outputs)
    assert float(terms["dn_classification"]) > 0 and np.isfinite(float(total))
    no_dn = {k: v for k, v in outputs.items() if not k.startswith("dn_")}
    plain_total, plain_terms = loss_fn(no_dn)  # (traced again: the outputs without the dn_ entries)
    # The denoising part is its own terms: the last layer's are unchanged, and the total adds the dn terms.
    assert float(plain_terms["dn_classification"]) == 0.0 == float(plain_terms["dn_localization"])
    np.testing.assert_allclose(float(terms["localization"]), float(plain_terms["localization"]), rtol=1e-6)
    w = det.term_weights
    dn = w["dn_classification"] * terms["dn_classification"] + w["dn_localization"] * terms["dn_localization"]
    np.testing.assert_allclose(float(total), float(plain_total + dn), rtol=1e-5)


def test_the_shipped_recipes_build_their_detector_and_too_few_queries_are_refused():
    for variant in (None, "tiny"):
        detectors.build_detector(recipe("detr", variant), K)
    config = _config()
    config.model.detr.num_queries = M - 1
    with pytest.raises(ConfigError, match="num_queries=3 is below config.data.max_boxes=4"):
        detectors.build_detector(config, K)
    config = _config(groups=-1)
    with pytest.raises(ConfigError, match="denoising=-1"):
        detectors.build_detector(config, K)


def _part_terms(**loss):
    """DETR (tiny, 2 denoising groups)'s total and terms on one batch with fixed parameters,
    config.loss fields `loss` set (`terms__x` for loss.terms.x)."""
    config = _config(groups=2)
    for key, value in loss.items():
        node, *path = [config.loss, *key.split("__")]
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value
    det = detectors.build_detector(config, K)
    batch = {k: jnp.asarray(v) for k, v in _batch(objects=2).items()}
    key = jax.random.key(0)
    variables = jax.jit(lambda k: det.module.init({"params": k, "sampling": k}, batch["image"], train=False))(key)

    def loss(v):
        outputs = inference.forward(det, v, batch, jax.random.key(1), train=True)[0]
        return det.loss_fn(outputs, batch, key)

    total, terms = jax.jit(loss)(variables)
    return float(total), {k: float(v) for k, v in terms.items()}, det


def test_each_part_is_its_own_term_a_term_flag_changes_only_its_part():
    """Last layer, auxiliary parts (earlier layers + encoder proposals) and denoising queries
    are separate terms: swapping or weighting one leaves the others (and the matching) alone."""
    total, base, det = _part_terms()
    parts = ["classification", "localization", "confidence", "aux_classification", "aux_localization",
             "dn_classification", "dn_localization"]  # fmt: skip
    assert list(det.term_weights) == parts and all(base[t] > 0 for t in parts if t != "confidence")
    assert base["aux_localization"] == pytest.approx(sum(v for k, v in base.items() if k.endswith("/localization")))
    assert total == pytest.approx(sum(det.term_weights[t] * base[t] for t in parts), rel=1e-6)
    _, l1, _ = _part_terms(terms__aux_localization="l1")
    assert l1["aux_localization"] != pytest.approx(base["aux_localization"], rel=1e-3)
    assert all(l1[t] == base[t] for t in parts if t != "aux_localization")
    no_dn, same, det = _part_terms(dn_localization_weight=0.0, dn_classification_weight=0.0)
    assert same == base and det.term_weights["dn_localization"] == 0.0
    assert no_dn == pytest.approx(total - 2.0 * base["dn_classification"] - base["dn_localization"], rel=1e-6)
    # One set of class logits serves every part: their classification losses share an activation.
    with pytest.raises(ConfigError, match="config.loss.terms.dn_classification: its loss is softmax-based"):
        _part_terms(terms__dn_classification="softmax_cross_entropy")
