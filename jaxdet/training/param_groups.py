"""Parameter groups (`config.optim.param_groups`): per-group learning-rate and weight-decay
multipliers, and frozen parameters, as big_vision's `lr_mults` / `wd_mults` and
torchvision's frozen backbone layers.

A group is `(regex, lr_mult, wd_mult, frozen)`; a parameter belongs to the first group
whose regex `re.search`-matches its path ("ResNet_0/Bottleneck_3/Conv_0/kernel": module
names joined by "/"), else to the default group (x1, x1, trained). A frozen parameter gets
no update and no optimizer state, and its gradient is left out of gradient clipping (as a
torch parameter with requires_grad=False). BatchNorm statistics are not parameters: they
follow `model.backbone_norm` ("frozen_batch" keeps them fixed).
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import jax

from jaxdet.errors import ConfigError

DEFAULT = "default"


@dataclasses.dataclass(frozen=True)
class Group:
    pattern: str
    lr_mult: float = 1.0
    wd_mult: float = 1.0
    frozen: bool = False
    name: str = ""  # for the log (default: the pattern)

    @property
    def label(self) -> str:
        return self.name or f"{self.pattern!r}"


_BLOCK = "(Bottleneck|BasicBlock)_"


def frozen_stages(model) -> list[Group]:
    """The groups `model.frozen_stages` k implies for a ResNet backbone (mmdetection's
    `frozen_stages`; torchvision's `trainable_backbone_layers` = 4 - k): -1 none, 0 the stem,
    k the stem and the first k stages' blocks (the backbone's parameters sit under
    "ResNet_0/": Conv_0 and its norm, then the blocks numbered through the stages)."""
    from jaxdet.models.backbones import ResNetSpec, get_backbone_spec

    k = model.get("frozen_stages", -1)
    if k == -1:
        return []
    spec = get_backbone_spec(model.backbone)
    if not isinstance(spec, ResNetSpec):
        raise ConfigError(
            f"config.model.frozen_stages={k} needs a ResNet backbone; {model.backbone!r} has no stages to freeze "
            "(use optim.param_groups with frozen=True for its modules)"
        )
    if not isinstance(k, int) or not -1 <= k <= len(spec.stage_sizes):
        raise ConfigError(
            f"config.model.frozen_stages={k!r} must be -1 (none), 0 (the stem) or 1..{len(spec.stage_sizes)} "
            "(the stem and that many stages)"
        )
    groups = [Group(f"(^|/)ResNet_0/(?!{_BLOCK})", frozen=True, name=f"model.frozen_stages={k}: the stem")]
    blocks = sum(spec.stage_sizes[:k])
    if blocks:
        ids = "|".join(str(i) for i in range(blocks))
        groups.append(
            Group(f"(^|/)ResNet_0/{_BLOCK}({ids})/", frozen=True, name=f"model.frozen_stages={k}: stages 1-{k}")
        )
    return groups


def of_config(optim, model=None) -> list[Group]:
    """Every group: those `model.frozen_stages` implies, then `optim.param_groups`."""
    return (frozen_stages(model) if model is not None else []) + parse(optim)


def parse(optim) -> list[Group]:
    """The groups `optim.param_groups` lists (ConfigError naming a malformed entry)."""
    raw = optim.get("param_groups", ()) or ()
    groups = []
    for i, entry in enumerate(raw):
        entry = tuple(entry) if isinstance(entry, (list, tuple)) else (entry,)
        ok = 1 <= len(entry) <= 4 and isinstance(entry[0], str)
        if ok:
            try:
                re.compile(entry[0])
                group = Group(entry[0], *entry[1:])
                ok = all(isinstance(x, (int, float)) and x >= 0 for x in (group.lr_mult, group.wd_mult))
                ok = ok and isinstance(group.frozen, bool)
            except (re.error, TypeError):
                ok = False
        if not ok:
            raise ConfigError(
                f"config.optim.param_groups[{i}]={entry!r}: each group is (regex, lr_mult >= 0, wd_mult >= 0, "
                "frozen: bool), e.g. ('^ResNet_0/', 0.1, 1.0, False) or ('^ResNet_0/(Conv_0|BatchNorm_0)/', 1, 1, True)"
            )
        groups.append(group)
    return groups


def flatten(tree: Any) -> dict[str, Any]:
    """{"ResNet_0": {"Conv_0": {"kernel": x}}} -> {"ResNet_0/Conv_0/kernel": x}: the path names
    the groups' regexes match (and init_from's tensor names, with "params/" in front)."""
    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {"/".join(str(getattr(k, "key", k)) for k in path): leaf for path, leaf in flat}


def _paths(params: Any) -> list[str]:
    return list(flatten(params))


def labels(params: Any, groups: list[Group]) -> Any:
    """A tree like `params` of group indices as strings ("0", "1", ...) or DEFAULT."""

    def label(path: str) -> str:
        return next((str(i) for i, g in enumerate(groups) if re.search(g.pattern, path)), DEFAULT)

    return jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(params), [label(p) for p in _paths(params)])


def frozen_mask(params: Any, groups: list[Group]) -> Any:
    """A tree like `params`: True where the parameter's group is frozen."""
    frozen = {str(i) for i, g in enumerate(groups) if g.frozen}
    return jax.tree_util.tree_map(lambda label: label in frozen, labels(params, groups))


def describe(params: Any, groups: list[Group]) -> list[str]:
    """One line per group with its parameter count, for the run's log; ConfigError for a
    group no parameter falls in (a regex that matches nothing is a typo, not a no-op)."""
    if not groups:
        return []
    sizes = [x.size for x in jax.tree_util.tree_leaves(params)]
    tags = jax.tree_util.tree_leaves(labels(params, groups))
    lines = []
    for key, name in [(str(i), g.label) for i, g in enumerate(groups)] + [(DEFAULT, "the rest")]:
        count = sum(s for s, t in zip(sizes, tags) if t == key)
        if key == DEFAULT:
            lines.append(f"param group {name}: lr x1, weight decay x1: {count:,} parameters")
            continue
        g = groups[int(key)]
        if count == 0:
            raise ConfigError(
                f"config.optim.param_groups: no parameter matches {g.pattern!r} (or an earlier group took them); "
                f"parameter paths look like {_paths(params)[:3]}"
            )
        what = "frozen" if g.frozen else f"lr x{g.lr_mult:g}, weight decay x{g.wd_mult:g}"
        lines.append(f"param group {name}: {what}: {count:,} parameters")
    return lines
