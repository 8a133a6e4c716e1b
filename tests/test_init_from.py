"""Fine-tuning (config.model.init_from): every detector restores exactly the tensors whose
name and shape match and keeps its own initialisation for the class-dependent ones; a
jaxdet run seeds a run on other data with other classes, through the training CLI."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from coco_folder import write_coco

from experiments.configs import default, recipe
from jaxdet import configs, detectors, experiment, parallel
from jaxdet.checkpoints import Checkpoints
from jaxdet.data.classes import Classes
from jaxdet.detectors import inference
from jaxdet.errors import ConfigError
from jaxdet.training import init_from

# The class-dependent tensors each detector must have among those found (by module name).
CLASS_MODULES = {
    "retinanet": {"cls_logits"},
    "fcos": {"cls_logits"},
    "ssd": {"cls_p3", "cls_p6"},
    "yolo": {"cls"},
    "yolov8": {"cls3_out", "cls5_out"},
    "centernet": {"heatmap"},
    "faster_rcnn": {"cls", "box"},  # the box predictor is per class too
    "detr": {"cls0", "enc_cls", "denoising_embed"},  # every decoder layer's, the encoder's, the label embedding
}


def _config(name):
    config = recipe(name, "tiny")
    config.data.image_size = 32
    if name == "detr":
        config.model.detr.denoising = 2  # (its label embedding is class-dependent too)
    return configs.resolve(config)


def _random(tree, seed):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_unflatten(treedef, [rng.normal(size=s.shape).astype(np.float32) for s in leaves])


@pytest.mark.parametrize("name", sorted(detectors.DETECTORS))
def test_every_detector_loads_the_matching_tensors_and_keeps_its_class_tensors(name, tmp_path):
    config, mesh = _config(name), parallel.make_mesh(jax.local_devices()[:1])
    shapes = lambda n: inference.abstract_variables(detectors.build_detector(config, n, None), 32, mesh)  # noqa: E731
    source, target = _random(shapes(3), 1), _random(shapes(2), 2)
    path = str(tmp_path / "source.safetensors")
    init_from.save_safetensors(source, path, ["a", "b", "c"])
    config.model.init_from = path
    lines = []
    out = init_from.transfer(config, target, ["x", "y"], mesh, log=lines.append)

    keep = init_from.class_dependent(config, 2, mesh)
    modules = {key.split("/")[-2] for key in keep}
    assert CLASS_MODULES[name] <= modules, modules
    flat_out, flat_src, flat_tgt = (init_from.flatten(t) for t in (out, source, target))
    assert set(flat_out) == set(flat_tgt)
    for key, value in flat_out.items():
        expected = flat_tgt[key] if key in keep else flat_src[key]
        np.testing.assert_array_equal(value, expected, err_msg=key)
    assert f"loaded {len(flat_out) - len(keep)} tensors, re-initialised {len(keep)} class-dependent" in lines[0]


def test_the_same_classes_load_the_class_tensors_and_a_shape_mismatch_elsewhere_is_named(tmp_path):
    config, mesh = _config("retinanet"), parallel.make_mesh(jax.local_devices()[:1])
    shapes = inference.abstract_variables(detectors.build_detector(config, 2, None), 32, mesh)
    source, target = _random(shapes, 1), _random(shapes, 2)
    path = str(tmp_path / "same.safetensors")
    init_from.save_safetensors(source, path, ["x", "y"])
    config.model.init_from = path
    out = init_from.transfer(config, target, ["x", "y"], mesh, log=lambda line: None)
    for a, b in zip(jax.tree_util.tree_leaves(out), jax.tree_util.tree_leaves(source)):
        np.testing.assert_array_equal(a, b)

    wider = _config("retinanet")
    wider.model.neck_channels = 24  # the FPN's width: not a class-dependent shape
    other = inference.abstract_variables(detectors.build_detector(wider, 2, None), 32, mesh)
    init_from.save_safetensors(_random(other, 3), path, ["x", "y"])
    with pytest.raises(ConfigError, match=r"FPN_0/.* has shape .*24.* there and .*16.* in this model"):
        init_from.transfer(config, target, ["x", "y"], mesh, log=lambda line: None)


def test_init_from_values_that_are_neither_a_run_nor_a_weights_file(tmp_path):
    (tmp_path / "folder").mkdir()
    (tmp_path / "w.bin").write_bytes(b"")
    for spec, message in (
        (str(tmp_path / "folder"), "not a jaxdet workdir"),
        (str(tmp_path / "w.bin"), "nor an existing .pth or .safetensors"),
        (str(tmp_path / "missing.safetensors"), "nor an existing .pth or .safetensors"),
    ):
        with pytest.raises(ConfigError, match=message):
            init_from.parse(spec)
    (tmp_path / "folder" / "config.json").write_text("{}")
    assert init_from.parse(str(tmp_path / "folder") + ":best") == (init_from.RUN, str(tmp_path / "folder"), "best")
    assert init_from.parse(str(tmp_path / "folder") + ":30")[2] == "30"


def _fake_run(workdir, seed=5):
    """A jaxdet workdir with one checkpoint of a tiny RetinaNet on 3 classes (no training)."""
    config = configs.resolve(recipe("retinanet", "tiny"))
    det = detectors.build_detector(config, 3, None)
    key = jax.random.key(seed)
    variables = det.module.init({"params": key, "sampling": key}, jnp.zeros((1, 64, 64, 3)), train=False)
    variables = {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
    configs.record(config, workdir)
    Classes(("p", "q", "r"), (1, 2, 3)).write(workdir)
    ckpts = Checkpoints(os.path.join(workdir, "checkpoints"), keep=1, save_every=1)
    ckpts.save(4, {"model": variables, "train": {"step": np.int32(4)}}, force=True)
    ckpts.wait()
    ckpts.close()
    return jax.device_get(variables)


def test_a_run_fine_tunes_from_another_run_onto_other_classes(tmp_path, capsys):
    source = _fake_run(str(tmp_path / "source"))
    data = write_coco(str(tmp_path / "coco"), n_train=8, n_val=4, category_ids=(3, 7))
    workdir = str(tmp_path / "fine")
    config = default.get_config("tiny")
    config.data.update(data)
    config.model.init_from = str(tmp_path / "source") + ":4"
    config.train.steps = config.train.eval_every = config.train.checkpoint_every = 1
    config.train.num_prediction_images = 0
    config.data.fit_report = True  # (off in the tiny configs; the run's start-up prints it)
    experiment.train_and_evaluate(config, workdir, jax.devices()[:1])
    out = capsys.readouterr().out
    assert "data.max_boxes = 8 (automatic" in out and "fit report (retinanet at 64 px;" in out
    assert "init_from " + str(tmp_path / "source") + " (step 4, 3 classes): loaded 90 tensors, re-initialised 2" in out
    assert "re-initialised (class-dependent): params/RetinaNetHead_0/cls_logits/bias" in out
    with open(os.path.join(workdir, "classes.json")) as f:
        assert [c["id"] for c in json.load(f)] == [3, 7]  # the new data's classes
    # The step-0 weights are the source's, but for the class logits: a fresh prior-probability init.
    config, classes = configs.load_recorded(workdir)
    det = detectors.build_detector(config, len(classes), None)
    mesh = parallel.make_mesh(jax.local_devices()[:1])
    variables, step = inference.restore_weights(workdir, "1", det, 64, mesh)
    assert step == 1
    head = jax.device_get(variables["params"]["RetinaNetHead_0"])
    anchors = source["params"]["RetinaNetHead_0"]["cls_logits"]["kernel"].shape[-1] // 3
    assert head["cls_logits"]["kernel"].shape[-1] == anchors * 2  # anchors x the new classes
    np.testing.assert_allclose(head["cls_logits"]["bias"], -np.log(99), atol=0.01)  # the prior 0.01
    # One step of training moved the weights a little from the source's, not to a new init.
    before, after = (
        source["params"]["ResNet_0"]["Conv_0"]["kernel"],
        variables["params"]["ResNet_0"]["Conv_0"]["kernel"],
    )
    assert np.abs(np.asarray(after) - before).max() < 0.05
