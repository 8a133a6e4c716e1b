"""Reading torchvision state_dicts and writing their tensors into jaxdet variables.

`load_state_dict` reads a `.pth` with `torch.load(path, weights_only=True)` (tensors
only, never pickle code), or a `.safetensors` file with the `safetensors` package's
numpy API (no torch: the format Hugging Face and timm publish in; timm's ResNets use
torchvision's names). `Writer` copies tensors into a copy of an initialised model's
variables, converting layouts (conv [O, I, kh, kw] -> flax [kh, kw, I, O], linear
[O, I] -> [I, O], BatchNorm -> scale, bias, mean, var) and checking every shape; its
`Report` lists the tensors it used, so the callers report the unused ones. The
per-detector mappings that drive it are in `convert.py`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from jaxdet.errors import ConfigError

StateDict = dict[str, np.ndarray]


def load_state_dict(path: str) -> StateDict:
    """A `.pth` state_dict (read with weights_only=True) or a `.safetensors` file as numpy
    arrays (float32; integer buffers such as BatchNorm's num_batches_tracked left out)."""
    if path.endswith(".safetensors"):
        return _floating(read_safetensors(path))
    try:
        import torch
    except ImportError as e:
        raise ConfigError(f"loading {path} needs PyTorch: pip install 'jaxdet[bench]' (or torch alone)") from e
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError(f"weights file {path!r} does not exist") from None
    except Exception as e:  # weights_only refuses anything but tensors and plain containers
        raise ConfigError(f"could not read {path!r} as a tensors-only state_dict: {e}") from e
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]  # a training checkpoint {"model": state_dict, "optimizer": ...}
    if not isinstance(obj, dict) or not all(hasattr(v, "numpy") for v in obj.values()):
        raise ConfigError(f"{path!r} is not a state_dict (a dict of tensors); got {type(obj).__name__}")
    return {k: v.detach().float().numpy() for k, v in obj.items() if v.is_floating_point()}


def read_safetensors(path: str) -> dict[str, np.ndarray]:
    """Every tensor of a `.safetensors` file, as stored (bfloat16 as ml_dtypes' bfloat16)."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        tensors = load_file(path)
    except FileNotFoundError:
        raise ConfigError(f"weights file {path!r} does not exist") from None
    except (SafetensorError, OSError, ValueError) as e:
        raise ConfigError(f"could not read {path!r} as a .safetensors file: {e}") from e
    prefix = "module."  # saved from a DistributedDataParallel wrapper: torchvision's names under it
    if tensors and all(k.startswith(prefix) for k in tensors):
        tensors = {k[len(prefix) :]: v for k, v in tensors.items()}
    return tensors


def _floating(tensors: dict[str, np.ndarray]) -> StateDict:
    # (bfloat16 is ml_dtypes', which numpy does not count as a floating type)
    return {k: np.asarray(v, np.float32) for k, v in tensors.items() if v.dtype.name.startswith(("float", "bfloat"))}


@dataclasses.dataclass
class Report:
    """Which torchvision tensors were used; `unused` ones are reported, not silently ignored."""

    used: set[str] = dataclasses.field(default_factory=set)
    unused: list[str] = dataclasses.field(default_factory=list)
    # Variable paths ("params/.../kernel") written, and those left at their initial values
    # because the checkpoint's shape differs there (class-dependent tensors, `Writer.keep`).
    written: set[str] = dataclasses.field(default_factory=set)
    reinitialised: list[str] = dataclasses.field(default_factory=list)

    def finish(self, sd: StateDict, prefix: str = "") -> Report:
        self.unused = sorted(k for k in sd if k.startswith(prefix) and k not in self.used)
        return self


class Writer:
    """Copies state_dict tensors into a (deep-copied) variables tree, checking shapes.

    `keep`: variable paths ("params/RetinaNetHead_0/cls_logits/kernel") whose shape follows
    the class count: where the checkpoint's shape differs (other classes), the variable
    keeps its initial value and is listed in `report.reinitialised` instead of failing."""

    def __init__(self, sd: StateDict, variables: dict, keep: frozenset[str] = frozenset()):
        self.sd, self.vars, self.report, self.keep = sd, _to_dict(variables), Report(), keep

    def take(self, key: str) -> np.ndarray:
        if key not in self.sd:
            raise ConfigError(f"the torchvision state_dict has no {key!r} (is it the right model / depth?)")
        self.report.used.add(key)
        return self.sd[key]

    def first(self, *keys: str) -> str:
        """The first of `keys` present (torchvision renamed some modules across versions)."""
        for k in keys:
            if k in self.sd:
                return k
        raise ConfigError(f"the torchvision state_dict has none of {keys}")

    def put(self, path: tuple[str, ...], value: np.ndarray) -> None:
        node = self.vars
        for p in path[:-1]:
            if p not in node:
                raise ConfigError(f"jaxdet model has no {'/'.join(path)} (check the config's architecture)")
            node = node[p]
        old = node.get(path[-1])
        if old is None:
            raise ConfigError(f"jaxdet model has no {'/'.join(path)} (check the config's architecture)")
        name = "/".join(path)
        if tuple(old.shape) != tuple(value.shape) and name in self.keep:
            self.report.reinitialised.append(name)
            return
        if tuple(old.shape) != tuple(value.shape):
            raise ConfigError(
                f"shape mismatch for {'/'.join(path)}: jaxdet {tuple(old.shape)}, torchvision {tuple(value.shape)} "
                "(number of classes, anchors per position, FPN width or backbone depth differ?)"
            )
        node[path[-1]] = np.asarray(value, np.asarray(old).dtype)
        self.report.written.add(name)

    def conv(self, path: tuple[str, ...], key: str, bias: bool = True) -> None:
        self.put(("params", *path, "kernel"), self.take(key + ".weight").transpose(2, 3, 1, 0))
        if bias:
            self.put(("params", *path, "bias"), self.take(key + ".bias"))

    def dense(self, path: tuple[str, ...], key: str) -> None:
        self.put(("params", *path, "kernel"), self.take(key + ".weight").T)
        self.put(("params", *path, "bias"), self.take(key + ".bias"))

    def norm(self, path: tuple[str, ...], name: str, key: str) -> None:
        w, b = self.take(key + ".weight"), self.take(key + ".bias")
        mean, var = self.take(key + ".running_mean"), self.take(key + ".running_var")
        if name.startswith("FrozenBatchNorm"):
            for field, value in (("scale", w), ("bias", b), ("mean", mean), ("var", var)):
                self.put(("batch_stats", *path, name, field), value)
        elif name.startswith("BatchNorm"):
            self.put(("params", *path, name, "scale"), w)
            self.put(("params", *path, name, "bias"), b)
            self.put(("batch_stats", *path, name, "mean"), mean)
            self.put(("batch_stats", *path, name, "var"), var)
        else:
            raise ConfigError(
                f"torchvision ResNets have BatchNorm; this jaxdet backbone has {name.rsplit('_', 1)[0]}: "
                "set config.model.backbone_norm to 'frozen_batch' (as torchvision's detectors) or 'batch'"
            )


def _to_dict(tree: Any) -> Any:
    # New dicts all the way down: `put` replaces leaves in them, the caller's tree is untouched.
    if hasattr(tree, "items"):
        return {k: _to_dict(v) for k, v in tree.items()}
    return np.asarray(tree)


def by_index(names, prefix: str = "") -> list[str]:
    """Module names starting with `prefix`, in flax's auto-numbering order (Conv_0, Conv_1, ...;
    flax numbers each module type apart, so names of several types interleave by index)."""
    return sorted((n for n in names if n.startswith(prefix)), key=lambda n: (int(n.rsplit("_", 1)[1]), n))
