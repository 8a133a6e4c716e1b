"""Set-prediction targets (losses/set.py): Hungarian matching on the loss table's costs,
invariant to the order of queries and of ground truth, padding never matched, box
gradients only through matched queries, empty images all no-object."""

import itertools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from jaxdet.losses import assigned
from jaxdet.losses import set as set_loss
from jaxdet.losses import terms as loss_terms

SIZE, Q, M, K = 64.0, 8, 4, 3


def _losses(classification="sigmoid_focal", localization="5*l1+2*giou"):
    cfg = ml_collections.ConfigDict(dict(
        classification=classification, localization=localization, confidence="none", classification_weight=1.0,
        localization_weight=1.0, confidence_weight=1.0, focal_alpha=0.25, focal_gamma=2.0,
    ))  # fmt: skip
    return loss_terms.build_loss_set(cfg, K)


def encode(boxes):  # xyxy pixels -> normalised (cx, cy, w, h), DETR's box output
    return jnp.concatenate([(boxes[..., :2] + boxes[..., 2:]) / 2, boxes[..., 2:] - boxes[..., :2]], -1) / SIZE


def decode(raw):
    raw = raw * SIZE
    return jnp.concatenate([raw[..., :2] - raw[..., 2:] / 2, raw[..., :2] + raw[..., 2:] / 2], -1)


def _problem(seed=0, real=3):
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 40, (1, M, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(6, 24, (1, M, 2))], -1).astype(np.float32)
    batch = {"boxes": jnp.asarray(boxes), "labels": jnp.asarray(rng.integers(0, K, (1, M)), jnp.int32),
             "box_mask": jnp.asarray(np.arange(M)[None] < real), "image_mask": jnp.ones((1,), bool)}  # fmt: skip
    outputs = {"cls_logits": jnp.asarray(rng.normal(0, 1, (1, Q, K)), jnp.float32),
               "boxes": jnp.asarray(rng.uniform(0.2, 0.6, (1, Q, 4)), jnp.float32)}  # fmt: skip
    return outputs, batch


def _terms(losses, outputs, batch):
    targets = set_loss.match(losses, outputs["cls_logits"], outputs["boxes"], batch, encode, decode)
    terms = assigned.term_losses(losses, targets, outputs["boxes"], decode, encode, cls_logits=outputs["cls_logits"],
                              cls_region="everywhere")  # fmt: skip
    return terms, targets


@pytest.mark.slow  # (the default suite stays under 15 minutes on 2 cores; CI skips slow)
def test_matching_is_the_minimum_total_cost_by_brute_force():
    losses = _losses()
    outputs, batch = _problem()
    _, t = _terms(losses, outputs, batch)
    cost = np.asarray(
        2.0 * set_loss.class_cost(losses, outputs["cls_logits"][0], batch["labels"][0])
        + set_loss.box_cost(losses, outputs["boxes"][0], batch["boxes"][0], encode, decode)
    )[:, :3]
    best = min(sum(cost[q, m] for m, q in enumerate(p)) for p in itertools.permutations(range(Q), 3))
    pos = np.flatnonzero(np.asarray(t.positive[0]))
    matched_boxes = np.asarray(t.boxes[0])[pos]
    gt_index = [int(np.flatnonzero((np.asarray(batch["boxes"][0]) == b).all(1))[0]) for b in matched_boxes]
    np.testing.assert_allclose(sum(cost[q, m] for q, m in zip(pos, gt_index)), best, rtol=1e-5)
    assert sorted(gt_index) == [0, 1, 2] and len(pos) == 3  # each real box once, the padding slot never


@pytest.mark.parametrize("classification", ["sigmoid_focal", "varifocal", "softmax_cross_entropy"])
def test_loss_is_invariant_to_the_order_of_queries_and_of_ground_truth(classification):
    losses = _losses(classification)
    k = K + (1 if classification == "softmax_cross_entropy" else 0)
    outputs, batch = _problem(1)
    outputs["cls_logits"] = jnp.asarray(np.random.default_rng(2).normal(0, 1, (1, Q, k)), jnp.float32)
    base, _ = _terms(losses, outputs, batch)
    perm_q = np.random.default_rng(3).permutation(Q)
    shuffled = {k_: v[:, perm_q] for k_, v in outputs.items()}
    perm_m = np.array([2, 3, 0, 1])  # the padding slot moves to the middle
    reordered = {k_: (v if k_ == "image_mask" else v[:, perm_m]) for k_, v in batch.items()}
    for other in (_terms(losses, shuffled, batch)[0], _terms(losses, outputs, reordered)[0]):
        for key in base:
            np.testing.assert_allclose(float(other[key]), float(base[key]), rtol=1e-5, err_msg=key)


def test_padding_is_never_matched_and_box_gradients_flow_only_through_matched_queries():
    losses = _losses()
    outputs, batch = _problem(4)
    # A padding slot that every query would love: exactly query 0's box, query 0's best class.
    pad = decode(outputs["boxes"][0, 0])
    batch["boxes"] = batch["boxes"].at[0, 3].set(pad)
    batch["labels"] = batch["labels"].at[0, 3].set(int(jnp.argmax(outputs["cls_logits"][0, 0])))
    _, t = _terms(losses, outputs, batch)
    assert not (np.abs(np.asarray(t.boxes[0]) - np.asarray(pad)).max(1) < 1e-6)[np.asarray(t.positive[0])].any()

    def localization(boxes):
        return _terms(losses, {**outputs, "boxes": boxes}, batch)[0]["localization"]

    g = np.abs(np.asarray(jax.grad(localization)(outputs["boxes"])[0])).sum(1)
    matched = np.asarray(t.positive[0])
    assert matched.sum() == 3 and (g[matched] > 0).all() and (g[~matched] == 0).all()


def test_empty_image_trains_as_all_no_object():
    losses = _losses()
    outputs, batch = _problem(5, real=0)
    terms, t = _terms(losses, outputs, batch)
    loss_grad = jax.grad(lambda o: _terms(losses, o, batch)[0]["classification"])(outputs)
    assert not np.asarray(t.positive).any() and float(terms["localization"]) == 0.0
    assert float(terms["classification"]) > 0 and np.isfinite(np.asarray(loss_grad["cls_logits"])).all()
    assert np.abs(np.asarray(loss_grad["cls_logits"])).max() > 0  # every query learns "no object"
