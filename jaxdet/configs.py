"""Config checks at start-up, and the config record kept in the workdir.

Everything here runs before any JAX work so a bad config fails in a second with a
message naming the field and the valid values, not with a traceback from inside jit.
"""

from __future__ import annotations

import hashlib
import json
import os

import jax
import ml_collections

from jaxdet import config_fields, files, kernels
from jaxdet.data import sources
from jaxdet.data.classes import Classes
from jaxdet.detectors import config as model_config
from jaxdet.errors import ConfigError
from jaxdet.models.backbones import BACKBONES
from jaxdet.models.layers import NORMS
from jaxdet.models.necks import NECKS

# Sections whose change makes a checkpoint meaningless (resume refuses them).
MODEL_SECTIONS = ("model", "data")
# Fields of those sections that do not change what is trained (a resume may change them freely).
# data.skip_bad: the error for an unreadable image suggests turning it on, so a resume must accept it.
RESULT_NEUTRAL = ("data.workers", "data.skip_bad", "data.allow_no_boxes", *model_config.RESULT_NEUTRAL)


def resolve(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The config a run uses and records: the model section resolved (the chosen detector's
    section only, loss-implied fields recorded) and config.loss with the chosen detector's
    loss terms, every loss name checked (see detectors/config.py)."""
    return model_config.resolve(config)


def validate(config: ml_collections.ConfigDict, num_devices: int, num_processes: int = 1) -> None:
    """Raises ConfigError naming the first bad field of `config` (a resolved config). (The
    optimizer's names are training.optim.check's; train.best_metric, an evaluation metric's
    name, evaluation.coco.check_metric's.)"""
    section = config.model[config.model.name]
    config_fields.check_seeds(config)
    if config.model.backbone not in BACKBONES:
        raise ConfigError(
            f"unknown backbone {config.model.backbone!r} (config.model.backbone); valid names: {sorted(BACKBONES)}"
        )
    if config.model.backbone_norm not in NORMS:
        raise ConfigError(f"unknown norm {config.model.backbone_norm!r} (config.model.backbone_norm); valid: {NORMS}")
    if config.model.neck and config.model.neck not in NECKS:
        raise ConfigError(f"unknown neck {config.model.neck!r} (config.model.neck); valid: '' or {sorted(NECKS)}")
    if config.model.neck_extra not in ("conv", "pool"):
        raise ConfigError(f"config.model.neck_extra={config.model.neck_extra!r}; valid: 'conv', 'pool'")
    kernels.resolve(config.model.kernels, "cpu")  # refuses an unknown policy
    for field in ("backbone_weights", "detector_weights"):
        path = config.model.get(field, "")
        if path and not os.path.isfile(os.path.expanduser(path)):
            raise ConfigError(f"config.model.{field}={path!r}: no such file (a torchvision .pth or .safetensors)")
        if path and config.model.get("init_from"):
            raise ConfigError(
                f"config.model.init_from and config.model.{field} are both set: use one (init_from reads "
                "torchvision files too)"
            )

    if config.model.get("detector_weights") and model_config.get_definition(config.model.name).convert is None:
        have = sorted(name for name, definition in model_config.DETECTORS.items() if definition.convert)
        raise ConfigError(
            f"config.model.detector_weights: no torchvision converter for {config.model.name!r}; detectors with one: "
            f"{have} (use config.model.backbone_weights for the backbone alone)"
        )
    if config.model.get("backbone_weights") and config.model.backbone not in ("resnet18", "resnet34", "resnet50"):
        raise ConfigError(
            f"config.model.backbone_weights needs a torchvision ResNet: backbone resnet18, resnet34 or resnet50, "
            f"not {config.model.backbone!r}"
        )
    head_norm = section.get("head_norm", "none")
    if head_norm not in ("group", "none"):
        raise ConfigError(
            f"config.model.{config.model.name}.head_norm={head_norm!r} is not supported; use 'group' or 'none'"
        )
    if config.train.compute_dtype not in ("float32", "bfloat16", "float16"):
        raise ConfigError(
            f"config.train.compute_dtype={config.train.compute_dtype!r}; valid: float32, bfloat16, float16"
        )
    b = config.train.batch_size
    if not isinstance(b, int) or b <= 0:
        raise ConfigError(
            f"config.train.batch_size={b!r}: the global batch must be a positive number of images, e.g. "
            f"{8 * num_devices} (a multiple of the {num_devices} device(s))"
        )
    if b % num_devices:
        raise ConfigError(
            f"config.train.batch_size={b} (global) is not divisible by the {num_devices} devices; "
            f"use a multiple of {num_devices}, e.g. {max(1, round(b / num_devices)) * num_devices}"
        )
    if b % num_processes:
        raise ConfigError(f"config.train.batch_size={b} is not divisible by the {num_processes} processes")
    if config.train.eval_batch_size <= 0:  # (rounded up to a multiple of the devices: eval_batch_size())
        raise ConfigError(f"config.train.eval_batch_size must be positive, got {config.train.eval_batch_size}")
    for field in ("steps", "eval_every", "checkpoint_every", "log_every"):
        if config.train[field] <= 0:
            raise ConfigError(f"config.train.{field} must be positive, got {config.train[field]}")
    sources.validate(config.data)
    if config.train.early_stop_patience < 0:
        raise ConfigError(f"config.train.early_stop_patience must be >= 0, got {config.train.early_stop_patience}")
    if not isinstance(config.data.max_boxes, int) or config.data.max_boxes < 0:
        raise ConfigError(
            f"config.data.max_boxes must be an integer >= 0 (0 = the training split's most boxes per image), "
            f"got {config.data.max_boxes!r}"
        )
    if not 0.0 <= config.data.crop_prob <= 1.0 or not 0.0 < config.data.crop_min <= 1.0:
        raise ConfigError(
            f"need data.crop_prob in [0, 1] and data.crop_min in (0, 1], got {config.data.crop_prob}, "
            f"{config.data.crop_min}"
        )
    jitter = tuple(config.data.color_jitter)
    if len(jitter) != 4 or min(jitter) < 0 or max(jitter[:3]) > 1 or jitter[3] > 0.5:
        raise ConfigError(
            f"config.data.color_jitter={jitter}: need (brightness, contrast, saturation, hue) with the first "
            "three in [0, 1] and hue in [0, 0.5]"
        )
    if not isinstance(config.data.workers, int):
        raise ConfigError(f"config.data.workers must be an integer (-1 = automatic), got {config.data.workers!r}")
    if not 0.0 <= config.data.mosaic_prob <= 1.0:
        raise ConfigError(f"config.data.mosaic_prob must be in [0, 1], got {config.data.mosaic_prob}")
    d = config.data
    if not 0.0 <= d.get("mixup_prob", 0.0) <= 1.0:
        raise ConfigError(f"config.data.mixup_prob must be in [0, 1], got {d.mixup_prob}")
    if not 0 <= d.get("close_mosaic_steps", 0) <= config.train.steps:
        raise ConfigError(f"config.data.close_mosaic_steps={d.close_mosaic_steps} must be in [0, train.steps]")
    for name, top in (("degrees", 180.0), ("translate", 1.0), ("scale", 1.0), ("shear", 89.0)):
        value = d.get(f"affine_{name}", 0.0)
        if not 0.0 <= value <= top:
            raise ConfigError(f"config.data.affine_{name}={value} must be in [0, {top}] (0 = off)")
    check_sizes("config.data.train_sizes", d.get("train_sizes", ()), config.model.max_level)
    if not 0 < config.data.scale_min <= config.data.scale_max:
        raise ConfigError(
            f"need 0 < data.scale_min <= data.scale_max, got {config.data.scale_min}, {config.data.scale_max}"
        )


def check_sizes(field: str, sizes, max_level: int) -> tuple[int, ...]:
    """`sizes` (canvas sides of multi-scale training or TTA) as a tuple; ConfigError naming
    `field` unless each is a multiple of the largest stride 2^max_level."""
    sizes, stride = tuple(sizes), 2**max_level
    if any(not isinstance(size, int) or size < stride or size % stride for size in sizes):
        near = sorted({max(stride, round(size / stride) * stride) for size in sizes if isinstance(size, int | float)})
        raise ConfigError(
            f"{field}={sizes}: each size must be a multiple of the largest stride, {stride} px "
            f"(2^model.max_level), e.g. {tuple(near)}"
        )
    return sizes


def eval_batch_size(config: ml_collections.ConfigDict, num_devices: int) -> int:
    """The global evaluation batch: config.train.eval_batch_size rounded up to a multiple of
    the devices (the added slots are padding images, masked out as in the last batch)."""
    return -(-config.train.eval_batch_size // num_devices) * num_devices


def to_json(config: ml_collections.ConfigDict) -> str:
    return json.dumps(config.to_dict(), indent=2, sort_keys=True, default=list)


def fingerprint(config: ml_collections.ConfigDict) -> str:
    """A short hash of the whole config (processes compare it at start-up)."""
    return hashlib.sha256(to_json(config).encode()).hexdigest()[:16]


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = list(v) if isinstance(v, tuple) else v
    return out


def _changes(old: dict, new: dict) -> dict[str, str]:
    """{key: "  key: old -> new"} for every (flattened) field that differs, sorted by key."""
    a, b = _flatten(old), _flatten(new)
    changes = {}
    for key in sorted(set(a) | set(b)):
        before, after = a.get(key, "<absent>"), b.get(key, "<absent>")
        if before != after:
            changes[key] = f"  {key}: {before!r} -> {after!r}"
    return changes


def diff(old: dict, new: dict, sections: tuple[str, ...] | None = None) -> list[str]:
    """Lines `key: old -> new` for fields that differ (within `sections` if given)."""
    return [line for key, line in _changes(old, new).items() if not sections or key.split(".")[0] in sections]


def check_resume(config: ml_collections.ConfigDict, workdir: str, resuming: bool) -> list[str]:
    """When resuming, compares `config` with workdir/config.json (nothing is written).

    A changed model or data section is refused (ConfigError with a diff) unless
    `config.train.allow_config_change`; returns the lines to log about what changed.
    """
    path = os.path.join(workdir, "config.json")
    new = json.loads(to_json(config))
    notes: list[str] = []
    if resuming and os.path.exists(path):
        with open(path) as f:
            old = json.load(f)
        model_config.refuse_flat(old, path)
        changes, recorded = _changes(old, new), _flatten(old)
        for key, (was, now) in _state_shape(old, new).items():
            if was != now:  # the checkpoints' trees differ: no restore could work
                raise ConfigError(
                    f"{workdir} holds checkpoints written with {key} = {was}; this config has {now}, which "
                    "changes what a checkpoint holds (optimizer state or EMA). Use a new --workdir, or keep the value."
                )
        # Fields the recorded config lacks were added to jaxdet since: logged, not refused.
        added = [line for key, line in changes.items() if key not in recorded]
        model = [
            (key.split(".")[0] in MODEL_SECTIONS and key not in RESULT_NEUTRAL, line)
            for key, line in changes.items()
            if key in recorded
        ]
        changed = [line for is_model, line in model if is_model]
        others = [line for is_model, line in model if not is_model]
        if changed and not config.train.get("allow_config_change", False):
            changed_keys = [key for key in changes if key in recorded and changes[key] in changed]
            raise ConfigError(
                f"{workdir} holds checkpoints of a different model/data config; changed fields:\n"
                + "\n".join(changed + model_config.implied_fields_note(changed_keys))
                + "\nUse a new --workdir, restore the original values, or pass "
                "--config.train.allow_config_change=True to resume anyway."
            )
        if added:
            notes.append("fields not in the recorded config (added to jaxdet since), taking these values:")
            notes += added
        if changed:
            notes.append("resuming with a changed model/data config (train.allow_config_change=True):")
            notes += changed
        if others:
            notes.append("resuming with changed settings:")
            notes += others
        old_steps, new_steps = old.get("train", {}).get("steps"), config.train.steps
        if old_steps is not None and old_steps != new_steps:
            notes.append(f"train.steps {old_steps} -> {new_steps}: the learning-rate schedule follows the new length")
    return notes


def _state_shape(old: dict, new: dict) -> dict[str, tuple]:
    """{what: (old, new)} for the settings (of two recorded configs) that shape a checkpoint's trees."""

    def shape(config: dict) -> dict:
        optim = config.get("optim", {})
        groups = [(g[0], bool(g[3]) if len(g) > 3 else False) for g in optim.get("param_groups") or []]
        return {
            "model.frozen_stages": config.get("model", {}).get("frozen_stages", -1),
            "optim.name": optim.get("name"),
            "optim.accumulate_steps > 1": optim.get("accumulate_steps", 1) > 1,
            "optim.ema_decay > 0 (an EMA)": optim.get("ema_decay", 0.0) > 0,
            "optim.param_groups' (regex, frozen)": groups,
        }

    was, now = shape(old), shape(new)
    return {key: (was[key], now[key]) for key in was}


def record(config: ml_collections.ConfigDict, workdir: str) -> None:
    """Writes workdir/config.json (process 0; via a temporary file and a rename)."""
    os.makedirs(workdir, exist_ok=True)
    if jax.process_index() != 0:  # one writer: every process checked, process 0 records
        return
    files.write_atomic(os.path.join(workdir, "config.json"), to_json(config))


def load_recorded(workdir: str) -> tuple[ml_collections.ConfigDict, Classes]:
    """The config (resolved) and classes a run recorded in its workdir: what evaluation
    and prediction need besides the checkpoints, so neither reads the training split."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise ConfigError(f"{path} does not exist: is {workdir!r} the workdir of a jaxdet run?")
    with open(path) as f:
        recorded = json.load(f)
    model_config.refuse_flat(recorded, path)
    return resolve(ml_collections.ConfigDict(recorded)), Classes.read(workdir)
