"""Multi-scale training (config.data.train_sizes): each step's canvas drawn as a pure function
of (seed, step), one detector and one compiled step per size, one set of weights."""

import json

import jax
import numpy as np
import pytest

from experiments.configs import default
from jaxdet import configs
from jaxdet.data import pipeline
from jaxdet.data.examples import train_size
from jaxdet.errors import ConfigError
from jaxdet.experiment import train_and_evaluate
from tests.test_input_pipeline import _source


def test_each_step_draws_one_size_for_its_whole_batch_as_a_function_of_seed_and_step(tmp_path):
    sizes = (32, 64, 96)
    drawn = [train_size(7, step, sizes) for step in range(60)]
    assert drawn == [train_size(7, step, sizes) for step in range(60)]  # pure
    assert set(drawn) == set(sizes) and drawn != [train_size(8, step, sizes) for step in range(60)]
    source = _source(tmp_path, n=12)
    # Two processes of 2 images each: both build their slice of every step at that step's size.
    for process in (0, 1):
        stream = pipeline.Pipeline(source, 64, 6, workers=0).train(2, 7, 3, True, (0.7, 1.3), 0.5, process, 2,
                                                                   mixup_prob=0.5, sizes=sizes)  # fmt: skip
        for step in range(3, 9):
            batch = next(stream)
            size = train_size(7, step, sizes)
            assert batch["image"].shape == (2, size, size, 3)
            boxes = batch["boxes"][batch["box_mask"]]
            assert boxes.size and boxes.min() >= 0 and boxes.max() <= size
        stream.close()


def test_train_sizes_must_be_multiples_of_the_largest_stride():
    config = configs.resolve(default.get_config("tiny"))
    config.data.train_sizes = (64, 100)
    with pytest.raises(ConfigError, match=r"train_sizes=\(64, 100\): each size must be a multiple of the largest "
                       r"stride, 32 px \(2\^model.max_level\), e.g. \(64, 96\)"):  # fmt: skip
        configs.validate(config, 1)


def test_a_multiscale_run_compiles_one_step_per_size_and_resumes_bitwise(tmp_path, capsys):
    """Tiny RetinaNet, canvases of 32 and 64 px (evaluation at 64): each size's step compiles
    once; a run stopped at step 3 and resumed logs the same losses as one that was not."""
    config = default.get_config("tiny")
    config.data.train_sizes = (32, 64)
    config.data.workers = 0
    config.train.num_prediction_images = 0  # (the test's time)
    config.train.log_every = 1
    drawn = {train_size(config.seed, s, (32, 64)) for s in range(config.train.steps)}
    assert drawn == {32, 64}  # both sizes train within the tiny run
    whole = train_and_evaluate(config, str(tmp_path / "whole"))
    out = capsys.readouterr().out
    for size in (32, 64):
        assert out.count(f"multi-scale training: compiling the step for {size} px") == 1, out
    assert whole["AP"] >= 0.0
    config.train.steps = 3
    train_and_evaluate(config, str(tmp_path / "split"))
    config.train.steps = 6
    resumed = train_and_evaluate(config, str(tmp_path / "split"))
    assert resumed["AP"] == whole["AP"]

    def losses(workdir):
        rows = [json.loads(line) for line in open(tmp_path / workdir / "metrics.jsonl")]
        return {r["step"]: r["loss"] for r in rows if r.get("split") == "train"}

    assert losses("whole") == losses("split") and len(losses("whole")) == 6
    jax.clear_caches()


def test_a_detector_whose_weights_would_depend_on_the_input_size_is_refused(monkeypatch):
    """Every detector today has size-free weights (convolutions; DETR's position embeddings
    are computed), so the check is held against a parameter shape that follows the size."""
    import jaxdet.detectors as detectors_module

    shapes = detectors_module._param_shapes
    monkeypatch.setattr(
        detectors_module, "_param_shapes", lambda det, size: {**shapes(det, size), "extra": np.zeros(size)}
    )
    config = configs.resolve(default.get_config("tiny"))
    with pytest.raises(ConfigError, match=r"config.data.train_sizes: retinanet's parameters at 32 px differ in shape"):
        detectors_module.build_at_sizes(config, (32, 64), "config.data.train_sizes", 3)
