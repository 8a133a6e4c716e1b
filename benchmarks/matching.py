"""Hungarian matching: jaxdet's JAX linear sum assignment (jitted, vmapped over the batch)
against scipy.optimize.linear_sum_assignment image by image, on the same float32 costs.

    python -m benchmarks.matching [--batch=8 --queries=300 --boxes=100 --repeats=20 --costs=detr]

Prints median times after a warm-up (and compilation, for JAX) and checks that both
give the same total cost.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import numpy as np
from scipy.optimize import linear_sum_assignment as scipy_lsa

from jaxdet.ops.matching import linear_sum_assignment


def _costs(kind: str, shape: tuple[int, int, int], rng) -> np.ndarray:
    """[B, Q, M] float32: uniform, normal, or DETR-like (5 x L1 + 2 x (1 - GIoU) between
    random normalised boxes, plus a class cost)."""
    if kind == "uniform":
        return rng.uniform(0, 10, shape).astype(np.float32)
    if kind == "normal":
        return rng.normal(0, 1, shape).astype(np.float32)
    from jaxdet.losses import giou_loss

    b, q, m = shape

    def boxes(n):  # noqa: E306
        xy = rng.uniform(0, 0.7, (b, n, 2))
        return np.concatenate([xy, xy + rng.uniform(0.02, 0.3, (b, n, 2))], -1).astype(np.float32)

    pred, gt = boxes(q), boxes(m)
    l1 = np.abs(pred[:, :, None] - gt[:, None]).sum(-1)
    giou = np.asarray(giou_loss(pred[:, :, None], gt[:, None]))
    return (5 * l1 + 2 * giou + rng.normal(0, 1, (b, q, m))).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--boxes", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--costs", choices=("detr", "uniform", "normal"), default="detr")
    args = parser.parse_args()
    cost = _costs(args.costs, (args.batch, args.queries, args.boxes), np.random.default_rng(0))
    mask = np.ones((args.batch, args.boxes), bool)
    forms = {f: jax.jit(jax.vmap(lambda c, m, f=f: linear_sum_assignment(c, m, f))) for f in ("plain", "cpu")}
    results = {f: jax.device_get(fn(cost, mask)) for f, fn in forms.items()}  # compile + warm-up
    times = {"plain": [], "cpu": [], "scipy": []}
    for _ in range(args.repeats):
        for f, fn in forms.items():
            t = time.perf_counter()
            jax.block_until_ready(fn(cost, mask))
            times[f].append(time.perf_counter() - t)
        t = time.perf_counter()
        refs = [scipy_lsa(c) for c in cost]
        times["scipy"].append(time.perf_counter() - t)
    for result in results.values():
        for c, q_of_gt, (rows, cols) in zip(cost, result.query_of_gt, refs):
            np.testing.assert_allclose(c[q_of_gt, np.arange(args.boxes)].sum(), c[rows, cols].sum(), rtol=1e-5)
    ms = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    print(
        f"{args.batch} x [{args.queries}, {args.boxes}] {args.costs} costs on {jax.devices()[0].platform}, "
        f"median of {args.repeats}: plain (JAX loops) {ms['plain']:.2f} ms, cpu form (scipy via pure_callback) "
        f"{ms['cpu']:.2f} ms, scipy alone {ms['scipy']:.2f} ms; plain / cpu = {ms['plain'] / ms['cpu']:.1f}; "
        "same total costs"
    )


if __name__ == "__main__":
    main()
