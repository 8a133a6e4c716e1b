"""The StableHLO artifact (jaxdet/export) against `predict` on the same checkpoint, run
in a fresh process that never imports the detector code."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from coco_folder import tiny_config, write_coco
from PIL import Image

from jaxdet import experiment
from jaxdet.evaluation.predict import Predictor
from jaxdet.export import stablehlo

_RUNNER = """
import json, sys
import numpy as np
from PIL import Image
from jaxdet.export.load import Artifact
artifact = Artifact(sys.argv[1])
out = []
for path in sys.argv[2:]:
    d = artifact(np.asarray(Image.open(path).convert("RGB")))
    out.append({k: np.asarray(v).tolist() for k, v in d.items()})
loaded = sorted(m for m in sys.modules if m.startswith("jaxdet"))
print(json.dumps({"detections": out, "modules": loaded}))
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory, compilation_cache):
    root = tmp_path_factory.mktemp("export")
    data = write_coco(str(root / "coco"), n_train=12, n_val=4)
    workdir = str(root / "run")
    config = tiny_config(data, compilation_cache, steps=6, eval_every=6, checkpoint_every=6)
    config.model.score_threshold = 0.01  # (a few steps: some detections to compare)
    experiment.train_and_evaluate(config, workdir, jax.devices()[:1])
    return workdir


@pytest.mark.parametrize("batch", [2, pytest.param("dynamic", marks=pytest.mark.slow)])  # (~15 s each)
def test_the_artifact_in_a_fresh_process_gives_predicts_detections(run, tmp_path, batch):
    out = stablehlo.export(run, batch=batch, out=str(tmp_path / "artifact"))
    meta = json.load(open(os.path.join(out, "metadata.json")))
    assert meta["category_ids"] == [17, 44] and meta["batch"] == batch and len(meta["config_hash"]) == 16
    rng = np.random.default_rng(0)
    paths = []
    for k, (h, w) in enumerate([(50, 90), (120, 70), (64, 64)]):  # sizes other than the model's
        paths.append(str(tmp_path / f"im{k}.png"))
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(paths[-1])
    proc = subprocess.run([sys.executable, "-c", _RUNNER, out, *paths], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["modules"] == ["jaxdet", "jaxdet.data", "jaxdet.data.augment", "jaxdet.data.canvas", "jaxdet.export",
                              "jaxdet.export.load"]  # fmt: skip
    predictor = Predictor(run)
    total = 0
    for path, d in zip(paths, got["detections"], strict=True):
        ref = predictor(np.asarray(Image.open(path).convert("RGB")))
        assert d["classes"] == ref["classes"].tolist()  # same count, classes and order
        np.testing.assert_allclose(d["boxes"], ref["boxes"].reshape(-1, 4), atol=1e-3)
        np.testing.assert_allclose(d["scores"], ref["scores"], atol=1e-5)
        total += len(d["classes"])
    assert total > 0


@pytest.mark.slow  # ~90 s: every detector exported twice
@pytest.mark.parametrize("recipe", ["fcos", "yolov8", "yolo", "ssd", "centernet", "detr", "faster_rcnn"])
def test_every_detector_exports_with_a_fixed_and_a_symbolic_batch(recipe):
    """The serialized program's detections equal the jitted function's, on random pixels."""
    import importlib

    import jax.numpy as jnp

    from jaxdet import detectors
    from jaxdet.detectors.inference import forward
    from jaxdet.training.step import init_key

    config = importlib.import_module(f"experiments.configs.{recipe}").get_config("tiny")
    config.model.kernels = "plain"
    size = config.data.image_size
    det = detectors.build_detector(config, 3)
    variables = jax.jit(lambda x: det.module.init({"params": init_key(0), "sampling": init_key(1)}, x))(
        np.zeros((1, size, size, 3), np.float32)
    )

    def run(images):
        outputs, _ = forward(det, variables, {"image": images}, jax.random.key(0), train=False)
        return det.predict(outputs)._asdict()

    x = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype(np.float32)
    want = jax.device_get(jax.jit(run)(x))
    for batch in (2, jax.export.symbolic_shape("b")[0]):
        exported = jax.export.deserialize(
            jax.export.export(jax.jit(run))(jax.ShapeDtypeStruct((batch, size, size, 3), jnp.float32)).serialize()
        )
        got = jax.device_get(exported.call(x))
        for key in want:
            np.testing.assert_allclose(got[key], want[key], atol=1e-4, err_msg=f"{recipe} {key} batch {batch}")
