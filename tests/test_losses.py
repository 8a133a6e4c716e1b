"""Loss functions: reference values, the LOSSES table and finite gradients on degenerate input."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet import losses as L


def _np_focal(x, t, alpha=0.25, gamma=2.0):
    p = 1 / (1 + np.exp(-x))
    ce = -(t * np.log(p) + (1 - t) * np.log(1 - p))
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * (1 - p_t) ** gamma
    if alpha >= 0:
        loss *= alpha * t + (1 - alpha) * (1 - t)
    return loss


def test_focal_matches_reference_formula():
    x = np.array([-3.0, -0.5, 0.0, 0.7, 4.0])
    t = np.array([0.0, 1.0, 1.0, 0.0, 1.0])
    np.testing.assert_allclose(L.sigmoid_focal_loss(x, t), _np_focal(x, t), rtol=1e-5)
    np.testing.assert_allclose(L.sigmoid_focal_loss(x, t, alpha=-1), _np_focal(x, t, alpha=-1), rtol=1e-5)
    np.testing.assert_allclose(
        L.sigmoid_focal_loss(x, t, gamma=0.0, alpha=-1), L.sigmoid_binary_cross_entropy(x, t), rtol=1e-6
    )


def test_bce_and_softmax_ce():
    np.testing.assert_allclose(L.sigmoid_binary_cross_entropy(np.array([0.0]), np.array([1.0])), [np.log(2)], rtol=1e-6)
    logits = np.array([[1.0, 2.0, 3.0]])
    ref = -np.log(np.exp(3.0) / np.exp(logits).sum())
    np.testing.assert_allclose(L.softmax_cross_entropy(logits, np.array([2])), [ref], rtol=1e-6)
    smooth = L.softmax_cross_entropy(logits, np.array([2]), label_smoothing=0.3)
    logp = logits - np.log(np.exp(logits).sum())
    np.testing.assert_allclose(smooth, [-(0.7 * logp[0, 2] + 0.1 * logp[0].sum())], rtol=1e-6)


def test_softmax_no_object_weight_scales_only_the_background_rows():
    import ml_collections

    logits = jnp.asarray(np.random.default_rng(0).normal(size=(4, 3)), jnp.float32)  # 2 classes + background
    labels = jnp.asarray([0, 2, 1, 2])
    cfg = ml_collections.ConfigDict({"label_smoothing": 0.0, "no_object_weight": 0.1})
    weighted = L.build_loss("classification", "softmax_cross_entropy", cfg).fn(logits, labels, jnp.ones(4))
    plain = L.softmax_cross_entropy(logits, labels)
    np.testing.assert_allclose(weighted, np.asarray(plain) * np.array([1, 0.1, 1, 0.1]), rtol=1e-6)


def test_smooth_l1_semantics():
    d = np.array([0.0, 0.05, 0.5, 2.0])
    np.testing.assert_allclose(L.smooth_l1_loss(d, 0.0, beta=1.0), [0.0, 0.00125, 0.125, 1.5], rtol=1e-6)
    np.testing.assert_allclose(L.smooth_l1_loss(d, 0.0, beta=0.0), d)


def test_l1_l2_and_table_reduction():
    p, t = np.array([[1.0, -2.0, 0.5, 0.0]]), np.array([[0.0, 0.0, 0.0, 3.0]])
    np.testing.assert_allclose(L.l1_loss(p, t), [[1.0, 2.0, 0.5, 3.0]])
    np.testing.assert_allclose(L.l2_loss(p, t), [[1.0, 4.0, 0.25, 9.0]])
    # Table entries on encoded offsets reduce over the 4 coordinates: [N, 4] -> [N].
    np.testing.assert_allclose(L.LOCALIZATION_LOSSES["l1"].fn(p, t), [6.5])
    np.testing.assert_allclose(L.LOCALIZATION_LOSSES["l2"].fn(p, t), [14.25])


def test_box_losses_values():
    a = np.array([[0.0, 0.0, 2.0, 2.0]])
    b = np.array([[1.0, 1.0, 3.0, 3.0]])
    np.testing.assert_allclose(L.giou_loss(a, b), 1 - (1 / 7 - 2 / 9), rtol=1e-5)
    np.testing.assert_allclose(L.diou_loss(a, b), 1 - 1 / 7 + 2 / 18, rtol=1e-5)
    np.testing.assert_allclose(L.ciou_loss(a, b), 1 - 1 / 7 + 2 / 18, rtol=1e-5)
    np.testing.assert_allclose(L.iou_loss(a, a), 0.0, atol=1e-6)


DEGENERATE = [
    (np.array([[1.0, 1.0, 1.0, 1.0]]), np.array([[1.0, 1.0, 1.0, 1.0]])),  # zero-area, identical
    (np.array([[0.0, 0.0, 1.0, 1.0]]), np.array([[5.0, 5.0, 6.0, 6.0]])),  # disjoint
    (np.array([[0.0, 0.0, 2.0, 2.0]]), np.array([[0.0, 0.0, 2.0, 2.0]])),  # identical
    (np.zeros((1, 4)), np.zeros((1, 4))),  # padding
]


@pytest.mark.parametrize("name", sorted(n for n, v in L.LOCALIZATION_LOSSES.items() if v.space != "distribution"))
def test_localization_losses_finite_gradients(name):
    loss = L.LOCALIZATION_LOSSES[name]
    for p, t in DEGENERATE:
        val, g = jax.value_and_grad(lambda x: jnp.sum(loss.fn(x, t)))(jnp.asarray(p))
        assert np.isfinite(val) and np.all(np.isfinite(np.asarray(g))), (name, p, t)


@pytest.mark.parametrize("name", sorted(L.CLASSIFICATION_LOSSES))
def test_classification_losses_finite_on_saturated_logits(name):
    loss = L.CLASSIFICATION_LOSSES[name]
    k = 3 + (1 if loss.activation == "softmax" else 0)
    logits = jnp.array([[100.0, -100.0, 1e4, 0.0], [-1e4, 1e4, 0.0, 50.0]])[:, :k]
    labels = jnp.array([0, 3])  # 3 == num_classes: background
    val, g = jax.value_and_grad(lambda x: jnp.sum(loss.fn(x, labels, jnp.ones(2))))(logits)
    assert np.isfinite(val) and np.all(np.isfinite(np.asarray(g)))


def test_unknown_loss_lists_valid_names():
    with pytest.raises(ValueError, match="valid names: .*giou"):
        L.get_loss("localization", "gouy")
    with pytest.raises(ValueError, match="valid families"):
        L.get_loss("shape", "x")


def test_varifocal_and_quality_focal_reference():
    x = np.array([-2.0, 0.5, 1.5, -0.3])
    q = np.array([0.0, 0.8, 0.3, 0.0])
    p = 1 / (1 + np.exp(-x))
    bce = -(q * np.log(p) + (1 - q) * np.log(1 - p))
    # mmdetection's varifocal: positives weighted by q, negatives by alpha * p^gamma.
    vfl = bce * np.where(q > 0, q, 0.75 * np.abs(p - q) ** 2)
    np.testing.assert_allclose(L.varifocal_loss(x, q), vfl, rtol=1e-5)
    np.testing.assert_allclose(L.quality_focal_loss(x, q), bce * np.abs(q - p) ** 2, rtol=1e-5)


@pytest.mark.parametrize(
    "fn",
    [L.sigmoid_binary_cross_entropy, L.sigmoid_focal_loss, L.varifocal_loss, L.quality_focal_loss],
    ids=lambda f: f.__name__,
)
def test_elementwise_losses_finite_at_extremes(fn):
    logits = jnp.array([-1e6, -100.0, -30.0, 0.0, 30.0, 100.0, 1e6] * 2)
    targets = jnp.array([0.0] * 7 + [1.0] * 7)  # probabilities exactly 0 and 1
    val, g = jax.value_and_grad(lambda x: jnp.sum(fn(x, targets)))(logits)
    assert np.isfinite(val) and np.all(np.isfinite(np.asarray(g)))


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0])
def test_focal_family_gradients_finite_for_every_gamma(gamma):
    # gamma = 0 once made x ** gamma's gradient 0 * inf = NaN where a sigmoid saturates
    # (p_t exactly 1): finite losses, NaN gradients, training stopped (focal gamma ablation).
    logits = jnp.array([-1e4, -100.0, -20.0, 0.0, 20.0, 100.0, 1e4] * 2)
    targets = jnp.array([0.0] * 7 + [1.0] * 7)
    for fn in (lambda x: L.sigmoid_focal_loss(x, targets, 0.25, gamma),
               lambda x: L.varifocal_loss(x, targets * 0.7, 0.75, gamma),
               lambda x: L.quality_focal_loss(x, targets * 0.7, gamma)):  # fmt: skip
        g = jax.grad(lambda x: jnp.sum(fn(x)))(logits)
        assert np.all(np.isfinite(np.asarray(g))), (gamma, g)
    # gamma = 0 is the alpha-weighted BCE, exactly, and its gradient too.
    if gamma == 0.0:
        x = jnp.linspace(-5, 5, 14)
        bce = lambda x: jnp.sum(L.sigmoid_binary_cross_entropy(x, targets) * jnp.where(targets > 0, 0.25, 0.75))  # noqa: E731
        np.testing.assert_allclose(jax.grad(lambda x: jnp.sum(L.sigmoid_focal_loss(x, targets, 0.25, 0.0)))(x),
                                   jax.grad(bce)(x), rtol=1e-6)  # fmt: skip


def test_confidence_losses_finite_at_extremes():
    logits = jnp.array([-1e4, -100.0, 0.0, 100.0, 1e4])
    for name, loss in L.CONFIDENCE_LOSSES.items():
        for t in (jnp.zeros(5), jnp.ones(5), jnp.full(5, 0.5)):
            val, g = jax.value_and_grad(lambda x: jnp.sum(loss.fn(x, t)))(logits)
            assert np.isfinite(val) and np.all(np.isfinite(np.asarray(g))), name


def _np_dfl(logits, t):
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    t = np.clip(t, 0, logits.shape[-1] - 1.01)
    left = np.floor(t).astype(int)
    rows = np.arange(len(t))
    return -((left + 1 - t) * logp[rows, left] + (t - left) * logp[rows, left + 1])


def test_distribution_focal_matches_hand_computed_reference():
    logits = np.random.default_rng(0).normal(0, 2, (6, 8))
    t = np.array([2.3, 0.0, 5.75, 6.99, 7.5, -1.0])  # interior, bin edges, over and under the range
    np.testing.assert_allclose(L.distribution_focal_loss(logits, t), _np_dfl(logits, t), rtol=1e-5)
    # By hand, 2.3 between bins 2 and 3: -(0.7 log p2 + 0.3 log p3).
    logp = logits[0] - np.log(np.exp(logits[0]).sum())
    by_hand = -(0.7 * logp[2] + 0.3 * logp[3])
    np.testing.assert_allclose(L.distribution_focal_loss(logits[:1], t[:1]), [by_hand], rtol=1e-5)
    # The table's entry: [N, 4, R] logits, [N, 4] distances -> the mean over the sides [N].
    four = L.LOCALIZATION_LOSSES["distribution_focal"].fn(logits[:4].reshape(1, 4, 8), t[:4].reshape(1, 4))
    np.testing.assert_allclose(four, [_np_dfl(logits[:4], t[:4]).mean()], rtol=1e-5)


def test_distribution_focal_is_minimal_at_the_two_bin_target_and_finite_at_edges():
    """Its gradient vanishes where the distribution is (1 - w, w) on the two bins around t
    (expectation t), and is finite at integer targets and at the range's ends."""
    t = jnp.array([2.25, 3.0, 0.0, 6.99])
    target = np.zeros((4, 8))
    for i, v in enumerate(np.clip(np.asarray(t), 0, 6.99)):
        left = int(np.floor(v))
        target[i, left], target[i, left + 1] = left + 1 - v, v - left
    at_minimum = jnp.log(jnp.asarray(target) + 1e-12)
    g = jax.grad(lambda x: jnp.sum(L.distribution_focal_loss(x, t)))(at_minimum)
    np.testing.assert_allclose(np.asarray(g), 0.0, atol=1e-6)
    for logits in (jnp.zeros((4, 8)), jnp.full((4, 8), 1e4).at[:, 0].set(-1e4)):
        val, g = jax.value_and_grad(lambda x: jnp.sum(L.distribution_focal_loss(x, t)))(logits)
        assert np.isfinite(float(val)) and np.all(np.isfinite(np.asarray(g)))
    gt = jax.grad(lambda tt: jnp.sum(L.distribution_focal_loss(jnp.zeros((4, 8)), tt)))(t)
    assert np.all(np.isfinite(np.asarray(gt)))


def test_weighted_sum_of_localization_losses():
    loss = L.get_loss("localization", "ciou+0.25*distribution_focal")
    assert [(p.space, w) for p, w in loss.components] == [("boxes", 1.0), ("distribution", 0.25)]
    assert loss.spaces == {"boxes", "distribution"}
    assert L.get_loss("localization", "giou").components[0] == (L.LOCALIZATION_LOSSES["giou"], 1.0)
    assert L.get_loss("localization", "0.25*l1").components == ((L.LOCALIZATION_LOSSES["l1"], 0.25),)
    bound = L.build_loss("localization", "smooth_l1+2*l1", {"smooth_l1_beta": 0.0})
    p, t = np.array([[1.0, -2.0, 0.5, 0.0]]), np.zeros((1, 4))
    np.testing.assert_allclose([float(b.fn(p, t)[0]) * w for b, w in bound.components], [3.5, 7.0], rtol=1e-6)
    for bad, message in [
        ("ciou+x*l1", "is not 'name' or 'weight\\*name'"),
        ("ciou+-1*l1", "weight >= 0"),
        ("ciou+ciou", "names a loss twice"),
        ("ciou+gouy", "unknown localization loss 'gouy'"),
        ("ciou+", "is not 'name'"),
    ]:
        with pytest.raises(ValueError, match=message):
            L.get_loss("localization", bad)


def test_centerness_target_by_hand():
    centers = np.array([[5.0, 5.0], [2.0, 5.0], [12.0, 5.0]])
    boxes = np.array([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0]])
    # Centre: 1; (2, 5): sqrt(2/8 * 5/5) = 0.5; outside the box: 0.
    np.testing.assert_allclose(L.centerness_target(centers, boxes), [1.0, 0.5, 0.0], atol=1e-6)
