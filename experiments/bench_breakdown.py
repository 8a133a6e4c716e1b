"""Where a RetinaNet-R50 training step spends its time, on jaxdet and on torchvision.

    python -m experiments.bench_breakdown      # 512 px, batch 2, 80 classes: BENCHMARKS.md's CPU table

Times the network alone (backbone + FPN + head, with a dummy loss) forward, and forward
+ backward, on both sides (needs the `bench` extra). `experiments.bench` gives the whole
step; the difference is target assignment + losses + optimizer update.
"""

import statistics
import time

import jax
import jax.numpy as jnp

from experiments.configs import retinanet_r50
from jaxdet import train
from jaxdet.data.synthetic import synthetic_batch
from jaxdet.models import detectors

SIZE, BATCH, CLASSES, STEPS = 512, 2, 80, 5


def _median_time(fn) -> float:
    fn()
    fn()  # warm-up (and compilation, for jax)
    times = []
    for _ in range(STEPS):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def jaxdet_network(batch) -> tuple[float, float]:
    config = retinanet_r50.get_config()
    config.data.image_size, config.train.batch_size = SIZE, BATCH
    det = detectors.build_detector(config, CLASSES, None)
    images = train.normalize(jnp.asarray(batch["image"]))
    key = jax.random.key(0)
    variables = det.module.init({"params": key, "sampling": key}, images[:1], train=False)

    def forward(params):
        out, _ = det.module.apply(
            {"params": params, "batch_stats": variables["batch_stats"]}, images, train=True, targets=batch,
            rngs={"sampling": key}, mutable=["batch_stats"],
        )  # fmt: skip
        return out

    def dummy_loss(params):
        return sum(jnp.mean(v) for v in jax.tree_util.tree_leaves(forward(params)))

    fwd, grad = jax.jit(forward), jax.jit(jax.grad(dummy_loss))
    params = variables["params"]
    return (
        _median_time(lambda: jax.block_until_ready(fwd(params))),
        _median_time(lambda: jax.block_until_ready(grad(params))),
    )


def torchvision_network(batch) -> tuple[float, float]:
    import torch
    from torchvision.models.detection import retinanet_resnet50_fpn

    model = retinanet_resnet50_fpn(
        weights=None, weights_backbone=None, num_classes=CLASSES, min_size=SIZE, max_size=SIZE
    ).train()
    images = torch.from_numpy(batch["image"]).permute(0, 3, 1, 2).contiguous() / 255.0

    def step(backward: bool) -> None:
        out = model.head(list(model.backbone(images).values()))
        loss = sum(v.float().mean() for v in out.values())
        if backward:
            loss.backward()

    with torch.no_grad():
        forward = _median_time(lambda: step(False))
    return forward, _median_time(lambda: step(True))


def main() -> None:
    batch = synthetic_batch(BATCH, SIZE, 100, CLASSES)
    for name, fn in (("jaxdet", jaxdet_network), ("torchvision", torchvision_network)):
        fwd, fwd_bwd = fn(batch)
        print(
            f"{name:<12} network forward {fwd:.2f} s, forward+backward {fwd_bwd:.2f} s, backward {fwd_bwd - fwd:.2f} s"
        )  # noqa: E501


if __name__ == "__main__":
    main()
