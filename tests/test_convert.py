"""torchvision -> jaxdet weight conversion: a randomly initialised torchvision model and its
converted jaxdet twin give the same features and head outputs on the same image (1e-4).

Skipped without torch/torchvision (the `bench` extra); run with them installed:
    pip install -e '.[bench]' && python -m pytest tests/test_convert.py tests/test_torchvision_*.py
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
torchvision = pytest.importorskip("torchvision")

from torchvision_helpers import (  # noqa: E402
    SIZE,
    _full_precision,  # noqa: F401 (autouse fixture)
    close,
    detector,
    fpn_outputs,
    nchw,
    random_images,
    randomize_norms,
    save,
    torchvision_detector,
)

from experiments.configs import default, faster_rcnn, fcos, retinanet_r50  # noqa: E402
from jaxdet import detectors  # noqa: E402
from jaxdet.errors import ConfigError  # noqa: E402
from jaxdet.models import convert  # noqa: E402
from jaxdet.models.backbones import ResNet, get_backbone_spec  # noqa: E402
from jaxdet.models.heads.rcnn import BoxHead  # noqa: E402


@pytest.mark.parametrize("depth, norm", [(18, "frozen_batch"), (34, "batch"), (50, "frozen_batch")])
def test_resnet_backbone_features_match(depth, norm, tmp_path):
    tv = getattr(torchvision.models, f"resnet{depth}")(weights=None).eval()
    randomize_norms(tv)
    sd = convert.load_state_dict(save(tv, tmp_path))
    module = ResNet(get_backbone_spec(f"resnet{depth}"), norm)
    image = random_images()
    variables = jax.device_get(module.init(jax.random.key(0), image[:1], train=False))
    variables, report = convert.resnet_from_torchvision(sd, variables, f"resnet{depth}", path=())
    assert report.unused == ["fc.bias", "fc.weight"]  # the classifier: reported, not loaded
    feats = module.apply(variables, image, train=False)
    with torch.no_grad():
        x = nchw(image)
        x = tv.maxpool(tv.relu(tv.bn1(tv.conv1(x))))
        for level, layer in zip((2, 3, 4, 5), (tv.layer1, tv.layer2, tv.layer3, tv.layer4)):
            x = layer(x)
            close(feats[level], x, f"resnet{depth} C{level}")


def test_retinanet_features_and_head_outputs_match(tmp_path):
    tv = torchvision_detector("retinanet_resnet50_fpn", 7)
    config = retinanet_r50.get_config("torchvision")
    config.data.image_size = SIZE
    det, variables = detector(config, 7, tmp_path, save(tv, tmp_path))
    image = random_images(1)
    out, pyramid = fpn_outputs(det, variables, image)
    with torch.no_grad():
        feats = tv.backbone(nchw(image))
        for level, tv_feat in zip(range(3, 8), feats.values()):
            close(pyramid[level], tv_feat, f"P{level}")
        head = tv.head(list(feats.values()))
    close(out["cls_logits"], head["cls_logits"], "classification logits")
    close(out["box_deltas"], head["bbox_regression"], "box deltas")


def test_faster_rcnn_features_rpn_and_box_head_match(tmp_path):
    tv = torchvision_detector("fasterrcnn_resnet50_fpn", 6)
    config = faster_rcnn.get_config("torchvision")  # torchvision's architecture, at a small size
    config.data.image_size = SIZE
    m = config.model
    m.faster_rcnn.rpn_pre_nms_topk, m.faster_rcnn.rpn_post_nms_topk = 50, 20
    det, variables = detector(config, 5, tmp_path, save(tv, tmp_path))
    image = random_images(2)
    out, pyramid = fpn_outputs(det, variables, image)
    with torch.no_grad():
        feats = tv.backbone(nchw(image))  # '0'..'3' = P2..P5, 'pool' = P6
        for level, tv_feat in zip(range(2, 7), feats.values()):
            close(pyramid[level], tv_feat, f"P{level}")
        objectness, deltas = tv.rpn.head(list(feats.values()))
        flat = lambda xs, c: torch.cat([x.permute(0, 2, 3, 1).reshape(x.shape[0], -1, c) for x in xs], 1)
        close(out["rpn_logits"], flat(objectness, 1)[..., 0], "RPN objectness")
        close(out["rpn_deltas"], flat(deltas, 4), "RPN deltas")
        # The box head on the same RoIs (small to large, so every pooling level is used).
        rng = np.random.default_rng(3)
        xy = rng.uniform(0, SIZE * 0.6, (2, 12, 2))
        rois = np.concatenate([xy, xy + rng.uniform(2, SIZE * 0.4, (2, 12, 2))], -1).astype(np.float32)
        feature_dict = {k: v for k, v in feats.items() if k != "pool"}
        pooled = tv.roi_heads.box_roi_pool(feature_dict, [torch.from_numpy(r) for r in rois], [(SIZE, SIZE)] * 2)
        logits, boxes = tv.roi_heads.box_predictor(tv.roi_heads.box_head(pooled))
    head = BoxHead(m.faster_rcnn.fc_dim, 6, 5, aligned=False)
    our_logits, our_deltas = head.apply({"params": variables["params"]["BoxHead_0"]}, pyramid, jnp.asarray(rois))
    close(our_logits.reshape(24, 6), logits[:, np.r_[1:6, 0]], "box-head class logits (background last)")
    close(our_deltas.reshape(24, 5, 4), boxes.reshape(24, 6, 4)[:, 1:], "box-head deltas")


def test_backbone_weights_flag_loads_into_the_detector(tmp_path, capsys):
    tv = torchvision.models.resnet18(weights=None)
    path = save(tv, tmp_path)
    config = default.get_config("tiny")
    config.model.backbone, config.model.backbone_weights = "resnet18", path
    det = detectors.build_detector(config, 5, None)
    init = jax.device_get(det.module.init({"params": jax.random.key(0)}, random_images()[:1, :64, :64], train=False))
    loaded = convert.load_pretrained(config.model, init)
    assert f"from {path}; not used: 2 (fc.bias, fc.weight)" in capsys.readouterr().out
    np.testing.assert_array_equal(
        loaded["params"]["ResNet_0"]["Conv_0"]["kernel"], tv.conv1.weight.detach().numpy().transpose(2, 3, 1, 0)
    )
    config.model.backbone = "resnet34"  # a different depth is refused with the key it lacks
    det = detectors.build_detector(config, 5, None)
    init = jax.device_get(det.module.init({"params": jax.random.key(0)}, random_images()[:1, :64, :64], train=False))
    with pytest.raises(ConfigError, match=r"no 'layer1.2.conv1.weight'"):
        convert.load_pretrained(config.model, init)


class _Arbitrary:
    """A pickled object in a weights file: weights_only=True refuses to build it (no code runs)."""


def test_bad_weight_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        convert.load_state_dict(str(tmp_path / "missing.pth"))
    torch.save({"not": "tensors", "x": [1, 2]}, str(tmp_path / "odd.pth"))
    with pytest.raises(ConfigError, match="not a state_dict"):
        convert.load_state_dict(str(tmp_path / "odd.pth"))

    torch.save({"w": torch.zeros(2), "code": _Arbitrary()}, str(tmp_path / "pickle.pth"))
    with pytest.raises(ConfigError, match="tensors-only"):
        convert.load_state_dict(str(tmp_path / "pickle.pth"))
    assert os.path.exists(tmp_path / "pickle.pth")


def _safetensors(model, tmp_path) -> str:
    from safetensors.numpy import save_file

    path = str(tmp_path / "weights.safetensors")
    save_file({k: v.detach().numpy() for k, v in model.state_dict().items()}, path)
    return path


@pytest.mark.parametrize("depth", [18, 34, 50])
def test_timm_resnets_as_safetensors_give_timms_features(depth, tmp_path):
    timm = pytest.importorskip("timm")
    tm = timm.create_model(f"resnet{depth}", pretrained=False).eval()
    randomize_norms(tm)
    sd = convert.load_state_dict(_safetensors(tm, tmp_path))  # no torch needed for this read
    module = ResNet(get_backbone_spec(f"resnet{depth}"), "frozen_batch")
    image = random_images()
    variables = jax.device_get(module.init(jax.random.key(0), image[:1], train=False))
    variables, report = convert.resnet_from_torchvision(sd, variables, f"resnet{depth}", path=())
    assert report.unused == ["fc.bias", "fc.weight"]
    feats = module.apply(variables, image, train=False)
    with torch.no_grad():
        x = tm.maxpool(tm.act1(tm.bn1(tm.conv1(nchw(image)))))
        for level, layer in zip((2, 3, 4, 5), (tm.layer1, tm.layer2, tm.layer3, tm.layer4)):
            x = layer(x)
            close(feats[level], x, f"timm resnet{depth} C{level}")


@pytest.mark.parametrize(
    "name, recipe, classes",
    [
        ("retinanet_resnet50_fpn", retinanet_r50, 7),
        ("fcos_resnet50_fpn", fcos, 7),
        ("fasterrcnn_resnet50_fpn", faster_rcnn, 6),
    ],
)
def test_torchvision_detectors_as_safetensors_equal_their_pth(name, recipe, classes, tmp_path):
    tv = torchvision_detector(name, classes)
    config = recipe.get_config("torchvision")
    config.data.image_size = SIZE
    n = classes - 1 if recipe is faster_rcnn else classes
    _, from_pth = detector(config, n, tmp_path, save(tv, tmp_path))
    _, from_safetensors = detector(config, n, tmp_path, _safetensors(tv, tmp_path))
    for a, b in zip(jax.tree_util.tree_leaves(from_pth), jax.tree_util.tree_leaves(from_safetensors)):
        np.testing.assert_array_equal(a, b)


def test_a_torchvision_detector_fine_tunes_onto_other_classes(tmp_path):
    from jaxdet import configs, parallel
    from jaxdet.training import init_from

    tv = torchvision_detector("retinanet_resnet50_fpn", 7)
    config = configs.resolve(retinanet_r50.get_config("torchvision"))
    config.data.image_size = SIZE
    config.model.init_from = _safetensors(tv, tmp_path)
    det = detectors.build_detector(config, 2, None)
    init = jax.device_get(det.module.init({"params": jax.random.key(0)}, jnp.zeros((1, SIZE, SIZE, 3)), train=False))
    lines = []
    out = init_from.transfer(config, init, ["x", "y"], parallel.make_mesh(jax.devices()[:1]), log=lines.append)
    head = out["params"]["RetinaNetHead_0"]
    np.testing.assert_array_equal(head["cls_logits"]["bias"], init["params"]["RetinaNetHead_0"]["cls_logits"]["bias"])
    np.testing.assert_array_equal(
        head["cls_conv0"]["kernel"],
        tv.head.classification_head.conv[0][0].weight.detach().numpy().transpose(2, 3, 1, 0),
    )
    assert "re-initialised 2 class-dependent, 0 not in the source" in lines[0]
