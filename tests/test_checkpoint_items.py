"""Checkpoints hold two items, the model's variables and training's state, so that
evaluation and prediction restore the weights alone; steps written before the split (one
item, the whole TrainState) still restore, for prediction, evaluation and resuming."""

import os

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest
from coco_folder import untrained_workdir

from jaxdet import checkpoints
from jaxdet.training.step import TrainState, init_state


def _leaves(tree) -> list[np.ndarray]:
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def _state(workdir: str):
    """The TrainState `untrained_workdir` saved, and a differently initialised one of the same shapes."""
    from jaxdet import configs, detectors, parallel
    from jaxdet.training import optim

    config, classes = configs.load_recorded(workdir)
    detector = detectors.build_detector(config, len(classes.names), None)
    tx, _ = optim.make_optimizer(config.optim, config.train.steps)
    mesh = parallel.make_mesh(jax.devices()[:1])
    saved = init_state(detector, tx, jax.random.key(0), config.data.image_size, mesh)
    other = init_state(detector, tx, jax.random.key(1), config.data.image_size, mesh)
    return saved, other


def test_the_model_item_restores_without_the_optimizer(tmp_path):
    from jaxdet.evaluation import predict

    workdir = untrained_workdir(str(tmp_path / "run"))
    assert {"model", "train"} <= set(os.listdir(os.path.join(workdir, "checkpoints", "1")))
    saved, other = _state(workdir)
    predictor = predict.Predictor(workdir)
    for a, b in zip(_leaves(predictor.variables), _leaves(saved.variables), strict=True):
        np.testing.assert_array_equal(a, b)
    ckpts = checkpoints.Checkpoints(os.path.join(workdir, "checkpoints"), keep=3, save_every=1)
    whole = TrainState.from_items(ckpts.restore(1, other.items()))
    ckpts.close()
    for a, b in zip(_leaves(whole), _leaves(saved), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_checkpoint_of_the_unreleased_single_item_layout_is_refused_with_a_message(tmp_path):
    """Written as an unreleased jaxdet wrote every checkpoint before the split: the TrainState as
    one StandardSave item ("default"). Prediction and resuming name the layout, not a corrupt file."""
    from jaxdet.errors import ConfigError
    from jaxdet.evaluation import predict

    workdir = untrained_workdir(str(tmp_path / "run"))
    saved, other = _state(workdir)
    one_item = os.path.join(workdir, "checkpoints_one_item")
    manager = ocp.CheckpointManager(one_item, options=ocp.CheckpointManagerOptions(create=True),
                                    item_handlers=ocp.StandardCheckpointHandler())  # fmt: skip
    old_layout = {"step": saved.step, "params": saved.params, "batch_stats": saved.batch_stats,
                  "opt_state": saved.opt_state}  # (the TrainState's fields then; it has no `ema`)  # fmt: skip
    manager.save(4, args=ocp.args.StandardSave(old_layout))
    manager.wait_until_finished()
    manager.close()
    os.rename(os.path.join(workdir, "checkpoints"), os.path.join(workdir, "checkpoints_new"))
    os.rename(one_item, os.path.join(workdir, "checkpoints"))
    assert os.listdir(os.path.join(workdir, "checkpoints", "4")).count("default") == 1
    with pytest.raises(ConfigError, match=r"step 4 .* one-item layout of an unreleased jaxdet .* model, train"):
        predict.Predictor(workdir)
    ckpts = checkpoints.Checkpoints(os.path.join(workdir, "checkpoints"), keep=3, save_every=1)
    with pytest.raises(ConfigError, match=r"one-item layout .* new --workdir"):
        ckpts.restore_newest(other.items(), ckpts.all_steps(), move_aside=True)
    ckpts.close()
    assert os.path.isdir(os.path.join(workdir, "checkpoints", "4"))  # (refused, not moved aside as corrupt)
