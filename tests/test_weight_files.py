""".safetensors weights without torch: torchvision's (= timm's) ResNet names written from
numpy, a DDP prefix, bfloat16 files, bad files named; with torch, timm and torchvision
installed (`[bench]` + timm), their models' safetensors give their features (1e-4) and the
same variables as their .pth files, and a torchvision detector fine-tunes onto other classes."""

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
from safetensors.numpy import save_file

from experiments.configs import default
from jaxdet import configs, detectors, parallel
from jaxdet.errors import ConfigError
from jaxdet.models import convert
from jaxdet.training import init_from


def resnet18_state_dict(seed: int = 0) -> dict[str, np.ndarray]:
    """Random tensors under torchvision's (and timm's) resnet18 names and shapes."""
    rng = np.random.default_rng(seed)
    sd = {}

    def conv(name, o, i, k):
        sd[name + ".weight"] = rng.normal(size=(o, i, k, k)).astype(np.float32) * 0.1

    def bn(name, c):
        sd[name + ".weight"], sd[name + ".bias"] = rng.uniform(0.5, 1.5, c), rng.normal(size=c) * 0.1
        sd[name + ".running_mean"], sd[name + ".running_var"] = rng.normal(size=c) * 0.1, rng.uniform(0.5, 1.5, c)

    conv("conv1", 64, 3, 7)
    bn("bn1", 64)
    cin = 64
    for stage, c in enumerate((64, 128, 256, 512)):
        for block in range(2):
            key = f"layer{stage + 1}.{block}."
            conv(key + "conv1", c, cin, 3), bn(key + "bn1", c), conv(key + "conv2", c, c, 3), bn(key + "bn2", c)
            if block == 0 and cin != c:
                conv(key + "downsample.0", c, cin, 1), bn(key + "downsample.1", c)
            cin = c
    sd["fc.weight"], sd["fc.bias"] = rng.normal(size=(1000, 512)), rng.normal(size=1000)
    return {k: np.asarray(v, np.float32) for k, v in sd.items()}


def _tiny_resnet18():
    config = default.get_config("tiny")
    config.model.backbone = "resnet18"
    return configs.resolve(config)


def _initial(config, num_classes=2):
    det = detectors.build_detector(config, num_classes, None)
    key = jax.random.key(0)
    return jax.device_get(det.module.init({"params": key, "sampling": key}, jnp.zeros((1, 64, 64, 3)), train=False))


@pytest.mark.parametrize("variant", ["float32", "bfloat16", "ddp_prefix"])
def test_a_resnet_safetensors_file_loads_into_the_backbone_without_torch(variant, tmp_path):
    sd = resnet18_state_dict()
    stored = {k: v.astype(ml_dtypes.bfloat16) for k, v in sd.items()} if variant == "bfloat16" else sd
    if variant == "ddp_prefix":
        stored = {f"module.{k}": v for k, v in stored.items()}
    path = str(tmp_path / "resnet18.safetensors")
    save_file(stored, path)
    config, mesh = _tiny_resnet18(), parallel.make_mesh(jax.local_devices()[:1])
    config.model.init_from = path
    lines = []
    out = init_from.transfer(config, _initial(config), ["x", "y"], mesh, log=lines.append)
    want = sd["conv1.weight"].transpose(2, 3, 1, 0)
    if variant == "bfloat16":
        want = want.astype(ml_dtypes.bfloat16).astype(np.float32)
    np.testing.assert_array_equal(out["params"]["ResNet_0"]["Conv_0"]["kernel"], want)
    resnet = [k for k in init_from.flatten(out) if "/ResNet_0/" in k]
    assert lines[0].startswith(f"init_from {path}: loaded {len(resnet)} tensors, re-initialised 0 class-dependent")
    assert "unused: fc.bias, fc.weight" in lines[-1]  # the classifier: listed, not dropped silently
    # The same file through backbone_weights, the torchvision-only field, gives the same variables.
    config.model.init_from, config.model.backbone_weights = "", path
    again = convert.load_pretrained(config.model, _initial(config), log=lambda line: None)
    for a, b in zip(jax.tree_util.tree_leaves(again), jax.tree_util.tree_leaves(out)):
        np.testing.assert_array_equal(a, b)


def test_bad_safetensors_files_are_named(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(ConfigError, match="could not read .* as a .safetensors file"):
        convert.load_state_dict(str(bad))
    save_file({"encoder.weight": np.zeros((2, 2), np.float32)}, str(tmp_path / "other.safetensors"))
    config, mesh = _tiny_resnet18(), parallel.make_mesh(jax.local_devices()[:1])
    config.model.init_from = str(tmp_path / "other.safetensors")
    with pytest.raises(ConfigError, match="neither torchvision's nor timm's names"):
        init_from.transfer(config, _initial(config), ["x", "y"], mesh)
    sd = resnet18_state_dict()
    del sd["layer2.0.downsample.0.weight"]
    save_file(sd, str(tmp_path / "short.safetensors"))
    config.model.init_from = str(tmp_path / "short.safetensors")
    with pytest.raises(ConfigError, match="no 'layer2.0.downsample.0.weight'"):
        init_from.transfer(config, _initial(config), ["x", "y"], mesh)


def test_a_pth_without_torch_says_what_it_needs(tmp_path, monkeypatch):
    import builtins

    real = builtins.__import__
    monkeypatch.setattr(
        builtins,
        "__import__",
        lambda name, *a, **k: (_ for _ in ()).throw(ImportError(name)) if name == "torch" else real(name, *a, **k),
    )
    (tmp_path / "w.pth").write_bytes(b"")
    with pytest.raises(ConfigError, match=r"needs PyTorch: pip install 'jaxdet\[bench\]'"):
        convert.load_state_dict(str(tmp_path / "w.pth"))
