"""A small COCO-JSON folder written on the spot, for end-to-end tests on user-style data.

Each image is a noisy background with one to three filled rectangles whose colour is
their class; the category ids are the caller's (gapped by default, as COCO's are).
"""

from __future__ import annotations

import json
import os

import numpy as np
from PIL import Image

COLOURS = ((230, 40, 40), (40, 90, 230), (40, 200, 60))


def write_coco(
    root: str, n_train: int = 16, n_val: int = 8, category_ids=(17, 44), size: int = 64, seed: int = 0
) -> dict[str, str]:
    """Writes root/{train,val}.json and root/images/*.png; returns the config.data fields."""
    rng = np.random.default_rng(seed)
    os.makedirs(os.path.join(root, "images"), exist_ok=True)
    categories = [{"id": int(c), "name": f"class{c}"} for c in category_ids]
    ann_id, paths = 1000, {}
    for split, n, first_id in (("train", n_train, 100), ("val", n_val, 500)):
        images, annotations = [], []
        for k in range(n):
            image_id, name = first_id + 3 * k, f"{split}_{k}.png"  # ids neither 0-based nor contiguous
            pixels = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
            for _ in range(int(rng.integers(1, 4))):
                label = int(rng.integers(len(category_ids)))
                w, h = (int(v) for v in rng.integers(size // 5, size // 2, 2))
                x, y = int(rng.integers(0, size - w)), int(rng.integers(0, size - h))
                pixels[y : y + h, x : x + w] = COLOURS[label % len(COLOURS)]
                annotations.append({"id": ann_id, "image_id": image_id, "category_id": int(category_ids[label]),
                                    "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})  # fmt: skip
                ann_id += 1
            Image.fromarray(pixels).save(os.path.join(root, "images", name))
            images.append({"id": image_id, "file_name": name, "width": size, "height": size})
        path = os.path.join(root, f"{split}.json")
        with open(path, "w") as f:
            json.dump({"images": images, "annotations": annotations, "categories": categories}, f)
        paths[split] = path
    images_dir = os.path.join(root, "images")
    return {
        "format": "coco_json",
        "train_annotations": paths["train"],
        "train_images": images_dir,
        "val_annotations": paths["val"],
        "val_images": images_dir,
    }


def overrides(data: dict[str, str], **extra) -> list[str]:
    """`--config.data.*` flags for `data` plus `--config.<key>=<value>` for `extra`."""
    flags = [f"--config.data.{k}={v}" for k, v in data.items()]
    return flags + [f"--config.{k}={v}" for k, v in extra.items()]


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def train_command(workdir: str, data: dict[str, str], cache: str, **extra) -> list[str]:
    """`python -m experiments.train` on the tiny config over `data`, one CPU device; `extra`
    are config overrides ({"train.steps": 4}), `cache` the XLA compilation cache."""
    import sys

    settings = {"train.compilation_cache_dir": cache, "train.num_prediction_images": 0, "train.log_every": 1, **extra}
    return [sys.executable, "-m", "experiments.train", "--config=experiments/configs/default.py:tiny",
            f"--workdir={workdir}", *overrides(data, **settings)]  # fmt: skip


def environment() -> dict[str, str]:
    """The subprocesses' environment: one CPU device, LLVM opt off (as the suite), the project on the path."""
    flags = "--xla_force_host_platform_device_count=1 --xla_backend_optimization_level=0"
    return {**os.environ, "XLA_FLAGS": flags, "PYTHONPATH": ROOT}


def run(cmd: list[str], timeout: float = 300):
    """Runs `cmd` in the project root; returns the CompletedProcess (stdout and stderr as text)."""
    import subprocess

    return subprocess.run(cmd, cwd=ROOT, env=environment(), capture_output=True, text=True, timeout=timeout)


def start(cmd: list[str], log_path: str):
    """Starts `cmd` with stdout and stderr to `log_path`; returns the Popen."""
    import subprocess

    log = open(log_path, "w")
    return subprocess.Popen(cmd, cwd=ROOT, env=environment(), stdout=log, stderr=subprocess.STDOUT, text=True)


def wait_until(proc, condition, what: str, timeout: float = 240) -> None:
    """Polls `condition()` until True; AssertionError if `proc` exits first or time runs out."""
    import time

    t0 = time.time()
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the run exited ({proc.returncode}) before {what}")
        if time.time() - t0 > timeout:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


def wait_for_line(proc, log_path: str, text: str, timeout: float = 240) -> None:
    """Waits until `text` appears in the log at `log_path` (its tail in the failure's message)."""
    try:
        wait_until(proc, lambda: text in open(log_path).read(), repr(text), timeout)
    except AssertionError as e:
        raise AssertionError(f"{e}:\n{open(log_path).read()[-3000:]}") from None


def untrained_workdir(workdir: str) -> str:
    """A workdir as training leaves it (config.json of the tiny config with score threshold 0,
    classes.json with ids 3 and 9, checkpoint 1), made in a second without training."""
    import jax

    from experiments.configs import default
    from jaxdet import checkpoints, configs, detectors, parallel
    from jaxdet.data.classes import Classes
    from jaxdet.training import optim
    from jaxdet.training.step import init_state

    config = configs.resolve(default.get_config("tiny"))
    config.model.score_threshold = 0.0
    configs.record(config, workdir)
    Classes(("a", "b"), (3, 9)).write(workdir)
    detector = detectors.build_detector(config, 2, None, jax.devices()[0].platform)
    tx, _ = optim.make_optimizer(config.optim, config.train.steps)
    state = init_state(detector, tx, jax.random.key(0), 64, parallel.make_mesh(jax.devices()[:1]))
    ckpts = checkpoints.Checkpoints(os.path.join(workdir, "checkpoints"), 1, 1)
    ckpts.save(1, state.items(), force=True)
    ckpts.wait()
    ckpts.close()
    return workdir


def tiny_config(data: dict[str, str], cache: str, **train):
    """The tiny default config on the COCO folder `data`: no prediction pictures, the
    session's compilation cache, and `train` fields (steps, eval_every, ...) set."""
    from experiments.configs import default

    config = default.get_config("tiny")
    for key, value in data.items():
        config.data[key] = value
    config.train.num_prediction_images = 0
    config.train.compilation_cache_dir = cache
    for key, value in train.items():
        config.train[key] = value
    return config
