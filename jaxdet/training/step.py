"""TrainState, the per-device train step and its data-parallel wrapper, and the per-term
gradient diagnostics.

The step is written for ONE device and averages with `lax.pmean(..., "data")`; it is
mapped over a 1-D mesh of all devices with `jax.shard_map` inside `jax.jit` (donating
the state). One device or sixty-four run the same code. The loop lives in `loop.py`; the
model's forward pass and its evaluation / prediction steps in detectors/inference.py; the
mesh and batch placement in jaxdet/parallel.py.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from jaxdet.detectors.inference import forward
from jaxdet.parallel import AXIS
from jaxdet.training import ema


@flax.struct.dataclass
class TrainState:
    """Everything a step changes: step [], params, batch_stats (BatchNorm), opt_state, and
    with `optim.ema_decay` the moving average of the variables (training/ema.py; else None)."""

    step: jax.Array
    params: Any
    batch_stats: Any
    opt_state: Any
    ema: Any = None  # {"params", "batch_stats"} or None

    @property
    def variables(self) -> dict[str, Any]:
        """The model's variables being trained ({"params", "batch_stats"})."""
        return {"params": self.params, "batch_stats": self.batch_stats}

    @property
    def weights(self) -> dict[str, Any]:
        """What evaluation, the best checkpoint and prediction read: the EMA when on."""
        return self.variables if self.ema is None else self.ema

    def items(self) -> dict[str, Any]:
        """The checkpoint's items (jaxdet.checkpoints.ITEMS): "model", the weights evaluation
        reads (so that they restore without an optimizer), and "train", the rest: step,
        optimizer state and, with an EMA, the trained variables themselves."""
        rest = {"step": self.step, "opt_state": self.opt_state}
        if self.ema is not None:
            rest["variables"] = self.variables
        return {"model": self.weights, "train": rest}

    @classmethod
    def from_items(cls, items: dict[str, Any]) -> TrainState:
        model, rest = items["model"], items["train"]
        trained, ema = (rest["variables"], model) if "variables" in rest else (model, None)
        return cls(rest["step"], trained["params"], trained["batch_stats"], rest["opt_state"], ema)


def init_key(seed: int) -> jax.Array:
    """The parameter-initialisation key: a function of the seed only, so every arm of an
    ablation with the same seed starts from the same weights (where shapes agree)."""
    return jax.random.fold_in(jax.random.key(seed), 0x7FFFFFFF)


def init_state(
    detector, tx: optax.GradientTransformation, rng: jax.Array, image_size: int, mesh: Mesh, with_ema: bool = False
) -> TrainState:
    """Initialises parameters and optimizer state (and the EMA, equal to the variables, when
    `with_ema`), replicated over `mesh`."""

    def init(rng):
        dummy = jnp.zeros((1, image_size, image_size, 3), jnp.float32)
        variables = detector.module.init({"params": rng, "sampling": rng}, dummy, train=False)
        params = variables["params"]
        batch_stats = variables.get("batch_stats", {})
        return TrainState(
            step=jnp.zeros((), jnp.int32),
            params=params,
            batch_stats=batch_stats,
            opt_state=tx.init(params),
            ema={"params": params, "batch_stats": batch_stats} if with_ema else None,
        )

    lowered = jax.jit(init, out_shardings=NamedSharding(mesh, P())).lower(rng)
    # Initialisation runs once, so on a CPU mesh it is compiled without XLA's backend
    # optimisation: the per-parameter random draws dominate its program, which then compiles
    # in a quarter of the time (tiny RetinaNet: 4.5 s -> 1.1 s), and the values differ from
    # the optimised program's at most in the last bit of a float32.
    options = {"xla_backend_optimization_level": 0} if mesh.devices.flat[0].platform == "cpu" else None
    return lowered.compile(options)(rng)


def make_train_step(detector, tx: optax.GradientTransformation, lr_schedule: optax.Schedule, optim=None) -> Callable:
    """The per-device step `(state, batch, base_rng) -> (state, metrics)`.

    Must run where the mesh axis "data" is bound (see `shard_train_step`). Gradients,
    BatchNorm statistics and metrics are averaged over the axis, so every device ends
    the step with the same state. `optim` (config.optim) sets the EMA (training/ema.py)
    when the state carries one.
    """
    ema_decay = optim.get("ema_decay", 0.0) if optim is not None else 0.0
    ema_warmup = optim.get("ema_warmup", 0) if optim is not None else 0
    every = optim.get("accumulate_steps", 1) if optim is not None else 1

    def step_fn(state: TrainState, batch: dict[str, jax.Array], base_rng: jax.Array):
        # Randomness is a pure function of (seed, step, device): resumable and distinct per device.
        rng = jax.random.fold_in(jax.random.fold_in(base_rng, state.step), jax.lax.axis_index(AXIS))

        def loss(params):
            variables = {"params": params, "batch_stats": state.batch_stats}
            outputs, batch_stats = forward(detector, variables, batch, rng, train=True)
            total, terms = detector.loss_fn(outputs, batch, rng, axis_name=AXIS)
            return total, (terms, batch_stats)

        (total, (terms, batch_stats)), grads = jax.value_and_grad(loss, has_aux=True)(state.params)
        grads = jax.lax.pmean(grads, AXIS)
        # Without sync BN each device sees its own statistics; averaging keeps replicas equal.
        batch_stats = jax.lax.pmean(batch_stats, AXIS)
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        metrics = {"loss": total, **terms, "grad_norm": optax.global_norm(grads)}
        metrics = jax.lax.pmean(metrics, AXIS)
        # A step whose loss or gradients are NaN/Inf (on any device: they are averaged) is
        # not applied: parameters, optimizer and BatchNorm state stay; the step still counts,
        # so the data position and the schedule move on as in a run without the bad batch.
        finite = jnp.isfinite(metrics["loss"]) & jnp.isfinite(metrics["grad_norm"])
        keep = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(finite, a, b), new, old)  # noqa: E731
        params, opt_state = keep(params, state.params), keep(opt_state, state.opt_state)
        batch_stats = keep(batch_stats, state.batch_stats)
        metrics["nonfinite"] = 1.0 - finite.astype(jnp.float32)
        for k in terms:
            metrics[f"nonfinite/{k}"] = 1.0 - jnp.isfinite(metrics[k]).astype(jnp.float32)
        metrics["learning_rate"] = lr_schedule(state.step)
        ema_state = state.ema
        if ema_state is not None:
            # Moves once per optimizer update (every `every` steps with accumulation), and not
            # on a skipped (non-finite) step.
            updates = (state.step + 1) // every
            moved = ema.update(ema_state, {"params": params, "batch_stats": batch_stats},
                               ema.decay_at(updates, ema_decay, ema_warmup))  # fmt: skip
            applies = finite & ((state.step + 1) % every == 0)
            ema_state = jax.tree_util.tree_map(lambda a, b: jnp.where(applies, a, b), moved, ema_state)
        new_state = state.replace(
            step=state.step + 1, params=params, batch_stats=batch_stats, opt_state=opt_state, ema=ema_state
        )
        return new_state, metrics

    return step_fn


def shard_train_step(step_fn: Callable, mesh: Mesh) -> Callable:
    """jit(shard_map(step_fn)): state replicated, batch split along "data", state donated."""
    mapped = jax.shard_map(step_fn, mesh=mesh, in_specs=(P(), P(AXIS), P()), out_specs=(P(), P()), check_vma=False)
    return jax.jit(mapped, donate_argnums=(0,))


def per_term_gradients(detector, state: TrainState, batch: dict[str, jax.Array], rng: jax.Array) -> Any:
    """Per-device gradients of each weighted loss term (`detector.term_weights`, in that
    order): a params-shaped tree, leaves [T, ...].

    One forward pass and one backward pass per term (`jax.jacrev`). Their sum over the
    leading axis is the gradient of the total loss. Runs where axis "data" is bound.
    """

    def weighted_terms(params):
        variables = {"params": params, "batch_stats": state.batch_stats}
        outputs, _ = forward(detector, variables, batch, rng, train=True)
        _, terms = detector.loss_fn(outputs, batch, rng, axis_name=AXIS)
        return jnp.stack([w * terms[k] for k, w in detector.term_weights.items()])

    return jax.jacrev(weighted_terms)(state.params)


def make_term_grad_step(detector, mesh: Mesh) -> Callable:
    """jit(shard_map) of `(state, batch, base_rng) -> diagnostics` (backprop diagnostics).

    Returns, for the gradients averaged over "data": `grad_norm/<term>` for each
    weighted term on its own, `grad_cos/<a>__<b>` (cosine similarity of two terms'
    gradients: negative means they pull the parameters apart) and `grad_norm/total`.
    """

    names = list(detector.term_weights)

    def fn(state: TrainState, batch: dict[str, jax.Array], base_rng: jax.Array):
        rng = jax.random.fold_in(jax.random.fold_in(base_rng, state.step), jax.lax.axis_index(AXIS))
        jac = jax.lax.pmean(per_term_gradients(detector, state, batch, rng), AXIS)
        flat = jnp.concatenate([x.reshape(len(names), -1) for x in jax.tree_util.tree_leaves(jac)], axis=1)
        norms = jnp.linalg.norm(flat, axis=1)
        out = {f"grad_norm/{k}": norms[i] for i, k in enumerate(names)}
        out["grad_norm/total"] = jnp.linalg.norm(jnp.sum(flat, axis=0))
        for i in range(len(names)):
            for j in range(i + 1, len(names)):
                denom = norms[i] * norms[j]
                cos = jnp.where(denom > 0, jnp.dot(flat[i], flat[j]) / jnp.where(denom > 0, denom, 1.0), 0.0)
                out[f"grad_cos/{names[i]}__{names[j]}"] = cos
        return out

    mapped = jax.shard_map(fn, mesh=mesh, in_specs=(P(), P(AXIS), P()), out_specs=P(), check_vma=False)
    return jax.jit(mapped)
