"""The Grain input pipeline: worker processes change nothing but speed, a dead worker is an
error naming the images, annotations are shared with workers, and training runs where
TensorFlow cannot be imported."""

import json
import os
import pickle
import signal
import subprocess
import sys
import time

import numpy as np
import psutil
import pytest
from PIL import Image

from jaxdet.data import annotation_table, pipeline, readers

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Installed as sitecustomize.py: TensorFlow is not found, as if it were not installed
# (`import tensorflow` fails, importlib.util.find_spec gives None), whatever the venv holds.
_WITHOUT_TENSORFLOW = """
import sys
from importlib.machinery import PathFinder


class _WithoutTensorFlow(PathFinder):
    @classmethod
    def find_spec(cls, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            return None
        return PathFinder.find_spec(name, path, target)


sys.meta_path[:] = [_WithoutTensorFlow if f is PathFinder else f for f in sys.meta_path]
"""


def _coco_folder(root, n=24, seed=0):
    """n JPEGs of varied sizes with 1-3 coloured rectangles each, and their COCO JSON."""
    rng = np.random.default_rng(seed)
    os.makedirs(root / "images", exist_ok=True)
    images, annotations = [], []
    for i in range(n):
        h, w = int(rng.integers(40, 90)), int(rng.integers(40, 90))
        pixels = rng.integers(0, 60, (h, w, 3), dtype=np.uint8)
        for _ in range(int(rng.integers(1, 4))):
            bw, bh = int(rng.integers(8, w // 2)), int(rng.integers(8, h // 2))
            x, y = int(rng.integers(0, w - bw)), int(rng.integers(0, h - bh))
            cls = int(rng.integers(0, 2))
            pixels[y : y + bh, x : x + bw] = (230, 40, 40) if cls == 0 else (40, 230, 40)
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, "category_id": cls + 1,
                                "bbox": [x, y, bw, bh], "iscrowd": 0})  # fmt: skip
        Image.fromarray(pixels).save(root / "images" / f"{i}.jpg", quality=90)
        images.append({"id": i + 1, "file_name": f"{i}.jpg", "width": w, "height": h})
    categories = [{"id": 1, "name": "red"}, {"id": 2, "name": "green"}]
    path = root / "train.json"
    path.write_text(json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    return str(path), str(root / "images")


def _source(tmp_path, n=24):
    from jaxdet.data.coco_json import load_coco_json

    ann, img = _coco_folder(tmp_path, n)
    return readers.FileSource(load_coco_json(ann, img)[0].shared(), img)


def test_workers_change_nothing_but_speed(tmp_path):
    """Batches from 2 worker processes equal the in-process ones, bitwise, with every
    augmentation on; a stream started at step 3 equals steps 3.. of one started at 0."""
    source = _source(tmp_path)
    aug = dict(crop_prob=0.5, crop_min=0.5, color_jitter=(0.3, 0.3, 0.3, 0.05), affine=(10.0, 0.1, 0.3, 2.0),
               mixup_prob=0.5, mosaic_until_step=4)  # fmt: skip
    streams = {}
    for workers in (0, 2):
        p = pipeline.Pipeline(source, 64, 6, workers=workers)
        it = p.train(4, 7, 0, True, (0.7, 1.3), 0.5, **aug)
        streams[workers] = [next(it) for _ in range(6)]
        it.close()
    resumed = pipeline.Pipeline(source, 64, 6, workers=2).train(4, 7, 3, True, (0.7, 1.3), 0.5, **aug)
    tail = [next(resumed) for _ in range(3)]
    resumed.close()
    for a, b in zip(streams[0], streams[2]):
        assert a.keys() == b.keys()
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    for a, b in zip(streams[0][3:], tail):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["boxes"], b["boxes"])
    evals = [list(pipeline.Pipeline(source, 64, 6, workers=w).eval(5)) for w in (0, 2)]
    assert len(evals[0]) == len(evals[1]) == 5  # 24 images: 4 full batches and one padded
    for a, b in zip(*evals):
        np.testing.assert_array_equal(a["image"], b["image"])
        np.testing.assert_array_equal(a["image_id"], b["image_id"])


def test_dead_worker_is_an_error_naming_the_images_not_a_hang(tmp_path):
    source = _source(tmp_path)
    stream = pipeline.Pipeline(source, 64, 6, workers=1).train(4, 0)
    next(stream)
    workers = [
        c
        for c in psutil.Process().children(recursive=True)
        if "python" in c.name().lower() and "resource_tracker" not in " ".join(c.cmdline())
    ]
    assert workers, "no input worker process found"
    for w in workers:
        os.kill(w.pid, signal.SIGKILL)
    t0 = time.time()
    with pytest.raises(RuntimeError, match=r"input worker process died.*training step \d+: .*images/\d+\.jpg"):
        for _ in range(20):  # batches already handed over may still arrive first
            next(stream)
    assert time.time() - t0 < 30
    stream.close()


def test_annotation_table_reaches_workers_as_a_file_name(tmp_path):
    """A shared table pickles as its directory (workers map the same pages, no copy each)."""
    source = _source(tmp_path, n=12)
    shared = source.table
    assert shared.directory and all(isinstance(a, np.memmap) for a in shared.arrays.values())
    restored = pickle.loads(pickle.dumps(shared))
    assert len(pickle.dumps(shared)) < 2000
    assert isinstance(restored.arrays["boxes"], np.memmap) and restored.name(3) == shared.name(3)
    np.testing.assert_array_equal(restored.boxes(5), shared.boxes(5))
    view = shared.take(4, 8)
    assert len(view) == 4 and view.name(0) == shared.name(4)
    builder = annotation_table.TableBuilder(["a"])
    builder.add("x.jpg", 1, (10, 20), [[0, 0, 5, 5]], [0])
    plain = builder.build()
    assert plain.directory is None and plain.boxes(0).tolist() == [[0, 0, 5, 5]]


def test_training_runs_where_tensorflow_cannot_be_imported(tmp_path):
    """The tiny config trains and evaluates on a COCO-JSON folder in a process where
    `import tensorflow` fails (input workers, TensorBoard events and all)."""
    ann, img = _coco_folder(tmp_path / "data", n=24)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_WITHOUT_TENSORFLOW)
    flags = "--xla_backend_optimization_level=0"  # (see conftest)
    env = {**os.environ, "PYTHONPATH": str(site), "JAX_PLATFORMS": "cpu", "XLA_FLAGS": flags}
    check = subprocess.run([sys.executable, "-c", "import tensorflow"], env=env, capture_output=True, text=True)
    assert check.returncode != 0 and "No module named 'tensorflow'" in check.stderr
    workdir = tmp_path / "run"
    cmd = [
        sys.executable, "-m", "experiments.train", "--config=experiments/configs/default.py:tiny",
        f"--workdir={workdir}", "--config.data.format=coco_json", "--config.data.workers=1",
        f"--config.data.train_annotations={ann}", f"--config.data.train_images={img}",
        f"--config.data.val_annotations={ann}", f"--config.data.val_images={img}",
        "--config.train.compilation_cache_dir=",
    ]  # fmt: skip
    run = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "eval step 6: AP" in run.stdout and "24 train images" in run.stdout
    rows = [json.loads(line) for line in open(workdir / "metrics.jsonl")]
    assert any(r["split"] == "eval" for r in rows) and rows[-1]["step"] == 6
    assert os.listdir(workdir / "tensorboard")  # event files, written without TensorFlow
