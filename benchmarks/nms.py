"""NMS forms (`jaxdet/ops/nms.py`) on the sizes Faster R-CNN and dense inference run.

    python -m benchmarks.nms [--batch=8 --levels=5 --per_level=1000 --repeats=10]

Cases, each jitted and vmapped over the batch, on boxes clustered around a few objects
(`synthetic.clustered_boxes`): RPN proposals as one class-offset problem of levels x
per_level boxes (`batched_nms`, the former proposal NMS) and per level (`grouped_nms`,
what `rcnn_module` runs), and dense detections of 80 classes (`batched_nms`, what
`select_detections` runs). Both kernel forms of each (sequential "cpu", blocked "plain");
prints median times after compilation and checks that all forms keep the same boxes.
"""

from __future__ import annotations

import argparse
import statistics

import jax
import numpy as np

from benchmarks.harness import _time
from jaxdet.data.synthetic import clustered_boxes
from jaxdet.ops import nms as nms_ops

FORMS = ("cpu", "plain")


def _median_ms(fn, args, repeats: int) -> float:
    """Median ms of `repeats` calls after one that compiles and warms up."""
    return statistics.median(_time(lambda: jax.block_until_ready(fn(*args)), repeats, warmup=1)) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--levels", type=int, default=5)
    parser.add_argument("--per_level", type=int, default=1000)
    parser.add_argument("--keep", type=int, default=1000, help="post-NMS proposals / detections kept")
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    b, g, k = args.batch, args.levels, args.per_level
    rng = np.random.default_rng(0)
    boxes = clustered_boxes(rng, (b, g, k), 640.0, clusters=20)
    scores = rng.normal(size=(b, g, k)).astype(np.float32)
    valid = np.ones((b, g, k), bool)
    flat = (boxes.reshape(b, g * k, 4), scores.reshape(b, g * k), valid.reshape(b, g * k))
    levels = np.broadcast_to(np.repeat(np.arange(g), k), (b, g * k))
    classes = rng.integers(0, 80, (b, g * k))
    thr, keep = 0.7, args.keep

    def batched(iou: float, size: int):
        return lambda f: lambda x, s, c, v: nms_ops.batched_nms(x, s, c, v, iou, size, f)

    def grouped(f):
        return lambda x, s, v: nms_ops.grouped_nms(x, s, v, thr, keep, f)

    cases = {  # name: (form -> per-image function, batched inputs)
        "rpn, one problem (levels as classes)": (batched(thr, keep), (flat[0], flat[1], levels, flat[2])),
        "rpn, per level (grouped_nms)": (grouped, (boxes, scores, valid)),
        "dense detections, 80 classes": (batched(0.5, 100), (flat[0], flat[1], classes, flat[2])),
    }
    device = jax.devices()[0].device_kind
    print(f"{b} images x {g} x {k} boxes on {device}, median of {args.repeats} (ms):")
    kept = {}
    for name, (make, inputs) in cases.items():
        row = []
        for form in FORMS:
            fn = jax.jit(jax.vmap(make(form)))
            row.append(f"{form} {_median_ms(fn, inputs, args.repeats):.2f}")
            kept[name, form] = jax.device_get(fn(*inputs))
        print(f"  {name}: " + ", ".join(row))
    for name in cases:
        np.testing.assert_array_equal(kept[name, "plain"], kept[name, "cpu"])
    # The class offset rounds shifted coordinates, so a pair at the threshold may differ.
    differ = int(np.sum(kept[next(iter(cases)), "cpu"] != kept["rpn, per level (grouped_nms)", "cpu"]))
    print(f"the same boxes kept by both forms of each case; per level vs one problem: {differ} entries differ")


if __name__ == "__main__":
    main()
