"""Where a RetinaNet-R50 or FCOS-R50 training step spends its time, on jaxdet and on torchvision.

    python -m experiments.bench_breakdown      # 512 px, batch 2, 80 classes: BENCHMARKS.md's CPU table
    python -m experiments.bench_breakdown --detector=fcos   # fcos.py:torchvision vs fcos_resnet50_fpn

Times, on both sides (needs the `bench` extra), forward and forward + backward of:
- the whole network (backbone + FPN + head, with a dummy loss);
- its parts: ResNet-50's stem (conv, BatchNorm, ReLU, max-pool) and its four stages
  (BatchNorm in training mode; gradients with respect to the parameters and the stage's
  input), and the detector's head (RetinaNet's, or FCOS's with GroupNorm towers) on five
  random 256-channel levels.
`experiments.bench` gives the whole step; the step minus the network is target
assignment + losses + optimizer update. Medians of 5 runs after 2 warm-ups.
"""

import statistics
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from experiments.configs import fcos, retinanet_r50
from jaxdet import detectors, kernels
from jaxdet.data.synthetic import synthetic_batch
from jaxdet.detectors import inference
from jaxdet.models.backbones import Bottleneck
from jaxdet.models.heads.fcos import FCOSHead
from jaxdet.models.heads.retinanet import RetinaNetHead
from jaxdet.models.layers import Conv, make_norm, max_pool_3x3_s2

SIZE, BATCH, CLASSES, STEPS = 512, 2, 80, 5
# ResNet-50 parts: (name, input shape NHWC, blocks, output channels, first stride).
STAGES = (
    ("stem", (BATCH, SIZE, SIZE, 3), 0, 64, 2),
    ("layer1", (BATCH, SIZE // 4, SIZE // 4, 64), 3, 256, 1),
    ("layer2", (BATCH, SIZE // 4, SIZE // 4, 256), 4, 512, 2),
    ("layer3", (BATCH, SIZE // 8, SIZE // 8, 512), 6, 1024, 2),
    ("layer4", (BATCH, SIZE // 16, SIZE // 16, 1024), 3, 2048, 2),
)
HEAD_LEVELS = range(3, 8)
KERNELS = kernels.resolve("auto", kernels.platform())  # the forms a training run here would use
# Per detector: its jaxdet config (as experiments.bench compares it) and its head on 256 channels.
DETECTORS = {
    "retinanet": (retinanet_r50.get_config, lambda: RetinaNetHead(CLASSES, 9, 4, 256, "none", kernels=KERNELS)),
    "fcos": (lambda: fcos.get_config("torchvision"), lambda: FCOSHead(CLASSES, 256, 4, "group", kernels=KERNELS)),
}
_DETECTOR = flags.DEFINE_enum("detector", "retinanet", list(DETECTORS), "Whose network and head to time.")


def _median_time(fn) -> float:
    fn()
    fn()  # warm-up (and compilation, for jax)
    times = []
    for _ in range(STEPS):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _time_jax(loss, params, *inputs, wrt_inputs: bool = False) -> tuple[float, float]:
    """Medians of `loss(params, *inputs)` forward, and forward + backward (with respect to
    the parameters, and the inputs if `wrt_inputs`), both jitted."""
    fwd = jax.jit(loss)
    grad = jax.jit(jax.grad(loss, argnums=tuple(range(1 + len(inputs))) if wrt_inputs else 0))
    return (
        _median_time(lambda: jax.block_until_ready(fwd(params, *inputs))),
        _median_time(lambda: jax.block_until_ready(grad(params, *inputs))),
    )


def _dummy_loss(outputs) -> jax.Array:
    return sum(jnp.mean(o) for o in jax.tree_util.tree_leaves(outputs))


def jaxdet_network(batch, detector: str) -> tuple[float, float]:
    config = DETECTORS[detector][0]()
    config.data.image_size, config.train.batch_size = SIZE, BATCH
    # As torchvision's builders without weights: BatchNorm in training mode, every stage trained.
    config.model.backbone_norm, config.model.frozen_stages = "batch", -1
    det = detectors.build_detector(config, CLASSES, None)
    images = inference.normalize(jnp.asarray(batch["image"]))
    key = jax.random.key(0)
    variables = det.module.init({"params": key, "sampling": key}, images[:1], train=False)

    def loss(params):
        out, _ = det.module.apply(
            {"params": params, "batch_stats": variables["batch_stats"]}, images, train=True, targets=batch,
            rngs={"sampling": key}, mutable=["batch_stats"],
        )  # fmt: skip
        return _dummy_loss(out)

    return _time_jax(loss, variables["params"])


class _Stage(nn.Module):
    """ResNet-50's stem (blocks == 0) or one stage of bottlenecks, as jaxdet's ResNet builds them."""

    blocks: int
    width: int
    stride: int

    @nn.compact
    def __call__(self, x):
        norm = make_norm("batch", True, jnp.float32, kernels=KERNELS)
        if not self.blocks:
            x = Conv(self.width, (7, 7), strides=2, padding=[(3, 3), (3, 3)], use_bias=False, kernels=KERNELS)(x)
            return max_pool_3x3_s2(nn.relu(norm()(x)), KERNELS)
        for i in range(self.blocks):
            x = Bottleneck(self.width, self.stride if i == 0 else 1, norm, KERNELS)(x)
        return x


def _time_module(module, inputs, wrt_inputs: bool, mutable=("batch_stats",)) -> tuple[float, float]:
    variables = module.init(jax.random.key(0), inputs)

    def loss(params, inputs):
        out, _ = module.apply({**variables, "params": params}, inputs, mutable=list(mutable))
        return _dummy_loss(out)

    return _time_jax(loss, variables["params"], inputs, wrt_inputs=wrt_inputs)


def jaxdet_parts(detector: str) -> dict[str, tuple[float, float]]:
    rng = np.random.default_rng(0)
    times = {}
    for name, shape, blocks, width, stride in STAGES:
        x = jnp.asarray(rng.normal(size=shape), jnp.float32)
        times[name] = _time_module(_Stage(blocks, width, stride), x, wrt_inputs=blocks > 0)
    levels = {
        lvl: jnp.asarray(rng.normal(size=(BATCH, SIZE >> lvl, SIZE >> lvl, 256)), jnp.float32) for lvl in HEAD_LEVELS
    }
    times["head"] = _time_module(DETECTORS[detector][1](), levels, wrt_inputs=True, mutable=())
    return times


def _time_torch(model, forward, loss) -> tuple[float, float]:
    """Medians of `loss(forward())` without gradients, and with its backward into `model`."""
    import torch

    def run(backward: bool) -> None:
        model.zero_grad()
        value = loss(forward())
        if backward:
            value.backward()

    with torch.no_grad():
        no_grad = _median_time(lambda: run(False))
    return no_grad, _median_time(lambda: run(True))


def _sum_of_means(out) -> "torch.Tensor":  # noqa: F821
    return sum(v.float().mean() for v in out.values())


def torchvision_parts(detector: str) -> dict[str, tuple[float, float]]:
    import torch
    from torchvision.models import resnet50
    from torchvision.models.detection.fcos import FCOSHead as TorchFCOSHead
    from torchvision.models.detection.retinanet import RetinaNetHead as TorchRetinaNetHead

    net = resnet50().train()
    modules = {
        "stem": torch.nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool),
        **{f"layer{i}": getattr(net, f"layer{i}") for i in range(1, 5)},
    }
    times = {}
    for name, (b, h, w, c), blocks, _, _ in STAGES:
        x = torch.randn(b, c, h, w, requires_grad=blocks > 0)
        times[name] = _time_torch(modules[name], lambda: modules[name](x), lambda out: out.mean())
    levels = [torch.randn(BATCH, 256, SIZE >> lvl, SIZE >> lvl, requires_grad=True) for lvl in HEAD_LEVELS]
    head = TorchRetinaNetHead(256, 9, CLASSES) if detector == "retinanet" else TorchFCOSHead(256, 1, CLASSES)
    times["head"] = _time_torch(head, lambda: head(levels), _sum_of_means)
    return times


def torchvision_network(batch, detector: str) -> tuple[float, float]:
    import torch
    from torchvision.models import detection

    build = detection.retinanet_resnet50_fpn if detector == "retinanet" else detection.fcos_resnet50_fpn
    model = build(weights=None, weights_backbone=None, num_classes=CLASSES, min_size=SIZE, max_size=SIZE).train()
    images = torch.from_numpy(batch["image"]).permute(0, 3, 1, 2).contiguous() / 255.0

    forward = lambda: model.head(list(model.backbone(images).values()))  # noqa: E731
    return _time_torch(model, forward, _sum_of_means)


def main(argv) -> None:
    del argv
    detector = _DETECTOR.value
    batch = synthetic_batch(BATCH, SIZE, 100, CLASSES)
    print(
        f"{'part':<10} {'jaxdet fwd':>10} {'fwd+bwd':>9} {'torch fwd':>10} {'fwd+bwd':>9} {'jaxdet/torch fwd+bwd':>21}"
    )
    ours, theirs = jaxdet_parts(detector), torchvision_parts(detector)
    ours["network"], theirs["network"] = jaxdet_network(batch, detector), torchvision_network(batch, detector)
    for name in ours:
        (jf, jb), (tf, tb) = ours[name], theirs[name]
        print(f"{name:<10} {jf * 1e3:8.0f}ms {jb * 1e3:7.0f}ms {tf * 1e3:8.0f}ms {tb * 1e3:7.0f}ms {jb / tb:21.2f}")


if __name__ == "__main__":
    app.run(main)
