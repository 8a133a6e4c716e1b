"""An exponential moving average of the model's variables (parameters and BatchNorm
statistics), as YOLOX, YOLOv8 and RT-DETR evaluate.

`config.optim.ema_decay` d (0 = off) and `config.optim.ema_warmup` tau (0 = no ramp):
after each optimizer update u = 1, 2, ... the average moves to

    ema <- d_u * ema + (1 - d_u) * variables,   d_u = d * (1 - exp(-u / tau))   (d_u = d when tau = 0)

which is ultralytics' `ModelEMA` (there tau = 2000 updates): early on the average follows
the weights closely, later it averages over ~1 / (1 - d) updates. It starts equal to the
initial (or pretrained) variables. With gradient accumulation (`optim.accumulate_steps`
K), u counts updates: the average moves once per K steps, when the weights do. Integer
variables (none today) would be copied, not averaged.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from jaxdet.errors import ConfigError


def check(optim) -> None:
    """ConfigError unless 0 <= optim.ema_decay < 1 and optim.ema_warmup >= 0."""
    decay, warmup = optim.get("ema_decay", 0.0), optim.get("ema_warmup", 0)
    if not isinstance(decay, (int, float)) or not 0.0 <= decay < 1.0:
        raise ConfigError(
            f"config.optim.ema_decay={decay!r} must be in [0, 1): 0 turns the EMA off, 0.9999 is YOLOv8's"
        )
    if not isinstance(warmup, (int, float)) or warmup < 0:
        raise ConfigError(f"config.optim.ema_warmup={warmup!r} must be >= 0 updates (0: no ramp; 2000 is YOLOv8's)")


def enabled(optim) -> bool:
    return optim.get("ema_decay", 0.0) > 0.0


def decay_at(updates: jax.Array, decay: float, warmup: float) -> jax.Array:
    """d_u for update count `updates` [] (>= 1)."""
    if not warmup:
        return jnp.asarray(decay, jnp.float32)
    return decay * (1.0 - jnp.exp(-updates.astype(jnp.float32) / warmup))


def update(ema: Any, variables: Any, decay: jax.Array) -> Any:
    """`ema` moved towards `variables` (same trees) by `decay` []."""

    def one(e, v):
        if not jnp.issubdtype(e.dtype, jnp.floating):
            return v
        return (decay * e + (1.0 - decay) * v).astype(e.dtype)

    return jax.tree_util.tree_map(one, ema, variables)


def describe(optim) -> str | None:
    """One line for the run's log when evaluation reads the EMA (None without one)."""
    if not enabled(optim):
        return None
    ramp = f", ramp over {optim.ema_warmup:g} updates" if optim.get("ema_warmup", 0) else ""
    return f"evaluating the EMA of the weights (optim.ema_decay={optim.ema_decay:g}{ramp}; checkpoints' model item)"
