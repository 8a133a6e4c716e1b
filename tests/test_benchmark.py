"""The benchmark harness: synthetic batches, the jaxdet timing, the bench main's output."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from benchmarks import harness as benchmark
from experiments.configs import default
from jaxdet.data.synthetic import synthetic_batch


def test_synthetic_batch_is_valid():
    b = synthetic_batch(3, 64, 8, num_classes=5, seed=1)
    assert b["image"].shape == (3, 64, 64, 3) and b["image"].min() >= 0 and b["image"].max() <= 255
    boxes, mask = b["boxes"], b["box_mask"]
    assert mask.sum(axis=1).tolist() == [4, 4, 4]
    real = boxes[mask]
    assert np.all(real[:, 2] > real[:, 0]) and np.all(real[:, 3] > real[:, 1])
    assert real.min() >= 0 and real.max() <= 64
    assert np.all(boxes[~mask] == 0) and set(b["labels"][mask].tolist()) <= set(range(5))
    # Same seed, same batch: both frameworks time the same input.
    np.testing.assert_array_equal(synthetic_batch(3, 64, 8, 5, seed=1)["boxes"], boxes)


def test_step_flops_counts_the_global_step():
    """The global step's FLOPs do not depend on how it is split: batch 8 on two devices (two
    per-device programs of 4, counted once and doubled) is batch 8 on one device plus the
    optimizer update that each device repeats (3% of this tiny model's step); and half the
    batch is about half the work."""
    import jax

    from jaxdet import detectors, parallel
    from jaxdet.training import optim
    from jaxdet.training.step import init_key, init_state

    config = default.get_config("tiny")
    detector = detectors.build_detector(config, 5, parallel.AXIS)
    tx, lr = optim.make_optimizer(config.optim, 10)
    mesh = parallel.make_mesh(jax.devices()[:1])
    state = init_state(detector, tx, init_key(0), 64, mesh)
    rng = jax.random.key(0)
    big = synthetic_batch(8, 64, 8, 5)
    small = {k: v[:4] for k, v in big.items()}
    two_devices = benchmark.step_flops(detector, tx, lr, state, big, rng, num_devices=2)
    one_device = benchmark.step_flops(detector, tx, lr, state, big, rng, num_devices=1)
    half = benchmark.step_flops(detector, tx, lr, state, small, rng, num_devices=1)
    assert one_device > 1e6
    assert 0 <= two_devices - one_device < 0.05 * one_device, (two_devices, one_device)
    assert 1.8 < one_device / half < 2.05, (one_device, half)


def test_bench_main_writes_json(tmp_path):
    out = tmp_path / "r.json"
    cmd = [
        sys.executable, "-m", "experiments.bench", "--config=experiments/configs/default.py:tiny",
        "--steps=1", "--warmup=1", "--batch=4", "--image_size=64", f"--json_out={out}",
        f"--profile_dir={tmp_path / 'prof'}",
    ]  # fmt: skip
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=1 --xla_backend_optimization_level=0"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (r,) = json.loads(out.read_text())
    assert r["batch"] == 4 and r["image_size"] == 64 and "jaxdet" in proc.stdout
    # What the harness measures (benchmarks/harness.py: bench_jaxdet), on CPU.
    assert r["step_s"] > 0 and r["images_per_s"] == pytest.approx(4 / r["step_s"])
    assert r["compile_s"] > 0 and r["flops_per_step"] > 1e6 and r["peak_host_mb"] > 0
    assert len(r["losses"]) == 2 and np.all(np.isfinite(r["losses"]))
    assert r["mfu"] is None  # CPU: no known peak, so no utilisation claimed
    assert "img/s" in proc.stdout and "compile" in proc.stdout
    # --profile_dir: the traced steps' time per instruction, joined to the model's source scopes.
    summary = (tmp_path / "prof" / "summary.txt").read_text()
    assert summary in proc.stdout and "busy time per step" in summary
    scopes = summary.split("per scope:")[1]
    assert "[bwd] DenseModel" in scopes and "\n" in scopes.strip(), summary


def test_torchvision_side_matches_inputs():
    pytest.importorskip("torchvision")
    from benchmarks.torchvision_side import bench_torchvision

    r = bench_torchvision("retinanet", 64, 2, 8, 5, steps=1, warmup=1)
    assert r["framework"] == "torchvision" and np.all(np.isfinite(r["losses"]))


@pytest.mark.parametrize("k", [0, 1, 3])
def test_both_sides_of_the_bench_freeze_the_same_resnet_parameters(k):
    """`--compare=torchvision` with `model.frozen_stages` k: torchvision's side stops the same
    parameters (stem and stages 1..k of ResNet-50) as jaxdet's optimizer does."""
    pytest.importorskip("torchvision")
    import jax

    from benchmarks.torchvision_side import build_model, freeze_stages
    from experiments.configs import retinanet_r50
    from jaxdet import detectors, parallel
    from jaxdet.detectors import inference
    from jaxdet.training import param_groups

    config = retinanet_r50.get_config()
    config.model.frozen_stages = k
    det = detectors.build_detector(config, 5)
    params = inference.abstract_variables(det, 64, parallel.make_mesh(jax.devices()[:1]))["params"]
    mask = param_groups.frozen_mask(params, param_groups.of_config(config.optim, config.model))
    ours = sum(
        int(np.prod(p.shape)) for p, f in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(mask)) if f
    )
    theirs = freeze_stages(build_model("retinanet", 5, 64), k)
    assert ours == theirs > 0


def test_inference_bench_times_the_predict_step_which_gives_evaluations_detections():
    import jax

    from jaxdet import detectors, parallel
    from jaxdet.detectors import inference
    from jaxdet.training import optim
    from jaxdet.training.step import init_key, init_state

    config = default.get_config("tiny")
    config.train.batch_size, config.data.image_size, config.model.score_threshold = 4, 64, 0.0  # (4 test devices)
    r = benchmark.bench_jaxdet_inference(config, 5, steps=1, warmup=1)
    assert r["mode"] == "inference" and r["step_s"] > 0 and r["flops_per_step"] > 1e6
    # Score threshold 0: every image keeps some detections (at most max_detections) after NMS.
    assert 0 < r["detections"] <= 4 * config.model.max_detections

    detector = detectors.build_detector(config, 5, parallel.AXIS)
    tx, _ = optim.make_optimizer(config.optim, 10)
    mesh = parallel.make_mesh(jax.devices()[:1])
    state = init_state(detector, tx, init_key(0), 64, mesh)
    batch = parallel.global_batch(mesh, synthetic_batch(2, 64, 8, 5))
    predicted = inference.make_predict_step(detector, mesh)(state.variables, batch["image"])
    evaluated, _ = inference.make_eval_step(detector, mesh)(state.variables, batch)
    for k in ("boxes", "scores", "classes", "valid"):
        np.testing.assert_allclose(np.asarray(predicted[k]), np.asarray(evaluated[k]), atol=1e-5, err_msg=k)


@pytest.mark.slow  # (~36 s on 2 cores: a ResNet-50 RetinaNet's eval forward; the train side's test stays default)
def test_torchvision_inference_side_runs_post_processing_with_the_given_settings():
    pytest.importorskip("torchvision")
    from benchmarks.torchvision_side import bench_torchvision

    kwargs = {"score_thresh": 0.0, "nms_thresh": 0.5, "detections_per_img": 7, "topk_candidates": 50}
    r = bench_torchvision("retinanet", 64, 2, 8, 5, steps=1, warmup=1, mode="inference", model_kwargs=kwargs)
    assert r["mode"] == "inference" and r["step_s"] > 0
    assert r["detections"] == 2 * 7  # threshold 0: each image fills its 7 detections
