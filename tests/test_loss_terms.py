"""Open loss terms: a detector declares its named terms, each in a family; a family flag
swaps every term of that family, `loss.terms.<term>` and `loss.<term>_weight` one term,
and what reports terms (progress, metrics.jsonl, diagnostics, sweeps, curves) shows
whichever terms the detector has (Faster R-CNN: four)."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from coco_folder import run

from experiments.configs import default, faster_rcnn
from jaxdet import configs, detectors, sweep
from jaxdet.detectors import inference
from jaxdet.detectors.config import model_config

FASTER_RCNN_TERMS = ["rpn_objectness", "rpn_box", "roi_classification", "roi_box"]


def _terms(**loss):
    """Faster R-CNN (tiny, 64 px)'s terms and total on one fixed batch and fixed parameters,
    with config.loss fields `loss` (`terms__roi_box` for loss.terms.roi_box)."""
    config = faster_rcnn.get_config("tiny")
    config.data.image_size = 64
    for key, value in loss.items():
        node, *path = [config.loss, *key.split("__")]
        for part in path[:-1]:
            node = node[part]
        node[path[-1]] = value
    det = detectors.build_detector(configs.resolve(config), 5, None)
    key = jax.random.key(0)
    variables = det.module.init({"params": key, "sampling": key}, jnp.zeros((1, 64, 64, 3)), train=False)
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 30, (2, 3, 2))
    batch = {
        "image": jnp.asarray(rng.integers(0, 255, (2, 64, 64, 3)), jnp.float32),
        "boxes": jnp.asarray(np.concatenate([xy, xy + rng.uniform(10, 30, (2, 3, 2))], -1), jnp.float32),
        "labels": jnp.asarray(rng.integers(0, 5, (2, 3)), jnp.int32),
        "box_mask": jnp.asarray([[True, True, False], [True, False, False]]),
    }
    sample = jax.random.key(1)
    outputs, _ = inference.forward(det, variables, batch, sample, train=True)
    total, terms = det.loss_fn(outputs, batch, sample)
    return float(total), {k: float(v) for k, v in terms.items()}, det


@pytest.mark.slow  # (~50 s; the default suite stays under 15 minutes on 2 cores)
def test_faster_rcnn_has_four_terms_and_a_term_flag_changes_only_its_term():
    total, base, det = _terms()
    assert list(base) == FASTER_RCNN_TERMS and list(det.term_weights) == FASTER_RCNN_TERMS
    assert total == pytest.approx(sum(base.values()), rel=1e-6)  # every weight 1 in the recipe
    # loss.terms.roi_box: only the RoI box term changes (same parameters, same sampled RoIs).
    _, giou, _ = _terms(terms__roi_box="giou")
    assert giou["roi_box"] != pytest.approx(base["roi_box"], rel=1e-3)
    for term in ("rpn_objectness", "rpn_box", "roi_classification"):
        assert giou[term] == base[term], term
    # The family flag swaps both localization terms, RPN and RoI head alike.
    _, family, _ = _terms(localization="giou")
    assert family["roi_box"] == pytest.approx(giou["roi_box"], rel=1e-6)
    assert family["rpn_box"] != pytest.approx(base["rpn_box"], rel=1e-3)
    assert family["rpn_objectness"] == base["rpn_objectness"]
    # loss.<term>_weight weighs one term; unset, a term takes its family's weight.
    weighted, same, det = _terms(roi_box_weight=3.0, localization_weight=2.0)
    assert det.term_weights == {"rpn_objectness": 1.0, "rpn_box": 2.0, "roi_classification": 1.0, "roi_box": 3.0}
    expect = same["rpn_objectness"] + 2 * same["rpn_box"] + same["roi_classification"] + 3 * same["roi_box"]
    assert same == base and weighted == pytest.approx(expect, rel=1e-6)


@pytest.mark.parametrize(
    "recipe, field, value, message",
    [
        (faster_rcnn, "terms.classification", "varifocal",
         r"config.loss.terms.classification='varifocal': faster_rcnn has no loss term 'classification'; its terms: "
         r"rpn_objectness \(confidence\), rpn_box \(localization\), roi_classification \(classification\)"),
        (faster_rcnn, "terms.roi_box", "sigmoid_focal",
         r"unknown localization loss 'sigmoid_focal' \(config.loss.terms.roi_box: roi_box is a localization "
         r"term\); valid names: \['ciou'"),
        (default, "terms.roi_box", "giou", r"retinanet has no loss term 'roi_box'"),
        (faster_rcnn, "rpn_box_weight", -1.0, r"the weight of loss term rpn_box is -1.0"),
    ],
)  # fmt: skip
def test_a_bad_term_override_names_the_term_and_what_exists(recipe, field, value, message):
    config = recipe.get_config("tiny")
    *path, leaf = field.split(".")
    node = config.loss
    for part in path:
        node = node[part]
    node[leaf] = value
    with pytest.raises(ValueError, match=message):
        configs.resolve(config)


def test_another_detectors_term_weight_is_refused_unless_unset():
    config = faster_rcnn.get_config()
    assert config.loss.roi_box_weight is None and config.loss.terms.roi_box == ""
    config.model = model_config("retinanet")  # config.loss keeps Faster R-CNN's term fields
    resolved = configs.resolve(config)  # unset term fields of another detector are dropped
    assert sorted(resolved.loss.terms) == ["classification", "confidence", "localization"]
    assert "roi_box_weight" not in resolved.loss
    config.loss.roi_box_weight = 2.0
    with pytest.raises(ValueError, match=r"config.loss.roi_box_weight=2.0: retinanet has no loss term 'roi_box'"):
        configs.resolve(config)


def test_sweep_table_shows_each_arms_terms(tmp_path):
    rows = [{"step": 2, "loss": 1.0, **{t: 0.25 for t in FASTER_RCNN_TERMS}}]
    records = [{"arm": "a", "overrides": {}, "seed": 0, "final": {"AP": 0.5}, "train": rows, "diagnostics": [],
                "seconds": 1.0, "terms": FASTER_RCNN_TERMS}]  # fmt: skip
    md, _ = sweep.write_results(records, str(tmp_path))
    header = open(md).read().splitlines()[2]
    assert " | ".join(f"final {t}" for t in FASTER_RCNN_TERMS) in header
    assert "| a | 0.500 |" in open(md).read() and "0.250 | 0.250 | 0.250 | 0.250" in open(md).read()


@pytest.mark.slow  # (the default suite stays under 15 minutes on 2 cores; CI skips slow)
def test_faster_rcnn_trains_with_a_term_flag_and_reports_its_four_terms(tfds_dir, tmp_path, compilation_cache):
    """`--config.loss.terms.roi_box=giou` through the command line: metrics.jsonl, the
    progress line, the validation losses and the per-term gradient diagnostics all carry
    the four terms; the recorded config says which loss roi_box used."""
    import sys

    workdir = str(tmp_path / "run")
    cmd = [sys.executable, "-m", "experiments.train", "--config=experiments/configs/faster_rcnn.py:tiny",
           f"--workdir={workdir}", f"--config.data.data_dir={tfds_dir}", "--config.loss.terms.roi_box=giou",
           "--config.train.steps=4", "--config.train.eval_every=4", "--config.train.checkpoint_every=4",
           "--config.train.term_grad_norms_every=2", "--config.train.num_prediction_images=0",
           f"--config.train.compilation_cache_dir={compilation_cache}"]  # fmt: skip
    proc = run(cmd, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "rpn_objectness " in proc.stdout and "roi_box " in proc.stdout and "cls " not in proc.stdout
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    train_rows = [r for r in rows if r["split"] == "train"]
    assert train_rows and all(set(FASTER_RCNN_TERMS) <= set(r) for r in train_rows)
    assert not {"classification", "localization", "confidence"} & set(train_rows[-1])
    assert all(train_rows[-1][t] > 0 for t in FASTER_RCNN_TERMS)
    final = [r for r in rows if r["split"] == "eval"][-1]
    assert {f"loss_{t}" for t in FASTER_RCNN_TERMS} <= set(final) and "AP" in final
    diagnostics = [r for r in rows if r["split"] == "diagnostics"]
    assert diagnostics and "grad_cos/rpn_objectness__roi_box" in diagnostics[0]
    assert {f"grad_norm/{t}" for t in FASTER_RCNN_TERMS} <= set(diagnostics[0])
    recorded = json.load(open(os.path.join(workdir, "config.json")))
    assert recorded["loss"]["terms"] == {
        "rpn_objectness": "",
        "rpn_box": "",
        "roi_classification": "",
        "roi_box": "giou",
    }
