"""Training-speed and inference-speed benchmarks, optionally side by side with torchvision.

    python -m experiments.bench --config=experiments/configs/retinanet_r50.py --image_size=512 --batch=2 --steps=10
    python -m experiments.bench --config=experiments/configs/retinanet_r50.py --image_size=512 --batch=2 \
        --steps=10 --compare=torchvision
    python -m experiments.bench --config=experiments/configs/retinanet_r50.py --image_size=640 --batch=16 \
        --config.train.compute_dtype=bfloat16 --compare=torchvision      # on a GPU
    python -m experiments.bench --mode=inference --config=experiments/configs/retinanet_r50.py \
        --image_size=512 --batch=2 --compare=torchvision

--mode=inference times the eval-mode forward with the detector's post-processing (score
threshold, per-level top-k, NMS; static shapes) on both sides, with torchvision's
post-processing set to the config's (model.score_threshold, pre_nms_topk,
nms_iou_threshold, max_detections; Faster R-CNN's RPN counts). Random weights give
scores under the usual 0.05 threshold, which would leave torchvision's NMS nothing to
do, so inference defaults to --score_threshold=0 on both sides: every candidate goes
through NMS, the post-processing's full load (jaxdet's static shapes do that work anyway).

Synthetic batches (no dataset). Prints one line per framework and, with --compare, a
last line `ratio jaxdet/torchvision images/s: X`. The torchvision side runs in a child
process (the `bench` extra: torch, torchvision), after the jaxdet side has finished.
--json_out writes every figure; --profile_dir=DIR also traces 3 steps and prints the time
per XLA op and per source scope (`benchmarks/profile.py`).
"""

import json
import subprocess
import sys

from absl import app, flags
from ml_collections import config_flags

from experiments import cli
from jaxdet.errors import ConfigError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config file (get_config).", lock_config=False)
_IMAGE_SIZE = flags.DEFINE_integer("image_size", None, "Square input side (default: the config's data.image_size).")
_BATCH = flags.DEFINE_integer("batch", None, "Global batch (default: the config's train.batch_size).")
_STEPS = flags.DEFINE_integer("steps", 10, "Timed steps (the median is reported).")
_WARMUP = flags.DEFINE_integer("warmup", 3, "Untimed steps after compilation.")
_NUM_CLASSES = flags.DEFINE_integer("num_classes", 80, "Object classes (both frameworks).")
_MODE = flags.DEFINE_enum("mode", "train", ["train", "inference"], "What to time: the train step or inference.")
_SCORE_THRESHOLD = flags.DEFINE_float(
    "score_threshold", 0.0, "Inference: the score threshold of both sides (overrides model.score_threshold)."
)
_COMPARE = flags.DEFINE_enum("compare", "", ["", "torchvision"], "Also time this framework's equivalent model.")
_JSON_OUT = flags.DEFINE_string("json_out", "", "Write the results (a JSON list) to this file.")
_CACHE = flags.DEFINE_string(
    "compilation_cache_dir", "", "Persistent XLA compilation cache; a second run then reports the cache load time."
)
_PROFILE_DIR = flags.DEFINE_string(
    "profile_dir", "", "Also trace 3 steps with jax.profiler into this directory; prints where the time goes."
)
_TORCH_WORKER = flags.DEFINE_string("torch_worker", "", "Internal: run the torchvision side with these JSON args.")


def _torch_side(args: dict) -> dict:
    """Runs the torchvision benchmark in a child process; returns its result dict."""
    cmd = [sys.executable, "-m", "experiments.bench", f"--torch_worker={json.dumps(args)}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"error: the torchvision side failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _torchvision_kwargs(config, mode: str = "train") -> dict:
    """Builder arguments that give torchvision's model the work jaxdet's config does."""
    m = config.model
    if m.name == "faster_rcnn":
        f = m.faster_rcnn
        kwargs = {
            "rpn_pre_nms_top_n_train": f.rpn_pre_nms_topk,
            "rpn_post_nms_top_n_train": f.rpn_post_nms_topk,
            "rpn_batch_size_per_image": f.rpn_per_image,
            "box_batch_size_per_image": f.roi_per_image,
        }
        if mode == "inference":
            kwargs.update(
                rpn_pre_nms_top_n_test=f.rpn_pre_nms_topk, rpn_post_nms_top_n_test=f.rpn_post_nms_topk,
                rpn_nms_thresh=f.rpn_nms_iou, box_score_thresh=m.score_threshold, box_nms_thresh=m.nms_iou_threshold,
                box_detections_per_img=m.max_detections,
            )  # fmt: skip
        return kwargs
    if mode == "inference":  # RetinaNet, FCOS (YOLO's twin), SSD: the same argument names
        return {"score_thresh": m.score_threshold, "nms_thresh": m.nms_iou_threshold,
                "detections_per_img": m.max_detections, "topk_candidates": m.pre_nms_topk}  # fmt: skip
    return {}


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if _TORCH_WORKER.value:
        from benchmarks.torchvision_side import bench_torchvision

        print(json.dumps(bench_torchvision(**json.loads(_TORCH_WORKER.value))))
        return
    if _CONFIG.value is None:
        raise app.UsageError("--config is required")
    from benchmarks import harness as benchmark
    from jaxdet.training import runtime

    runtime.enable_compilation_cache(_CACHE.value)
    config = _CONFIG.value
    runtime.set_cpu_devices(config.train.get("cpu_devices", 0))
    if _IMAGE_SIZE.value:
        config.data.image_size = _IMAGE_SIZE.value
    if _BATCH.value:
        config.train.batch_size = _BATCH.value
    inference = _MODE.value == "inference"
    if inference:
        config.model.score_threshold = _SCORE_THRESHOLD.value
    try:
        bench = benchmark.bench_jaxdet_inference if inference else benchmark.bench_jaxdet
        results = [bench(config, _NUM_CLASSES.value, _STEPS.value, _WARMUP.value, profile_dir=_PROFILE_DIR.value)]
    except ConfigError as e:
        raise SystemExit(f"error: {e}") from None
    print(benchmark.format_result(results[0]), flush=True)
    if _COMPARE.value == "torchvision":
        args = {
            "detector": config.model.name,
            "image_size": config.data.image_size,
            "batch": config.train.batch_size,
            "max_boxes": config.data.max_boxes,
            "num_classes": _NUM_CLASSES.value,
            "steps": _STEPS.value,
            "warmup": _WARMUP.value,
            "compute_dtype": config.train.compute_dtype,
            "model_kwargs": _torchvision_kwargs(config, _MODE.value),
            "mode": _MODE.value,
            "frozen_stages": config.model.get("frozen_stages", -1),  # (the same stages stop training)
        }
        results.append(_torch_side(args))
        print(benchmark.format_result(results[1]))
        print(f"ratio jaxdet/torchvision images/s: {results[0]['images_per_s'] / results[1]['images_per_s']:.3f}")
    if _JSON_OUT.value:
        with open(_JSON_OUT.value, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    cli.run(main)
