"""config.model: the fields every detector shares and the chosen detector's own section.

    config.model.name = "retinanet"       # picks the detector
    config.model.backbone, .neck, ...      # shared: backbone, neck, classes, post-processing
    config.model.retinanet.fg_iou = 0.5    # the chosen detector's own fields (its module's `section()`)

A recipe names one detector (`model_config(name)`, or `use_detector` on a recipe built
for another); config.model holds that detector's section only, as big_vision's
per-model config dicts. `resolve` fills in its defaults, refuses an unknown field and
another detector's changed fields (naming who reads them), records the architecture the
losses imply, and gives config.loss the detector's named loss terms.
"""

from __future__ import annotations

import copy
from typing import Any

import ml_collections

from jaxdet.detectors.base import DETECTORS, get_definition
from jaxdet.errors import ConfigError
from jaxdet.losses import terms as loss_terms

# The fields every detector reads, with their defaults.
SHARED: dict[str, Any] = dict(
    name="retinanet",
    num_classes=0,  # 0 = as many as the data has; more keeps room for classes to come
    backbone="resnet_small",
    backbone_norm="batch",
    # ResNet stages whose parameters are not trained (mmdetection's frozen_stages; torchvision's
    # trainable_backbone_layers = 4 - k): -1 none, 0 the stem, k the stem and stages 1..k.
    frozen_stages=-1,
    # A torchvision ResNet state_dict (.pth) loaded into the backbone at initialisation ("" = none);
    # see jaxdet/models/convert.py. With backbone_norm="frozen_batch" its norms stay fixed.
    backbone_weights="",
    # A whole torchvision detector state_dict (retinanet_resnet50_fpn, fcos_resnet50_fpn,
    # fasterrcnn_resnet50_fpn), "" = none.
    detector_weights="",
    # Fine-tuning: the first weights from a jaxdet workdir (":best", ":<step>"), a torchvision .pth
    # or a .safetensors file, onto this run's classes (jaxdet/training/init_from.py); "" = none.
    init_from="",
    # BatchNorm statistics over the global batch when the mesh has several devices (detectron2's
    # SyncBN), so a run's result does not depend on how many devices share its batch.
    sync_batch_norm=True,
    neck="",  # "" = the detector's own ("fpn", "pan", "ssd_extras"; jaxdet.models.necks.NECKS)
    neck_channels=64,
    # FPN/PAN levels above the backbone's top: "conv" (stride-2 3x3 convs, RetinaNet's P6/P7) or
    # "pool" (every other pixel of the level below, torchvision Faster R-CNN's P6).
    neck_extra="conv",
    min_level=3,
    max_level=5,
    # Kernel forms (jaxdet.kernels): "auto" = the CPU forms on a CPU mesh, "cpu", "plain".
    kernels="auto",
    # Post-processing: per-class top-k before NMS, score threshold, NMS IoU, detections kept.
    pre_nms_topk=1000,
    score_threshold=0.05,
    nms_iou_threshold=0.5,
    max_detections=100,
)

# Fields that change how a run computes but not what it computes: a resume may change them.
RESULT_NEUTRAL = ("model.kernels",)


def model_config(name: str = "retinanet", **shared) -> ml_collections.ConfigDict:
    """A whole config.model: the shared fields (overridden by `shared`) and detector
    `name`'s section at its defaults."""
    unknown = set(shared) - set(SHARED)
    if unknown:
        raise ConfigError(f"model_config: unknown shared fields {sorted(unknown)}; valid: {sorted(SHARED)}")
    model = ml_collections.ConfigDict({**SHARED, **shared, "name": name})
    model[name] = ml_collections.ConfigDict(get_definition(name).section())
    return model


def use_detector(config: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
    """Makes `config` (a recipe built for another detector, e.g. `default.py:tiny`) one for
    detector `name`: config.model.name, `name`'s section at its defaults in place of the
    other's (the shared fields stay), and config.loss with `name`'s loss-term fields
    (`use_loss_terms`). Returns `config`."""
    section = ml_collections.ConfigDict(get_definition(name).section())
    for det in DETECTORS:
        if det in config.model:
            del config.model[det]
    config.model.name = name
    config.model[name] = section
    if "loss" in config:
        use_loss_terms(config.loss, name)
    return config


def _term_weight_fields() -> set[str]:
    """Every registered detector's `<term>_weight` fields (terms not named after a family)."""
    return {f"{t}_weight" for d in DETECTORS.values() for t in d.terms if t not in loss_terms.FAMILIES}


def use_loss_terms(loss: ml_collections.ConfigDict, name: str) -> None:
    """Gives config.loss detector `name`'s term fields: loss.terms.<term> = "" (its family's
    loss) and loss.<term>_weight = None (its family's weight); another detector's go."""
    section, weights = loss_terms.config_fields(get_definition(name).terms)
    loss.terms = section
    for key in _term_weight_fields():
        if key in loss:
            del loss[key]
    for key, value in weights.items():
        loss[key] = value


def _resolve_terms(loss: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
    """config.loss with detector `name`'s term fields: the values set for its terms kept, another
    detector's unset term fields dropped, a set one refused (ConfigError naming the term)."""
    definition = get_definition(name)
    out = copy.deepcopy(loss)
    out.unlock()  # (a config from the command line is locked; this copy changes its fields)
    given = out.get("terms") or ml_collections.ConfigDict()
    use_loss_terms(out, name)
    valid = ", ".join(f"{t} ({f})" for t, f in definition.terms.items())
    for term in given.keys():
        if term in definition.terms:
            out.terms[term] = given[term]
        elif given[term]:
            raise ConfigError(
                f"config.loss.terms.{term}={given[term]!r}: {name} has no loss term {term!r}; its terms: {valid}"
            )
    for key in _term_weight_fields():
        if key in loss and key in out:
            out[key] = loss[key]
        elif key in loss and loss[key] is not None:
            raise ConfigError(
                f"config.loss.{key}={loss[key]!r}: {name} has no loss term {key.removesuffix('_weight')!r}; "
                f"its terms: {valid}"
            )
    loss_terms.check(out, definition.terms, name)
    return out


def _plain(value):
    return [_plain(v) for v in value] if isinstance(value, list | tuple) else value


def resolve(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A copy of `config` whose model section holds the shared fields and the chosen
    detector's section only (defaults filled in, loss-implied fields recorded).

    Raises ConfigError naming the field for a field no detector reads, a changed field of
    another detector's section, or an unknown field of the chosen one.
    """
    config = copy.deepcopy(config)
    model = config.model
    name = model.get("name", SHARED["name"])
    definition = get_definition(name)
    out = ml_collections.ConfigDict()
    for key in model.keys():
        value = model[key]
        if key in SHARED:
            out[key] = value
        elif key in DETECTORS and key != name:
            defaults = DETECTORS[key].section()
            changed = [f for f in value.keys() if f not in defaults or _plain(value[f]) != _plain(defaults[f])]
            if changed:
                raise ConfigError(
                    f"config.model.{key}.{changed[0]}={value[changed[0]]!r} is read by the {key} detector, but "
                    f"config.model.name={name!r}; set --config.model.name={key} or leave config.model.{key} alone"
                )
        elif key != name:
            raise ConfigError(_unknown_field(key, name))
    for key, default in SHARED.items():
        if key not in out:
            out[key] = default
    defaults = definition.section()
    section = model.get(name) or ml_collections.ConfigDict()
    config.loss = _resolve_terms(config.loss, name)
    implied = definition.implied(config.loss, definition.terms)
    for key in section.keys():
        if key not in defaults and key not in implied:
            raise ConfigError(f"config.model.{name}.{key}: {name} has no such field; its fields: {sorted(defaults)}")
    resolved = ml_collections.ConfigDict({**defaults, **section.to_dict()})
    for key, value in implied.items():
        if key in section and bool(section[key]) != value:
            raise ConfigError(
                f"config.model.{name}.{key}={section[key]!r} contradicts config.loss ({key} follows the losses: "
                f"{_IMPLIED_BY[key]}); leave it unset"
            )
        resolved[key] = value
    out[name] = resolved
    config.model = out
    return config


def is_resolved(config: ml_collections.ConfigDict) -> bool:
    """Whether `config` is `resolve`'s output, unchanged where it matters (so building from
    it need not resolve it again): config.model holds the shared fields and its detector's
    whole section with the architecture its losses imply, config.loss that detector's terms."""
    model, name = config.model, config.model.get("name")
    if name not in DETECTORS or set(model.keys()) != set(SHARED) | {name} or "loss" not in config:
        return False
    definition, section = DETECTORS[name], model[name]
    terms = config.loss.get("terms")
    if terms is None or set(terms.keys()) != set(definition.terms) or not set(definition.section()) <= set(section):
        return False
    implied = definition.implied(config.loss, definition.terms)
    return all(key in section and section[key] == value for key, value in implied.items())


_IMPLIED_BY = {
    "background_logit": "a softmax config.loss.classification adds a background logit",
    "quality_branch": "a config.loss.confidence other than 'none' adds a quality branch",
}


def implied_fields_note(changed_keys: list[str]) -> list[str]:
    """Why a changed loss-implied field changes the parameters (for the resume refusal)."""
    return [
        f"  ({key}: {_IMPLIED_BY[key.rsplit('.', 1)[-1]]}, which changes the parameters)"
        for key in changed_keys
        if key.rsplit(".", 1)[-1] in _IMPLIED_BY
    ]


def unknown_field_message(model, parts: list[str]) -> str:
    """Why `config.model.<parts>` (an override's whole path below config.model, some part
    of it missing) is not a field: which detector reads it, or what the section holds."""
    name = model.get("name", SHARED["name"])
    if parts[0] in DETECTORS and parts[0] != name and parts[0] not in model:
        return (
            f"config.model.{'.'.join(parts)} is read by the {parts[0]} detector, but config.model.name={name!r}, "
            f"and a config holds its own detector's section only; start from a config for {parts[0]} (its recipe "
            "under experiments/configs/)"
        )
    node, depth = model, 0
    while depth < len(parts) and hasattr(node, "keys") and parts[depth] in node.keys():
        node, depth = node[parts[depth]], depth + 1
    parts = parts[: depth + 1]
    if len(parts) == 1:
        return _unknown_field(parts[0], name)
    path = "config.model." + ".".join(parts)
    section, field = parts[-2], parts[-1]
    if len(parts) > 2 or section not in DETECTORS:
        return f"{path}: config.model.{'.'.join(parts[:-1])} is a value, not a section"
    if field in _IMPLIED_BY:
        return f"{path} follows the losses ({_IMPLIED_BY[field]}): set config.loss instead"
    readers = [f"config.model.{d}.{field}" for d, definition in DETECTORS.items() if field in definition.section()]
    read_by = f"; it is read as {', '.join(readers)}" if readers else ""
    return f"{path}: {section} has no such field{read_by}; {section}'s fields: {sorted(DETECTORS[section].section())}"


def _unknown_field(key: str, name: str) -> str:
    readers = [f"config.model.{det}.{key}" for det, definition in DETECTORS.items() if key in definition.section()]
    if readers:
        return (
            f"config.model.{key} is not a shared field: it is read as {', '.join(readers)} (config.model.name={name!r})"
        )
    return (
        f"config.model.{key}: no detector reads it; shared fields: {sorted(SHARED)}, "
        f"and config.model.{name} (the chosen detector's section)"
    )


def refuse_flat(recorded: dict, path: str) -> None:
    """ConfigError for a config recorded before per-detector model sections (no section of
    its detector: jaxdet before 2026-11-24, development machines only)."""
    model = recorded.get("model", {})
    if isinstance(model, dict) and not isinstance(model.get(model.get("name", ""), None), dict):
        raise ConfigError(
            f"{path} records a flat config.model (jaxdet before per-detector model sections, 2026-11-27); this "
            "version reads only configs with one section per detector. Train again in a new workdir, or "
            "evaluate it with a jaxdet checkout of that time (git log before 2026-11-27)."
        )
