"""The gradient anatomy of one batch in one compiled program: one forward pass, one
backward pass per weighted term (vmapped), no loop over images.

The forward pass is the train step's (BatchNorm on the batch's statistics, the same
sampling rng), so the gradients are those a train step would take on this batch; the
updated statistics are dropped. Per term: its gradient with respect to every head
output (`jax.vjp` of the loss on the outputs, one cotangent per term), split by location
group (groups.py), then pulled back through the network to the parameters (`jax.vjp` of
the forward pass) and split by module (modules.py).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxdet.anatomy import groups as G
from jaxdet.anatomy.modules import module_label, module_products, order
from jaxdet.detectors.inference import forward
from jaxdet.losses import assigned
from jaxdet.training.param_groups import flatten


@dataclasses.dataclass(frozen=True)
class Plan:
    """What one anatomy measures: the weighted terms (weight > 0, in the detector's order),
    the negatives' score bins, the positives' IoU bins and the parameter modules."""

    terms: tuple[str, ...]
    weights: tuple[float, ...]
    score_edges: tuple[float, ...]
    iou_edges: tuple[float, ...]
    labels: dict[str, str]  # parameter path -> module
    modules: tuple[str, ...]

    @property
    def groups(self) -> list[str]:
        return G.group_names(self.score_edges)


def make_plan(detector, params, backbone: str, score_edges=G.SCORE_EDGES, iou_edges=G.IOU_EDGES) -> Plan:
    """The Plan for `detector` with parameters shaped as `params` (arrays or shapes)."""
    weighted = [(t, float(w)) for t, w in detector.term_weights.items() if w > 0]
    labels = {path: module_label(path, backbone) for path in flatten(params)}
    return Plan(
        tuple(t for t, _ in weighted), tuple(w for _, w in weighted), tuple(score_edges), tuple(iou_edges),
        labels, tuple(order(labels.values())),
    )  # fmt: skip


def anatomy_fn(detector, plan: Plan) -> Callable:
    """`(variables, batch, rng) -> numbers` for one batch (jit it). numbers:
    values [T] the weighted terms; energy [T] each term's squared gradient norm over all
    head outputs; group [T, G] its part at each location group and other [T] at outputs
    no location group covers (group.sum(1) + other == energy); magnitude [T, G] the sum
    over each group's locations of the gradient's norm there (not squared); iou_sum /
    iou_count [T, N] the positives' gradient magnitude summed and counted per IoU bin; products [M, T, T]
    per module the inner products of the terms' parameter gradients; and, per term with
    located gradients, location [A] the squared gradient per location summed over the
    batch, maps [B, A] its magnitude per image, roles [B, A] the groups and centers [A, 2].
    """
    terms, num_groups = plan.terms, len(plan.groups)
    weights = jnp.asarray(plan.weights, jnp.float32)

    def fn(variables, batch, rng):
        stats = variables.get("batch_stats", {})

        def outputs_of(params):
            return forward(detector, {"params": params, "batch_stats": stats}, batch, rng, train=True)[0]

        outputs, pull_params = jax.vjp(outputs_of, variables["params"])

        def weighted(outputs):
            with assigned.recording() as records:
                _, values = detector.loss_fn(outputs, batch, rng)
            return weights * jnp.stack([values[t] for t in terms]), list(records)

        values, pull_outputs, records = jax.vjp(weighted, outputs, has_aux=True)
        # Output cotangents are only floats; integer outputs (sampled indices) get float0.
        every = jax.vmap(pull_outputs)(jnp.eye(len(terms), dtype=values.dtype))[0]
        d_outputs = {k: v for k, v in every.items() if jnp.issubdtype(v.dtype, jnp.floating)}
        floating = {k: outputs[k] for k in d_outputs}
        out = {
            "values": values,
            "energy": [],
            "group": [],
            "magnitude": [],
            "other": [],
            "iou_sum": [],
            "iou_count": [],
        }
        out.update(location={}, maps={}, roles={}, centers={})
        for i, term in enumerate(terms):
            grads = {k: v[i] for k, v in d_outputs.items()}
            energy = G.total_energy(grads)
            record, keys = G.record_of(term, records, floating)
            out["energy"].append(energy)
            if record is None:
                out["group"].append(jnp.zeros((num_groups,), jnp.float32))
                out["magnitude"].append(jnp.zeros((num_groups,), jnp.float32))
                out["other"].append(energy)
                out["iou_sum"].append(jnp.zeros((len(plan.iou_edges) - 1,), jnp.float32))
                out["iou_count"].append(jnp.zeros((len(plan.iou_edges) - 1,), jnp.float32))
                continue
            located = G.location_energy(grads, keys)
            roles = G.group_ids(record, plan.score_edges)
            per_group = G.group_energy(located, roles, num_groups)
            out["group"].append(per_group)
            out["magnitude"].append(G.group_energy(jnp.sqrt(located), roles, num_groups))
            out["other"].append(jnp.maximum(energy - per_group.sum(), 0.0))
            s, c = G.iou_profile(located, record, plan.iou_edges)
            out["iou_sum"].append(s)
            out["iou_count"].append(c)
            out["location"][term] = located.sum(0)
            out["maps"][term] = jnp.sqrt(located)
            out["roles"][term] = roles
            if record.centers is not None and record.centers.ndim == 2:
                out["centers"][term] = record.centers
        for key in ("energy", "group", "magnitude", "other", "iou_sum", "iou_count"):
            out[key] = jnp.stack(out[key])
        # Back through the network, every term at once: params-shaped, leaves [T, ...].
        d_params = jax.vmap(pull_params)(every)[0]
        out["products"] = module_products(flatten(d_params), plan.labels, plan.modules)
        return out

    return fn
