"""Parameter groups (optim.param_groups): frozen parameters get no update and no optimizer
state and stay out of gradient clipping; learning-rate and weight-decay multipliers equal
a hand-written update; no groups keeps the former optimizer (and its state's tree); bad
groups and groups that match nothing are refused naming the entry."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from test_train import _tiny

from jaxdet.errors import ConfigError
from jaxdet.training import optim, param_groups


def _params():
    return {
        "ResNet_0": {"Conv_0": {"kernel": jnp.ones((3, 3, 3, 4))},
                     "Block_0": {"kernel": jnp.ones((4, 4)), "bias": jnp.ones(4)}},
        "Head_0": {"kernel": jnp.ones((4, 2)), "bias": jnp.ones(2)},
    }  # fmt: skip


def _grads(params, scale=1.0):
    return jax.tree_util.tree_map(lambda p: scale * jnp.arange(p.size, dtype=jnp.float32).reshape(p.shape) / p.size,
                                  params)  # fmt: skip


def _config(**optim_fields):
    config = _tiny(optim__schedule="constant", optim__warmup_steps=0, optim__learning_rate=0.1)
    for key, value in optim_fields.items():
        config.optim[key] = value
    return config.optim


def test_frozen_parameters_get_no_update_no_state_and_no_share_of_the_clip():
    params = _params()
    cfg = _config(name="sgd", momentum=0.9, weight_decay=0.0, grad_clip_norm=1.0,
                  param_groups=(("^ResNet_0/Conv_0/", 1.0, 1.0, True),))  # fmt: skip
    tx, _ = optim.make_optimizer(cfg, 10)
    state = tx.init(params)
    grads = _grads(params, scale=50.0)  # (beyond the clip norm)
    updates, state = tx.update(grads, state, params)
    np.testing.assert_array_equal(updates["ResNet_0"]["Conv_0"]["kernel"], 0.0)
    # No optimizer state for the frozen kernel: only the trained parameters' momentum (and scalar step counts).
    state_size = sum(x.size for x in jax.tree_util.tree_leaves(state) if x.ndim)
    trained = sum(x.size for x in jax.tree_util.tree_leaves(params)) - params["ResNet_0"]["Conv_0"]["kernel"].size
    assert state_size == trained
    # The clip norm is the trained parameters' gradient norm, as if the frozen one had none.
    rest = {k: v for k, v in grads.items() if k != "ResNet_0"} | {"Block_0": grads["ResNet_0"]["Block_0"]}
    norm = optax.global_norm(rest)
    want = -0.1 * grads["Head_0"]["kernel"] / norm  # sgd, first step: -lr * clipped gradient
    np.testing.assert_allclose(updates["Head_0"]["kernel"], want, rtol=1e-6)


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_multipliers_equal_the_update_with_scaled_lr_and_decay(name):
    params, grads = _params(), _grads(_params())
    cfg = _config(name=name, momentum=0.9, weight_decay=0.01, grad_clip_norm=0.0,
                  param_groups=(("^ResNet_0/", 0.1, 0.5, False),))  # fmt: skip
    tx, _ = optim.make_optimizer(cfg, 10)
    updates, _ = tx.update(grads, tx.init(params), params)
    # Reference: the plain optimizer for each part with its own learning rate and decay.
    for key, lr_mult, wd_mult in (("ResNet_0", 0.1, 0.5), ("Head_0", 1.0, 1.0)):
        plain = _config(name=name, momentum=0.9, weight_decay=0.01 * wd_mult, grad_clip_norm=0.0,
                        learning_rate=0.1 * lr_mult)  # fmt: skip
        ref_tx, _ = optim.make_optimizer(plain, 10)
        ref, _ = ref_tx.update(grads[key], ref_tx.init(params[key]), params[key])
        for a, b in zip(jax.tree_util.tree_leaves(updates[key]), jax.tree_util.tree_leaves(ref), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)


def test_no_groups_is_the_former_flat_chain():
    params = _params()
    cfg = _config(name="sgd", momentum=0.9, weight_decay=0.01, grad_clip_norm=1.0)
    tx, _ = optim.make_optimizer(cfg, 10)
    state = tx.init(params)
    # clip, decayed weights, sgd: three states side by side, as checkpoints written before hold them.
    assert isinstance(state, tuple) and len(state) == 3


def test_the_log_lines_count_each_groups_parameters_and_an_unmatched_group_is_refused():
    params = _params()
    groups = param_groups.parse(_config(param_groups=(("Conv_0", 1.0, 1.0, True), ("^ResNet_0/", 0.1, 1.0, False))))
    lines = param_groups.describe(params, groups)
    assert lines == [
        "param group 'Conv_0': frozen: 108 parameters",
        "param group '^ResNet_0/': lr x0.1, weight decay x1: 20 parameters",
        "param group the rest: lr x1, weight decay x1: 10 parameters",
    ]
    labels = jax.tree_util.tree_leaves(param_groups.labels(params, groups))
    assert sorted(labels) == ["0", "1", "1", "default", "default"]
    with pytest.raises(ConfigError, match=r"no parameter matches 'Backbone_0/'.*parameter paths look like"):
        param_groups.describe(params, param_groups.parse(_config(param_groups=(("Backbone_0/", 0.1),))))


@pytest.mark.parametrize(
    "entry", [("[unclosed", 0.1), (3, 0.1), ("ok", -1.0), ("ok", 1.0, 1.0, "yes"), ("ok", 1, 1, False, 9)]
)
def test_a_malformed_group_is_refused_naming_it(entry):
    with pytest.raises(ConfigError, match=r"param_groups\[0\]=.*each group is \(regex, lr_mult"):
        optim.check(_config(param_groups=(entry,)))


def test_a_run_logs_its_groups_and_trains_the_frozen_part_not_at_all(tfds_dir, tmp_path, capsys):
    from jaxdet import experiment
    from jaxdet.training.run import Run

    config = _tiny(optim__param_groups=(("^ResNet_0/Conv_0/", 1.0, 1.0, True),))
    config.data.data_dir = tfds_dir
    config.train.steps = 2
    config.train.eval_every = 2
    config.train.num_prediction_images = 0
    run = Run(config, str(tmp_path / "probe"), jax.devices()[:1])
    before = jax.device_get(run.initial_state().params)
    experiment.train_and_evaluate(config, str(tmp_path / "run"), jax.devices()[:1])
    out = capsys.readouterr().out
    assert "param group '^ResNet_0/Conv_0/': frozen: " in out and "param group the rest: lr x1" in out
    from orbax import checkpoint as ocp

    after = ocp.StandardCheckpointer().restore(str(tmp_path / "run" / "checkpoints" / "2" / "model"))["params"]
    np.testing.assert_array_equal(after["ResNet_0"]["Conv_0"]["kernel"], before["ResNet_0"]["Conv_0"]["kernel"])
    assert not np.array_equal(after["ResNet_0"]["BatchNorm_0"]["scale"], before["ResNet_0"]["BatchNorm_0"]["scale"])


def test_frozen_stages_freeze_the_stem_and_the_first_stages_blocks_of_a_resnet():
    """mmdetection's frozen_stages (torchvision's trainable_backbone_layers = 4 - k) on
    ResNet-50's parameter tree: 3 + 4 blocks in stages 1-2."""
    from experiments.configs import default
    from jaxdet import detectors, parallel
    from jaxdet.detectors import inference

    config = default.get_config()
    config.model.backbone = "resnet50"
    config.model.frozen_stages = 2
    det = detectors.build_detector(config, 5)
    params = inference.abstract_variables(det, 64, parallel.make_mesh(jax.devices()[:1]))["params"]
    groups = param_groups.of_config(config.optim, config.model)
    frozen = {
        path for path, is_frozen in zip(param_groups._paths(params), jax.tree_util.tree_leaves(
            param_groups.frozen_mask(params, groups))) if is_frozen
    }  # fmt: skip
    blocks = {p.split("/")[1] for p in frozen if "Bottleneck" in p}
    assert blocks == {f"Bottleneck_{i}" for i in range(7)}
    assert any(p.startswith("ResNet_0/Conv_0/") for p in frozen)
    assert not any(p.startswith(("ResNet_0/Bottleneck_7/", "FPN", "RetinaNetHead")) for p in frozen)
    lines = param_groups.describe(params, groups)
    assert lines[0].startswith("param group model.frozen_stages=2: the stem: frozen: ")
    assert lines[1].startswith("param group model.frozen_stages=2: stages 1-2: frozen: ")


def test_frozen_stages_outside_a_resnet_or_its_range_are_refused():
    from experiments.configs import default

    model = default.get_config().model
    model.backbone, model.frozen_stages = "resnet50", 5
    with pytest.raises(ConfigError, match=r"frozen_stages=5 must be -1 \(none\), 0 \(the stem\) or 1..4"):
        param_groups.frozen_stages(model)
    model.backbone, model.frozen_stages = "cspdarknet_n", 1
    with pytest.raises(ConfigError, match=r"frozen_stages=1 needs a ResNet backbone; 'cspdarknet_n'"):
        param_groups.frozen_stages(model)
