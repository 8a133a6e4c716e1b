"""One factory: `config.optim` -> an optax chain (clipping, weight decay, optimizer, schedule)."""

from __future__ import annotations

import jax
import optax

from jaxdet.errors import ConfigError
from jaxdet.training import param_groups

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop")
SCHEDULES = ("cosine", "step", "constant")


def check(optim) -> None:
    """ConfigError for an optimizer or schedule name `config.optim` gives that is not one here."""
    if optim.name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {optim.name!r} (config.optim.name); valid: {OPTIMIZERS}")
    if optim.schedule not in SCHEDULES:
        raise ConfigError(f"unknown schedule {optim.schedule!r} (config.optim.schedule); valid: {SCHEDULES}")
    param_groups.parse(optim)


def learning_rate_schedule(optim, total_steps: int) -> optax.Schedule:
    """Linear warmup from 0 to `optim.learning_rate`, then cosine / step decay / constant."""
    base, warmup = optim.learning_rate, min(optim.warmup_steps, total_steps)
    if optim.schedule == "cosine":
        after = optax.cosine_decay_schedule(base, max(total_steps - warmup, 1))
    elif optim.schedule == "step":
        boundaries = {max(int(f * total_steps) - warmup, 1): 0.1 for f in optim.decay_steps_fractions}
        after = optax.piecewise_constant_schedule(base, boundaries)
    elif optim.schedule == "constant":
        after = optax.constant_schedule(base)
    else:
        raise ConfigError(f"unknown schedule {optim.schedule!r} (config.optim.schedule); valid: {SCHEDULES}")
    if warmup == 0:
        return after
    return optax.join_schedules([optax.linear_schedule(0.0, base, warmup), after], [warmup])


def decay_mask(params):
    """True for conv/dense kernels; norms' scales and all biases get no weight decay."""
    return jax.tree_util.tree_map(lambda p: p.ndim > 1, params)


def make_optimizer(optim, total_steps: int, model=None) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The optax chain for `config.optim` and its learning-rate schedule (by train step).

    With `optim.accumulate_steps = K > 1` the chain is wrapped in `optax.MultiSteps`: the
    gradients of K consecutive steps are averaged and applied once, so the effective
    batch is K x train.batch_size; the schedule then advances once per K steps. `model`
    (config.model) adds the groups its `frozen_stages` implies (training/param_groups.py).
    """
    groups = param_groups.of_config(optim, model)
    k = optim.get("accumulate_steps", 1)
    if k < 1:
        raise ConfigError(f"config.optim.accumulate_steps must be >= 1, got {k}")
    if k > 1:
        inner, inner_lr = _make_chain(optim, max(total_steps // k, 1), groups)
        return optax.MultiSteps(inner, every_k_schedule=k), lambda step: inner_lr(step // k)
    return _make_chain(optim, total_steps, groups)


def _make_chain(optim, total_steps: int, groups: list) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """Clipping, then the update rule; with `optim.param_groups`, frozen gradients are zeroed
    before clipping and each group gets the rule with its multipliers (optax.multi_transform:
    a frozen group keeps no optimizer state)."""
    lr = learning_rate_schedule(optim, total_steps)
    clip = [optax.clip_by_global_norm(optim.grad_clip_norm)] if optim.grad_clip_norm > 0 else []
    if not groups:
        # (one flat chain, as before groups existed: checkpoints' optimizer state keeps its tree)
        return optax.chain(*clip, *_update_rule(optim, lr, optim.weight_decay)), lr
    rules = {param_groups.DEFAULT: optax.chain(*_update_rule(optim, lr, optim.weight_decay))}
    for i, g in enumerate(groups):
        if g.frozen:
            rules[str(i)] = optax.set_to_zero()
            continue
        scaled = (lambda m: lambda step: m * lr(step))(g.lr_mult)  # (binds this group's multiplier)
        rules[str(i)] = optax.chain(*_update_rule(optim, scaled, optim.weight_decay * g.wd_mult))
    frozen = [optax.masked(optax.set_to_zero(), lambda p: param_groups.frozen_mask(p, groups))]
    split = optax.multi_transform(rules, lambda p: param_groups.labels(p, groups))
    return optax.chain(*(frozen if any(g.frozen for g in groups) else []), *clip, split), lr


def _update_rule(optim, lr: optax.Schedule, weight_decay: float) -> list[optax.GradientTransformation]:
    """The update rule's transformations (weight decay and the optimizer), to chain."""
    if optim.name == "adamw":
        return [optax.adamw(lr, weight_decay=weight_decay, mask=decay_mask)]
    # Coupled (L2) decay for the others, as torch.optim's weight_decay.
    parts = [optax.add_decayed_weights(weight_decay, mask=decay_mask)] if weight_decay > 0 else []
    if optim.name == "sgd":
        parts.append(optax.sgd(lr, momentum=optim.momentum or None, nesterov=False))
    elif optim.name == "adam":
        parts.append(optax.adam(lr))
    elif optim.name == "rmsprop":
        parts.append(optax.rmsprop(lr, momentum=optim.momentum))
    else:
        raise ConfigError(f"unknown optimizer {optim.name!r} (config.optim.name); valid: {OPTIMIZERS}")
    return parts
