"""The gradient anatomy (jaxdet/anatomy) against plain `jax.grad` and the assigners' own
targets, and on every detector."""

import importlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments.configs import default
from jaxdet import detectors
from jaxdet.anatomy import groups as G
from jaxdet.anatomy import layout as L
from jaxdet.anatomy.step import anatomy_fn, make_plan
from jaxdet.data.synthetic import synthetic_batch
from jaxdet.detectors import inference
from jaxdet.training.step import init_key


def _setup(recipe, images=3, seed=4):
    config = recipe.get_config("tiny")
    size = config.data.image_size
    det = detectors.build_detector(config, 3)
    variables = jax.jit(lambda x: det.module.init({"params": init_key(0), "sampling": init_key(1)}, x))(
        np.zeros((1, size, size, 3), np.float32)
    )
    batch = {k: jnp.asarray(v) for k, v in synthetic_batch(images, size, config.data.max_boxes, 3, seed).items()}
    plan = make_plan(det, variables["params"], config.model.backbone)
    return config, det, variables, batch, plan


@pytest.fixture(scope="module")
def retinanet():
    config, det, variables, batch, plan = _setup(default)
    numbers = jax.device_get(jax.jit(anatomy_fn(det, plan))(variables, batch, jax.random.key(0)))
    return config, det, variables, batch, plan, numbers


def test_group_shares_add_up_to_each_terms_gradient_norm(retinanet):
    _, _, _, _, plan, n = retinanet
    assert plan.terms == ("classification", "localization", "confidence")
    np.testing.assert_allclose(n["group"].sum(1) + n["other"], n["energy"], rtol=1e-5, atol=1e-12)
    # RetinaNet's head outputs are all per anchor: nothing is "other".
    np.testing.assert_allclose(n["other"], 0.0, atol=1e-6 * n["energy"].max())
    cls, loc = plan.terms.index("classification"), plan.terms.index("localization")
    assert n["energy"][cls] > 0 and n["energy"][loc] > 0
    # The box loss covers the positives alone; the classification loss never the ignored.
    positive, ignored = plan.groups.index("positive"), plan.groups.index("ignored")
    np.testing.assert_allclose(n["group"][loc, positive], n["energy"][loc], rtol=1e-5)
    assert n["group"][cls, ignored] == 0.0 and n["group"][cls, 2:].sum() > 0
    # The per-location sums are the groups' (one image batch's locations, summed).
    np.testing.assert_allclose(n["location"]["classification"].sum(), n["energy"][cls], rtol=1e-5)
    # Magnitudes (not squared) per group: the per-location norms of the map, summed.
    np.testing.assert_allclose(n["magnitude"][cls].sum(), n["maps"]["classification"].sum(), rtol=1e-5)


def test_the_spatial_map_is_the_gradient_of_the_term_with_respect_to_the_head_outputs(retinanet):
    _, det, variables, batch, plan, n = retinanet
    rng = jax.random.key(0)
    outputs, _ = jax.jit(lambda v: inference.forward(det, v, batch, rng, train=True))(variables)
    weights = dict(zip(plan.terms, plan.weights))
    term_of = jax.jit(lambda o, term_index: jnp.stack([weights[t] * det.loss_fn(o, batch, rng)[1][t]
                                                       for t in plan.terms[:2]])[term_index])  # fmt: skip
    for i, term in enumerate(plan.terms[:2]):
        fn = lambda o: term_of(o, i)  # noqa: E731, B023
        grads = jax.jit(jax.grad(fn))(outputs)
        want = np.sqrt(sum(np.sum(np.asarray(g).reshape(*g.shape[:2], -1) ** 2, -1) for g in grads.values()))
        np.testing.assert_allclose(n["maps"][term], want, rtol=1e-4, atol=1e-9)
        # And a finite difference on the location that pulls hardest, along its gradient.
        b, a = np.unravel_index(np.argmax(want), want.shape)
        direction = {k: jnp.zeros_like(v).at[b, a].set(grads[k][b, a]) for k, v in outputs.items()}
        eps = 1e-2 / max(float(want[b, a]), 1e-12)
        shifted = lambda s: fn({k: v + s * direction[k] for k, v in outputs.items()})  # noqa: E731, B023
        slope = (float(shifted(eps)) - float(shifted(-eps))) / (2 * eps)
        assert slope == pytest.approx(float(want[b, a]) ** 2, rel=2e-2)


def test_roles_are_the_assigners_own_targets(retinanet):
    _, det, variables, batch, plan, n = retinanet
    outputs, _ = inference.forward(det, variables, batch, jax.random.key(0), train=True)
    t = jax.device_get(det.assign(batch, outputs))
    roles = n["roles"]["classification"]
    np.testing.assert_array_equal(roles == 0, t.positive)
    np.testing.assert_array_equal(roles >= 2, t.negative)
    np.testing.assert_array_equal(roles == 1, ~t.positive & ~t.negative)
    assert t.positive.any() and t.negative.any()
    # Negatives' bins follow the predicted score, easy to hard.
    score = np.asarray(jax.nn.sigmoid(outputs["cls_logits"]).max(-1))
    bins = 2 + np.searchsorted(np.asarray(plan.score_edges), score, side="right")
    np.testing.assert_array_equal(roles[t.negative], bins[t.negative])


def test_the_layout_recovers_levels_and_anchors_per_cell(retinanet):
    config, det, *_, n = retinanet
    lay = L.infer(np.asarray(n["centers"]["classification"]), config.data.image_size, config.model.min_level,
                  config.model.max_level)  # fmt: skip
    sizes = [h * w for h, w in ((lv.h, lv.w) for lv in lay)]
    assert [lv.level for lv in lay] == list(range(config.model.min_level, config.model.max_level + 1))
    assert sum(s * lv.k for s, lv in zip(sizes, lay)) == len(det.anchors)
    assert len({lv.k for lv in lay}) == 1 and lay[0].k == len(det.anchors) // sum(sizes)
    # Not a grid (e.g. RoIs, queries): no layout.
    assert L.infer(np.random.default_rng(0).uniform(0, 64, (50, 2)), 64, 3, 5) is None


def test_group_names_and_ids_on_a_crafted_record():
    from jaxdet.losses.assigned import Record, Targets

    pos = jnp.array([[True, False, False, False, False]])
    neg = jnp.array([[False, True, True, True, False]])
    t = Targets(jnp.zeros((1, 5), int), jnp.zeros((1, 5, 4)), pos, neg, jnp.ones((1, 5), bool))
    record = Record(("classification",), t, jnp.zeros((1, 5)), jnp.array([[0.9, 0.01, 0.3, 0.7, 0.5]]), None)
    names = G.group_names((0.05, 0.5))
    assert names == ["positive", "ignored", "negative <0.05", "negative 0.05-0.5", "negative >=0.5"]
    ids = np.asarray(G.group_ids(record, (0.05, 0.5)))
    assert ids.tolist() == [[0, 2, 3, 4, 1]]
    energy = jnp.array([[4.0, 1.0, 2.0, 3.0, 0.5]])
    np.testing.assert_allclose(G.group_energy(energy, ids, 5), [4.0, 0.5, 1.0, 2.0, 3.0])


# ~8-20 s each: the default suite keeps a point grid (CenterNet) and the two-stage detector;
# RetinaNet's anchors are the tests above; the others run with -m slow.
_SLOW = pytest.mark.slow


@pytest.mark.parametrize(
    "recipe",
    [
        *(pytest.param(r, marks=_SLOW) for r in ("yolov8", "fcos", "yolo", "ssd", "detr")),
        "centernet",
        "faster_rcnn",
    ],
)
def test_every_detector_has_an_anatomy(recipe):
    config, det, variables, batch, plan = _setup(importlib.import_module(f"experiments.configs.{recipe}"), 2)
    n = jax.device_get(jax.jit(anatomy_fn(det, plan))(variables, batch, jax.random.key(0)))
    np.testing.assert_allclose(n["group"].sum(1) + n["other"], n["energy"], rtol=1e-4, atol=1e-12)
    assert np.all(np.isfinite(n["products"])) and np.all(np.isfinite(n["energy"]))
    located = [t for t in plan.terms if t in n["maps"]]
    assert located, "no term's gradient is split by location"
    # Each module's squared norms over the terms; the whole network's gradient is not zero.
    assert np.einsum("mtt->", n["products"]) > 0
    modules = set(plan.modules)
    assert any(m.startswith("backbone/") for m in modules) and "neck" in modules
    if recipe == "faster_rcnn":
        assert {"rpn_objectness", "rpn_box", "roi_classification", "roi_box"} <= set(located)
        assert any(m.startswith("rpn/") for m in modules) and any(m.startswith("roi/") for m in modules)
        lay = L.infer(np.asarray(n["centers"]["rpn_objectness"]), config.data.image_size, config.model.min_level,
                      config.model.max_level)  # fmt: skip
        assert lay is not None  # the RPN's anchors are a grid; the RoIs are not
        assert L.infer(np.asarray(n["centers"].get("roi_box", np.zeros((0, 2)))), config.data.image_size, 2, 5) is None
    elif recipe != "detr":
        term = located[0]
        lay = L.infer(np.asarray(n["centers"][term]), config.data.image_size, config.model.min_level,
                      config.model.max_level)  # fmt: skip
        assert lay is not None and lay[-1].stop == n["maps"][term].shape[1]


def test_another_loss_on_the_same_weights_changes_config_loss_only():
    from jaxdet.anatomy.tool import with_loss
    from jaxdet.errors import ConfigError

    config = default.get_config("tiny")
    changed = with_loss(config, {"loss.focal_gamma": "0", "loss.localization": "smooth_l1"})
    assert changed.loss.focal_gamma == 0.0 and isinstance(changed.loss.focal_gamma, float)
    assert changed.loss.localization == "smooth_l1" and config.loss.focal_gamma == 2.0  # the run's config kept
    with pytest.raises(ConfigError, match="only config.loss fields"):
        with_loss(config, {"model.min_level": "2"})
    with pytest.raises(ConfigError, match="no field 'gamma'"):
        with_loss(config, {"loss.gamma": "1"})
    with pytest.raises(ConfigError, match="expected a number"):
        with_loss(config, {"loss.focal_gamma": "two"})


def test_bad_requests_are_named_before_anything_runs(tmp_path):
    from jaxdet.anatomy import tool
    from jaxdet.errors import ConfigError

    for kwargs, message in (
        (dict(checkpoints=[]), "--checkpoints is empty"),
        (dict(images=0), r"--images=0 \(>= 1\)"),
        (dict(split="test"), "valid are 'train'"),
        (dict(score_edges=(0.5, 0.2)), "increasing values in"),
    ):
        with pytest.raises(ConfigError, match=message):
            tool.anatomy(str(tmp_path), **kwargs)
    with pytest.raises(ConfigError, match="config.json does not exist"):
        tool.anatomy(str(tmp_path))
