"""Where a loss term's gradient goes: each term's parameter gradient split over the
detector's modules (backbone stem and stages, neck, each head branch; Faster R-CNN's RPN
and RoI head), with the norms and the cosines between terms per module.

Modules are read off the parameter paths (as training/param_groups.flatten names them):
"ResNet_0/BasicBlock_3/Conv_0/kernel" -> "backbone/C3" by the backbone's stage sizes,
"FPN_0/..." -> "neck", "RetinaNetHead_0/cls_conv0/kernel" -> "head/cls",
"rpn/objectness/kernel" -> "rpn/objectness", "BoxHead_0/fc0/kernel" -> "roi/fc".
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import jax.numpy as jnp
from jax import Array

from jaxdet.models.backbones import BACKBONES, ResNetSpec

_NECKS = re.compile(r"^(FPN|PAN|C2fPAN)_\d+$")
# SSD's extra layers sit in the detector's own scope (jaxdet/models/necks.py).
_INLINE_NECK = re.compile(r"^(Conv|BatchNorm|GroupNorm)_\d+$")
_ORDER = ("backbone/stem", "backbone/C2", "backbone/C3", "backbone/C4", "backbone/C5", "neck")


def _branch(name: str) -> str:
    """A head sub-module's branch: its name's leading letters ("cls_conv0" -> "cls")."""
    found = re.match(r"[A-Za-z]+", name)
    return found.group(0) if found else name


def _stage(block: int, stage_sizes: Sequence[int]) -> int:
    total = 0
    for stage, depth in enumerate(stage_sizes):
        total += depth
        if block < total:
            return stage + 2
    return len(stage_sizes) + 1


def _backbone(parts: list[str], backbone: str) -> str:
    spec = BACKBONES.get(backbone)
    child = parts[1] if len(parts) > 2 else ""
    index = re.search(r"_(\d+)$", child)
    if isinstance(spec, ResNetSpec):
        if child.startswith(("BasicBlock_", "Bottleneck_")) and index:
            return f"backbone/C{_stage(int(index.group(1)), spec.stage_sizes)}"
        return "backbone/stem"
    # CSPDarknet: ConvUnit_0 is the stem; ConvUnit_i (i >= 1) and C2f_{i-1} make C_{i+1}; SPPF on C5.
    if child.startswith("ConvUnit_") and index:
        i = int(index.group(1))
        return "backbone/stem" if i == 0 else f"backbone/C{i + 1}"
    if child.startswith("C2f_") and index:
        return f"backbone/C{int(index.group(1)) + 2}"
    return "backbone/C5" if child.startswith("SPPF") else "backbone/stem"


def module_label(path: str, backbone: str) -> str:
    """The module a parameter path belongs to (see the module docstring)."""
    parts = path.split("/")
    top = parts[0]
    if top.startswith(("ResNet_", "CSPDarknet_")):
        return _backbone(parts, backbone)
    if _NECKS.match(top) or _INLINE_NECK.match(top):
        return "neck"
    if top == "rpn":
        return f"rpn/{_branch(parts[1])}"
    if top.startswith("BoxHead"):
        return f"roi/{_branch(parts[1])}"
    return f"head/{_branch(top if len(parts) == 2 else parts[1])}"


def order(labels: Sequence[str]) -> list[str]:
    """`labels` once each, backbone stages first, then the neck and the head branches."""
    unique = list(dict.fromkeys(labels))
    rank = {name: i for i, name in enumerate(_ORDER)}
    return sorted(unique, key=lambda s: (rank.get(s, len(_ORDER)), s))


def module_products(grads: dict[str, Array], labels: dict[str, str], modules: Sequence[str]) -> Array:
    """[M, T, T]: per module, the inner products between the terms' gradients.

    grads: flattened parameter path -> [T, ...] (each term's gradient); labels: path ->
    module; the diagonal is each term's squared norm within the module."""
    out = jnp.zeros((len(modules), *next(iter(grads.values())).shape[:1] * 2), jnp.float32)
    index = {m: i for i, m in enumerate(modules)}
    for path, g in grads.items():
        flat = g.reshape(g.shape[0], -1).astype(jnp.float32)
        out = out.at[index[labels[path]]].add(flat @ flat.T)
    return out
