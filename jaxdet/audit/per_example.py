"""Every example's own loss terms and the norm of its own gradient, for a whole batch in
one jitted program: `jax.vmap` of `jax.value_and_grad` over the examples, each seen as a
batch of one (no Python loop over images).

The gradient is taken with respect to the head's parameters only (by default every
top-level module but the backbone and the neck): the head is where an annotation's pull
shows most directly, and its gradient is a fraction of the whole network's cost. The
model runs in eval mode (BatchNorm with its running statistics), so an example's numbers
do not depend on the others in its batch.
"""

from __future__ import annotations

import re
from collections.abc import Callable

import jax
import optax

from jaxdet.detectors.inference import forward

# Top-level parameter modules that are not the head (jaxdet's backbones and necks).
_NOT_HEAD = re.compile(r"^(ResNet|CSPDarknet|FPN|PAN|C2fPAN)_\d+$")


def head_names(params: dict, pattern: str | None = None) -> list[str]:
    """The top-level parameter modules whose gradient is taken: those matching `pattern`
    (a regex), or by default every one that is not a backbone or a neck (RetinaNetHead_0;
    Faster R-CNN's rpn and BoxHead_0). ValueError when none is left."""
    names = [n for n in params if (re.search(pattern, n) if pattern else not _NOT_HEAD.match(n))]
    if not names:
        raise ValueError(
            f"no parameter module matches {pattern!r}" if pattern else "every parameter module is a backbone or neck"
        )
    return names


def per_example_fn(detector, heads: list[str]) -> Callable:
    """jit of `per_example` (the numbers alone)."""
    per = per_example(detector, heads)
    return jax.jit(lambda variables, batch, rng: per(variables, batch, rng)[0])


def per_example(detector, heads: list[str]) -> Callable:
    """`(variables, batch, rng) -> ({"loss": [B], <term>: [B], "grad_norm": [B]}, outputs)`:
    for each of the B examples of `batch` (images [B, S, S, 3] and its targets), its weighted
    loss, each named loss term and the global norm of d loss / d params[heads]; `outputs`
    are the head outputs of the same forward passes, batched as the detector's own
    ([B, ...]), for its `predict` (no second forward pass)."""

    def one(variables: dict, example: dict, rng: jax.Array) -> dict:
        batch = jax.tree_util.tree_map(lambda x: x[None], example)
        params = variables["params"]
        rest = {k: v for k, v in params.items() if k not in heads}

        def loss(head: dict):
            full = {"params": {**rest, **head}, "batch_stats": variables.get("batch_stats", {})}
            outputs, _ = forward(detector, full, batch, rng, train=False)
            total, terms = detector.loss_fn(outputs, batch, rng)
            return total, (terms, outputs)

        (total, (terms, outputs)), grads = jax.value_and_grad(loss, has_aux=True)({k: params[k] for k in heads})
        unbatched = jax.tree_util.tree_map(lambda x: x[0], outputs)  # (vmap puts the examples' axis back)
        return {"loss": total, **terms, "grad_norm": optax.global_norm(grads)}, unbatched

    return jax.vmap(one, in_axes=(None, 0, None))
