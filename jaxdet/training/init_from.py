"""config.model.init_from: a new run's first weights from another run or a weights file,
onto the new data's classes (fine-tuning).

    --config.model.init_from=runs/coco              a jaxdet run: its latest checkpoint
    --config.model.init_from=runs/coco:best         ... its best one (checkpoints_best), or :<step>
    --config.model.init_from=retinanet.pth          a torchvision state_dict (needs torch)
    --config.model.init_from=resnet50.safetensors   torchvision's or timm's names, no torch;
                                                    or jaxdet's own (`save_safetensors`)

Every variable whose path and shape match is loaded. The class-dependent ones (found by
building the detector with one class more and seeing which shapes change: every head's
class logits, DETR's class embeddings, Faster R-CNN's class and box predictors) keep the
new model's initialisation, which is the detector's own prior-probability init, unless
the source has the same classes in the same order. A shape mismatch anywhere else is an
error naming the tensor and both shapes. Variables the source lacks (another detector's
head) keep their initialisation; the source's tensors with no place here are listed.
Only weights come over: the optimizer state, the step and the EMA start anew.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable, Sequence

import jax
import numpy as np

from jaxdet import configs, detectors, parallel
from jaxdet.detectors import inference
from jaxdet.errors import ConfigError
from jaxdet.training.param_groups import flatten  # (one naming: params/ResNet_0/Conv_0/kernel)

RUN, TORCH, SAFETENSORS = "jaxdet run", "torch file", "safetensors file"
_CHECKPOINTS = ("latest", "best")


@dataclasses.dataclass
class Transfer:
    """Which of the new model's variables ("params/ResNet_0/Conv_0/kernel") came from where."""

    source: str
    loaded: list[str]
    reinitialised: list[str]  # class-dependent: the source's classes differ
    fresh: list[str]  # the source has no such variable
    unused: list[str]  # the source's tensors with no place in this model

    def lines(self) -> list[str]:
        head = (
            f"init_from {self.source}: loaded {len(self.loaded)} tensors, re-initialised {len(self.reinitialised)} "
            f"class-dependent, {len(self.fresh)} not in the source (initialised), {len(self.unused)} of the "
            "source's unused"
        )
        parts = (
            ("re-initialised (class-dependent)", self.reinitialised),
            ("not in the source", self.fresh),
            ("unused", self.unused),
        )
        return [head] + [f"  {label}: {_listing(names)}" for label, names in parts if names]


def _listing(names: Sequence[str], most: int = 6) -> str:
    more = f" ... (+{len(names) - most} more)" if len(names) > most else ""
    return ", ".join(names[:most]) + more


def parse(spec: str) -> tuple[str, str, str]:
    """(kind, path, checkpoint) of an init_from value; ConfigError saying what it accepts."""
    path, which = os.path.expanduser(spec), "latest"
    head, _, tail = path.rpartition(":")
    if head and (tail in _CHECKPOINTS or tail.isdigit()) and os.path.isdir(head):
        path, which = head, tail
    if os.path.isdir(path):
        if not os.path.isfile(os.path.join(path, "config.json")):
            raise ConfigError(
                f"config.model.init_from={spec!r}: {path} is a folder but not a jaxdet workdir (no config.json)"
            )
        return RUN, path, which
    if os.path.isfile(path) and path.endswith(".safetensors"):
        return SAFETENSORS, path, which
    if os.path.isfile(path) and path.endswith((".pth", ".pt")):
        return TORCH, path, which
    raise ConfigError(
        f"config.model.init_from={spec!r}: not a jaxdet workdir (optionally :latest, :best or :<step>), "
        "nor an existing .pth or .safetensors file"
    )


def unflatten(flat: dict[str, np.ndarray]) -> dict:
    tree: dict = {}
    for name, value in flat.items():
        *parents, leaf = name.split("/")
        node = tree
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return tree


def save_safetensors(variables: dict, path: str, class_names: Sequence[str] = ()) -> None:
    """A model's variables as a .safetensors file under jaxdet's names, with its classes in
    the metadata, which any run reads back with init_from (no torch, no jaxdet workdir)."""
    from safetensors.numpy import save_file

    tensors = {name: np.ascontiguousarray(np.asarray(v)) for name, v in flatten(jax.device_get(variables)).items()}
    save_file(tensors, path, metadata={"format": "jaxdet", "classes": json.dumps(list(class_names))})


def class_dependent(config, num_classes: int, mesh) -> frozenset[str]:
    """The variables whose shape follows the class count: those that change shape when the
    detector is built with one class more (only shapes are computed)."""
    shapes = [
        flatten(inference.abstract_variables(detectors.build_detector(config, n, None), config.data.image_size, mesh))
        for n in (num_classes, num_classes + 1)
    ]
    return frozenset(k for k, v in shapes[0].items() if k not in shapes[1] or v.shape != shapes[1][k].shape)


def merge(target: dict, source: dict[str, np.ndarray], keep: frozenset[str], name: str) -> tuple[dict, Transfer]:
    """`target` (variables) with every variable of `source` (flat names) of the same name and
    shape, except the class-dependent `keep`; ConfigError for any other shape mismatch."""
    flat, out = flatten(target), {}
    loaded, reinitialised, fresh = [], [], []
    for key, value in flat.items():
        if key not in source:
            out[key] = value
            fresh.append(key)
        elif key in keep:
            out[key] = value
            reinitialised.append(key)
        elif tuple(np.shape(source[key])) != tuple(np.shape(value)):
            raise ConfigError(
                f"init_from {name}: {key} has shape {tuple(np.shape(source[key]))} there and "
                f"{tuple(np.shape(value))} in this model, and it does not depend on the classes: the "
                "architecture differs (backbone, neck width, head convs, anchors per position?); "
                "set the model fields as the source run had them"
            )
        else:
            out[key] = np.asarray(source[key], np.asarray(value).dtype)
            loaded.append(key)
    unused = sorted(k for k in source if k not in flat)
    return unflatten(out), Transfer(name, loaded, reinitialised, fresh, unused)


def _run_weights(path: str, which: str) -> tuple[dict[str, np.ndarray], tuple[str, ...], str]:
    """A jaxdet run's weights (its "model" item: the EMA where it kept one), classes and name."""
    config, classes = configs.load_recorded(path)
    mesh = parallel.make_mesh(jax.local_devices()[:1])
    detector = detectors.build_detector(config, len(classes), None)
    variables, step = inference.restore_weights(path, which, detector, config.data.image_size, mesh)
    return flatten(jax.device_get(variables)), tuple(classes.names), f"{path} (step {step}, {len(classes)} classes)"


def _torchvision(config, variables: dict, sd, keep: frozenset[str], name: str, log) -> tuple[dict, Transfer]:
    """A torchvision-named state_dict through the detector's converter (its own kind of
    torchvision detector) or into the backbone alone (a ResNet, or another detector's file)."""
    from jaxdet.models import convert

    kind = convert.torchvision_kind(sd)
    converter = detectors.get_definition(config.model.name).convert
    if kind is None:
        raise ConfigError(
            f"init_from {name}: neither torchvision's nor timm's names (no 'conv1.weight', "
            "'backbone.body.conv1.weight' or a detector head), nor jaxdet's ('params/...')"
        )
    if kind == config.model.name and converter is not None:
        out, report = converter(sd, variables, config.model.backbone, keep)
    else:
        if kind != "resnet":
            log(
                f"init_from {name}: a torchvision {kind}; this run is {config.model.name}: its backbone alone is loaded"
            )
        out, report = convert.resnet_from_torchvision(sd, variables, config.model.backbone, keep=keep)
    every = flatten(variables)
    done = report.written | set(report.reinitialised)
    unused = sorted(k for k in sd if k not in report.used)
    fresh = sorted(k for k in every if k not in done)
    return out, Transfer(name, sorted(report.written), sorted(report.reinitialised), fresh, unused)


def transfer(config, variables: dict, class_names: Sequence[str], mesh, log: Callable[[str], None] = print) -> dict:
    """`variables` (the new model's initial {"params", "batch_stats"}, host arrays) with
    config.model.init_from's weights loaded as this module's docstring says; logs the
    counts and names. Returns the new variables."""
    kind, path, which = parse(config.model.init_from)
    keep = class_dependent(config, len(class_names), mesh)
    if kind == RUN:
        source, source_classes, name = _run_weights(path, which)
    elif kind == SAFETENSORS and (header := _safetensors_metadata(path))[1]:
        source, source_classes, name = _jaxdet_file(path, header[0])
    else:
        from jaxdet.models.torch_weights import load_state_dict

        sd = load_state_dict(path)
        out, report = _torchvision(config, variables, sd, keep, path, log)
        for line in report.lines():
            log(line)
        return out
    same = tuple(source_classes) == tuple(class_names)
    if same:
        log(f"init_from {name}: the same {len(class_names)} classes: the class-dependent tensors load too")
    out, report = merge(variables, source, frozenset() if same else keep, name)
    for line in report.lines():
        log(line)
    return out


def _safetensors_metadata(path: str) -> tuple[dict, bool]:
    """(the file's metadata, whether its tensors carry jaxdet's names), from its header alone."""
    from safetensors import safe_open

    with safe_open(path, framework="numpy") as f:
        meta = f.metadata() or {}
        names = list(f.keys())
    return meta, meta.get("format") == "jaxdet" or all(k.startswith(("params/", "batch_stats/")) for k in names)


def _jaxdet_file(path: str, meta: dict) -> tuple[dict[str, np.ndarray], tuple[str, ...], str]:
    from jaxdet.models.torch_weights import read_safetensors

    classes = json.loads(meta.get("classes", "[]"))
    return read_safetensors(path), tuple(classes), f"{path} ({len(classes) or 'unnamed'} classes)"
