"""A config field addressed by its dotted key ("loss.focal_gamma"): the typed value of a
KEY=VALUE flag's text (sweeps' --sweep, the anatomy's --loss) and setting it."""

from __future__ import annotations

import ast

import ml_collections

from jaxdet.errors import ConfigError

SEED_PARTS = ("init", "data", "step")


def seed_of(config: ml_collections.ConfigDict, part: str) -> int:
    """The seed of one source of a run's randomness: config.seeds.<part> where set (>= 0),
    else config.seed. "init": the parameters' initialisation; "data": the data order and
    the augmentation and multi-scale draws; "step": the train step's own draws (dropout,
    DETR's denoising noise). One seed for all three unless a variance study splits them."""
    seeds = config.get("seeds")
    value = seeds.get(part, -1) if seeds is not None else -1
    return int(config.seed if value is None or value < 0 else value)


def check_seeds(config: ml_collections.ConfigDict) -> None:
    """ConfigError naming a config.seeds field that is not an int >= -1, or an unknown part."""
    for part, value in (config.get("seeds") or {}).items():
        if part not in SEED_PARTS:
            raise ConfigError(f"config.seeds.{part}: no such part of the seed; parts: {', '.join(SEED_PARTS)}")
        if isinstance(value, bool) or not isinstance(value, int) or value < -1:
            raise ConfigError(f"config.seeds.{part}={value!r}: an int >= 0, or -1 for config.seed")


def parse_field(config: ml_collections.ConfigDict, key: str, text: str, flag: str = "--sweep"):
    """Parses `text` as the type of the existing field `key` of `config` (a ConfigError naming
    `flag` if there is none): the typed value of a KEY=VALUE flag (sweeps, the anatomy's --loss)."""
    node = config
    parts = key.split(".")
    for p in parts[:-1]:
        if p not in node:
            raise ConfigError(f"{flag} key {key!r}: the config has no section {p!r}")
        node = node[p]
    if parts[-1] not in node:
        raise ConfigError(f"{flag} key {key!r}: the config has no field {parts[-1]!r}; fields: {sorted(node.keys())}")
    current = node[parts[-1]]
    if isinstance(current, bool):
        if text.lower() not in ("true", "false"):
            raise ConfigError(f"{flag} {key}={text}: expected True or False")
        return text.lower() == "true"
    if isinstance(current, (int, float)):
        try:
            return type(current)(float(text)) if isinstance(current, float) else int(text)
        except ValueError:
            raise ConfigError(
                f"{flag} {key}={text}: expected {'a number' if isinstance(current, float) else 'an integer'}"
            ) from None
    if isinstance(current, (tuple, list)):
        return tuple(ast.literal_eval(text))
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]  # quoted, as an empty value must be: eval.tta='',hflip
    return text


def set_field(config: ml_collections.ConfigDict, key: str, value) -> None:
    """config.<key> = value, for a dotted `key` whose sections exist."""
    node = config
    *parents, leaf = key.split(".")
    for part in parents:
        node = node[part]
    node[leaf] = value
