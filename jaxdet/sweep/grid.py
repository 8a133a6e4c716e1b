"""A sweep's grid: `--sweep KEY=V1,V2,...` flags -> the arms' overrides, their names, and
the config of one (arm, seed); `--seeds` ranges."""

from __future__ import annotations

import copy
import itertools
import re
from collections.abc import Sequence

import ml_collections

from jaxdet import config_fields
from jaxdet.errors import ConfigError


def _split_top(text: str) -> list[str]:
    """Splits on the commas outside brackets, so tuple values like (0.5,1.0) and linked
    values like (1,(96,128)) survive."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += (ch in "([") - (ch in ")]")
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    return [*parts, text[start:]]


def _linked(config: ml_collections.ConfigDict, key: str, text: str) -> tuple:
    """One value of a linked axis `k1,k2,...=(v1,v2,...),...`: the fields change together
    (a recipe against another), each value parsed as its own field's type (text as in a
    one-field axis: `('',hflip)`, `(1,0.1,(96,128))`)."""
    keys = key.split(",")
    parts = _split_top(text[1:-1]) if text.startswith("(") and text.endswith(")") else []
    if len(parts) != len(keys):
        raise ConfigError(
            f"--sweep {key}=...: each value must be a tuple of {len(keys)} values, one per field, e.g. "
            f"({','.join('v' + str(i + 1) for i in range(len(keys)))}); got {text!r}"
        )
    return tuple(config_fields.parse_field(config, k, v.strip()) for k, v in zip(keys, parts))


def _fields(overrides: dict[str, object]) -> list[tuple[str, object]]:
    """(field, value) pairs, a linked axis' key and tuple spread over its fields."""
    out = []
    for key, value in overrides.items():
        out.extend(zip(key.split(","), value) if "," in key else [(key, value)])
    return out


def parse_sweep(config: ml_collections.ConfigDict, specs: Sequence[str]) -> list[dict[str, object]]:
    """['a.b=1,2', 'c.d=x,y'] -> the grid of overrides [{'a.b': 1, 'c.d': 'x'}, ...]. A key
    naming several fields, 'a.b,c.d=(1,x),(2,y)', is one axis whose fields change together."""
    axes = []
    for spec in specs:
        if "=" not in spec:
            raise ConfigError(f"--sweep {spec!r}: expected KEY=VALUE1,VALUE2,...")
        key, values = spec.split("=", 1)
        key = ",".join(k.strip() for k in key.split(","))
        if "seed" in key.split(","):
            raise ConfigError("sweep over seeds with --seeds, not --sweep seed=...")
        if "train.cpu_devices" in key.split(","):  # (JAX's CPU device count is set once per process)
            raise ConfigError(
                "--sweep train.cpu_devices=...: the CPU device count is one per process; set it for the whole "
                "sweep with --config.train.cpu_devices=N, or run one sweep per count"
            )
        items = [v.strip() for v in _split_top(values) if v.strip()]
        if not items:
            raise ConfigError(f"--sweep {spec!r}: no values")
        if "," in key:
            axes.append([(key, _linked(config, key, v)) for v in items])
        else:
            axes.append([(key, config_fields.parse_field(config, key, v)) for v in items])
    return [dict(combo) for combo in itertools.product(*axes)]


def arm_name(overrides: dict[str, object]) -> str:
    """A readable, filesystem-safe name: 'loss.localization=giou,optim.learning_rate=0.001'."""
    text = ",".join(f"{k}={v}" for k, v in _fields(overrides))
    return re.sub(r"[^A-Za-z0-9_.=,+-]", "_", text) or "base"


def apply(config: ml_collections.ConfigDict, overrides: dict[str, object], seed: int) -> ml_collections.ConfigDict:
    cfg = copy.deepcopy(config)
    for key, value in _fields(overrides):
        config_fields.set_field(cfg, key, value)
    cfg.seed = seed
    return cfg


def parse_seeds(items: Sequence[str]) -> list[int]:
    """--seeds items ("0", "3-5": both ends included) -> the seeds, in order, each once."""
    seeds: list[int] = []
    for item in items:
        match = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", item)
        if not match or (match[2] is not None and int(match[2]) < int(match[1])):
            raise ConfigError(f"--seeds {item!r}: expected a seed (3) or an increasing range (0-9), comma-separated")
        first, last = int(match[1]), int(match[2] if match[2] is not None else match[1])
        seeds += [s for s in range(first, last + 1) if s not in seeds]
    if not seeds:
        raise ConfigError("--seeds: no seeds; e.g. --seeds=0-2")
    return seeds
