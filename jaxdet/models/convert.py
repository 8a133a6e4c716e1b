"""torchvision weights -> jaxdet variables: ResNet backbones, RetinaNet, FCOS and Faster R-CNN.

Files are read with `torch.load(path, weights_only=True)` (tensors only, never pickle
code; `torch_weights.py` reads them and writes them into the variables). The conversion
is driven by the jaxdet variables of an initialised model: every
one of them must receive a torchvision tensor of the matching shape, or the load fails
naming both; torchvision tensors with no jaxdet counterpart (a classifier's `fc`) are
listed in the report, never dropped silently.

Layouts: conv weights [O, I, kh, kw] -> flax kernels [kh, kw, I, O]; linear [O, I] ->
[I, O]; the box head's first FC layer also reorders its input from torchvision's
(C, 7, 7) flattening to jaxdet's (7, 7, C). BatchNorm (or FrozenBatchNorm2d) weight,
bias, running_mean, running_var -> flax scale, bias, mean, var. Faster R-CNN's
background class moves from torchvision's first column to jaxdet's last.

Architecture settings must match the checkpoint (see docs/detectors_and_losses.md, "Pretrained weights"): the
same ResNet depth, FPN levels and width, anchors per position, head convs and classes.
"""

from __future__ import annotations

import numpy as np

from jaxdet.errors import ConfigError
from jaxdet.models.backbones import ResNetSpec, get_backbone_spec
from jaxdet.models.torch_weights import Report, StateDict, Writer, by_index, load_state_dict

__all__ = [  # (the reader and report re-exported: callers import them from here)
    "Report", "StateDict", "faster_rcnn_from_torchvision", "fcos_from_torchvision",
    "load_pretrained", "load_state_dict", "resnet_from_torchvision", "retinanet_from_torchvision",
]  # fmt: skip


def _write_resnet(w: Writer, path: tuple[str, ...], spec: ResNetSpec, tv: str) -> None:
    """jaxdet ResNet at `path` <- torchvision ResNet keys under `tv` ("" or "backbone.body.")."""
    modules = w.vars["params"]
    for p in path:
        modules = modules[p]
    stats = w.vars.get("batch_stats", {})
    for p in path:
        stats = stats.get(p, {})
    names = set(modules) | set(stats)
    w.conv((*path, "Conv_0"), tv + "conv1", bias=False)
    stem_norm = [n for n in names if not n.startswith(("Conv_", "BasicBlock_", "Bottleneck_"))]
    if not stem_norm:
        raise ConfigError("this jaxdet backbone has no norm layers (backbone_norm='none'); use 'frozen_batch'")
    w.norm(path, stem_norm[0], tv + "bn1")
    block_kind = "Bottleneck" if spec.bottleneck else "BasicBlock"
    blocks = by_index(names, block_kind + "_")
    if len(blocks) != sum(spec.stage_sizes):
        raise ConfigError(f"jaxdet backbone has {len(blocks)} blocks, expected {sum(spec.stage_sizes)}")
    convs_per_block = 3 if spec.bottleneck else 2
    i = 0
    for stage, depth in enumerate(spec.stage_sizes):
        for j in range(depth):
            bpath, key = (*path, blocks[i]), f"{tv}layer{stage + 1}.{j}."
            sub = set(modules[blocks[i]]) | set(stats.get(blocks[i], {}))
            convs, norms = by_index(sub, "Conv_"), [n for n in by_index(sub) if not n.startswith("Conv_")]
            for c in range(convs_per_block):
                w.conv((*bpath, convs[c]), f"{key}conv{c + 1}", bias=False)
                w.norm(bpath, norms[c], f"{key}bn{c + 1}")
            if len(convs) > convs_per_block:  # the projection shortcut
                w.conv((*bpath, convs[-1]), f"{key}downsample.0", bias=False)
                w.norm(bpath, norms[-1], f"{key}downsample.1")
            i += 1


def _write_fpn(w: Writer, path: tuple[str, ...], tv: str, levels: list[int], extra: list[int]) -> None:
    """jaxdet FPN <- torchvision `backbone.fpn`: inner/layer blocks by level, then P6/P7 convs."""
    for i, lvl in enumerate(levels):
        w.conv((*path, f"lateral{lvl}"), w.first(f"{tv}inner_blocks.{i}.0.weight", f"{tv}inner_blocks.{i}.weight")[:-7])
        w.conv((*path, f"output{lvl}"), w.first(f"{tv}layer_blocks.{i}.0.weight", f"{tv}layer_blocks.{i}.weight")[:-7])
    for lvl in extra:
        w.conv((*path, f"extra{lvl}"), f"{tv}extra_blocks.p{lvl}")


def _resnet_spec(backbone: str) -> ResNetSpec:
    spec = get_backbone_spec(backbone)
    if not isinstance(spec, ResNetSpec):
        raise ConfigError(f"torchvision weights are ResNets; config.model.backbone={backbone!r} is not one")
    return spec


def _resnet_fpn(sd: StateDict, variables: dict, backbone: str, keep: frozenset[str]) -> Writer:
    """A writer with the detector's ResNet <- `backbone.body` and FPN <- `backbone.fpn`
    (its P6/P7 convs where the jaxdet FPN has them) done; `keep` as `Writer`'s."""
    w = Writer(sd, variables, keep)
    _write_resnet(w, ("ResNet_0",), _resnet_spec(backbone), "backbone.body.")
    fpn = w.vars["params"]["FPN_0"]
    levels = sorted(int(k[7:]) for k in fpn if k.startswith("lateral"))
    extra = sorted(int(k[5:]) for k in fpn if k.startswith("extra"))
    _write_fpn(w, ("FPN_0",), "backbone.fpn.", levels, extra)
    return w


def resnet_from_torchvision(
    sd: StateDict, variables: dict, backbone: str, path=("ResNet_0",), keep: frozenset[str] = frozenset()
) -> tuple[dict, Report]:
    """Loads a torchvision ResNet-18/34/50 (classifier or a detector's `backbone.body`) into
    the ResNet at `path` of `variables` ({"params", "batch_stats"}); returns (variables, report)."""
    tv = "" if "conv1.weight" in sd else "backbone.body." if "backbone.body.conv1.weight" in sd else None
    if tv is None:
        raise ConfigError("not a torchvision ResNet state_dict: no 'conv1.weight' or 'backbone.body.conv1.weight'")
    w = Writer(sd, variables, keep)
    _write_resnet(w, tuple(path), _resnet_spec(backbone), tv)
    return w.vars, w.report.finish(sd, tv)


def retinanet_from_torchvision(
    sd: StateDict, variables: dict, backbone: str, keep: frozenset[str] = frozenset()
) -> tuple[dict, Report]:
    """A torchvision `retinanet_resnet50_fpn` (v1) state_dict -> jaxdet RetinaNet variables.

    jaxdet settings that match it: backbone resnet50, backbone_norm frozen_batch, levels
    3..7 with fpn_extra "conv", fpn_channels 256, head_convs 4, head_norm "none", 9 anchors
    (num_scales 3, aspect_ratios (0.5, 1, 2)), sigmoid classification with as many
    classes as the checkpoint (torchvision's COCO model: 91 columns, some unused)."""
    if "head.classification_head.conv.0.1.weight" in sd:
        raise ConfigError(
            "this is torchvision's retinanet_resnet50_fpn_v2 (GroupNorm head, P6 from C5); "
            "jaxdet converts v1 (retinanet_resnet50_fpn)"
        )
    w = _resnet_fpn(sd, variables, backbone, keep)
    head = w.vars["params"]["RetinaNetHead_0"]
    n_convs = len([k for k in head if k.startswith("cls_conv")])
    for i in range(n_convs):
        for ours, theirs in (("cls_conv", "classification_head"), ("box_conv", "regression_head")):
            key = w.first(f"head.{theirs}.conv.{i}.0.weight", f"head.{theirs}.conv.{2 * i}.weight")[:-7]
            w.conv(("RetinaNetHead_0", f"{ours}{i}"), key)
    w.conv(("RetinaNetHead_0", "cls_logits"), "head.classification_head.cls_logits")
    w.conv(("RetinaNetHead_0", "box_deltas"), "head.regression_head.bbox_reg")
    return w.vars, w.report.finish(sd)


def fcos_from_torchvision(
    sd: StateDict, variables: dict, backbone: str, keep: frozenset[str] = frozenset()
) -> tuple[dict, Report]:
    """A torchvision `fcos_resnet50_fpn` state_dict -> jaxdet FCOS variables.

    Matching jaxdet settings: `experiments/configs/fcos.py:torchvision` (resnet50 with
    frozen_batch norms, levels 3..7 with neck_extra "conv", 256 channels, 4-conv GroupNorm
    towers, a centre-ness branch: confidence "centerness"), sigmoid classification with as
    many classes as the checkpoint."""
    w = _resnet_fpn(sd, variables, backbone, keep)
    head = w.vars["params"]["FCOSHead_0"]
    for i in range(len([k for k in head if k.startswith("cls_conv")])):
        for ours, theirs in (("cls", "classification_head"), ("box", "regression_head")):
            w.conv(("FCOSHead_0", f"{ours}_conv{i}"), f"head.{theirs}.conv.{3 * i}")  # conv, GroupNorm, ReLU
            norm = f"head.{theirs}.conv.{3 * i + 1}"
            w.put(("params", "FCOSHead_0", f"{ours}_norm{i}", "GroupNorm_0", "scale"), w.take(norm + ".weight"))
            w.put(("params", "FCOSHead_0", f"{ours}_norm{i}", "GroupNorm_0", "bias"), w.take(norm + ".bias"))
    w.conv(("FCOSHead_0", "cls_logits"), "head.classification_head.cls_logits")
    w.conv(("FCOSHead_0", "box_ltrb"), "head.regression_head.bbox_reg")
    w.conv(("FCOSHead_0", "ctr_logits"), "head.regression_head.bbox_ctrness")
    return w.vars, w.report.finish(sd)


def faster_rcnn_from_torchvision(
    sd: StateDict, variables: dict, backbone: str, keep: frozenset[str] = frozenset()
) -> tuple[dict, Report]:
    """A torchvision `fasterrcnn_resnet50_fpn` (v1) state_dict -> jaxdet Faster R-CNN variables.

    Matching jaxdet settings: backbone resnet50, backbone_norm frozen_batch, levels 2..5
    (or 2..6 with fpn_extra "pool"), fpn_channels 256, 3 anchors per position (num_scales
    1, aspect_ratios (0.5, 1, 2)), fc_dim 1024, roi_aligned False, softmax classification
    with one class fewer than the checkpoint's (its column 0 is the background)."""
    w = _resnet_fpn(sd, variables, backbone, keep)
    levels = sorted(int(k[7:]) for k in w.vars["params"]["FPN_0"] if k.startswith("lateral"))
    w.conv(("rpn", "conv"), w.first("rpn.head.conv.0.0.weight", "rpn.head.conv.weight")[:-7])
    w.conv(("rpn", "objectness"), "rpn.head.cls_logits")
    w.conv(("rpn", "deltas"), "rpn.head.bbox_pred")
    fc6 = w.take("roi_heads.box_head.fc6.weight")  # [F, C * 7 * 7], input flattened as (C, 7, 7)
    channels = w.vars["params"]["FPN_0"][f"output{levels[0]}"]["kernel"].shape[-1]
    side = int(round((fc6.shape[1] / channels) ** 0.5))
    fc6 = fc6.reshape(fc6.shape[0], channels, side, side).transpose(2, 3, 1, 0).reshape(-1, fc6.shape[0])
    w.put(("params", "BoxHead_0", "fc0", "kernel"), fc6)
    w.put(("params", "BoxHead_0", "fc0", "bias"), w.take("roi_heads.box_head.fc6.bias"))
    w.dense(("BoxHead_0", "fc1"), "roi_heads.box_head.fc7")
    cls_w, cls_b = w.take("roi_heads.box_predictor.cls_score.weight"), w.take("roi_heads.box_predictor.cls_score.bias")
    order = np.r_[1 : cls_w.shape[0], 0]  # background: torchvision's first class, jaxdet's last logit
    w.put(("params", "BoxHead_0", "cls", "kernel"), cls_w[order].T)
    w.put(("params", "BoxHead_0", "cls", "bias"), cls_b[order])
    box_w, box_b = w.take("roi_heads.box_predictor.bbox_pred.weight"), w.take("roi_heads.box_predictor.bbox_pred.bias")
    w.put(("params", "BoxHead_0", "box", "kernel"), box_w[4:].T)  # jaxdet has no background box
    w.put(("params", "BoxHead_0", "box", "bias"), box_b[4:])
    return w.vars, w.report.finish(sd)


def torchvision_kind(sd: StateDict) -> str | None:
    """What a torchvision-named state_dict holds: "faster_rcnn", "fcos", "retinanet" (the
    detector whose converter reads it), "resnet" (a classifier or a bare backbone), or None."""
    if "rpn.head.cls_logits.weight" in sd:
        return "faster_rcnn"
    if "head.regression_head.bbox_ctrness.weight" in sd:
        return "fcos"
    if "head.classification_head.cls_logits.weight" in sd:
        return "retinanet"
    if "conv1.weight" in sd or "backbone.body.conv1.weight" in sd:
        return "resnet"
    return None


def load_pretrained(model_config, variables: dict, converter=None, log=print) -> dict:
    """`config.model.detector_weights` (through `converter`, the detector's registered
    torchvision converter) or `backbone_weights` loaded into `variables` ({"params",
    "batch_stats"} of the whole detector); returns the new variables."""
    if model_config.get("detector_weights"):
        if converter is None:
            raise ConfigError(
                f"config.model.detector_weights: the {model_config.name!r} detector has no torchvision converter "
                "(use config.model.backbone_weights for the backbone alone)"
            )
        path = model_config.detector_weights
        variables, report = converter(load_state_dict(path), variables, model_config.backbone)
    elif model_config.get("backbone_weights"):
        path = model_config.backbone_weights
        variables, report = resnet_from_torchvision(load_state_dict(path), variables, model_config.backbone)
    else:
        return variables
    line = f"loaded {len(report.used)} torchvision tensors from {path}"
    if report.unused:  # e.g. a classifier's fc layer: listed, never dropped silently
        more = " ..." if len(report.unused) > 4 else ""
        line += f"; not used: {len(report.unused)} ({', '.join(report.unused[:4])}{more})"
    log(line)
    return variables
