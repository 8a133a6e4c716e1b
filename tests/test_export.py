"""The exported artifacts (jaxdet/export: StableHLO, ONNX) against `predict` on the same
checkpoint, run in a fresh process that never imports the detector code (nor, for ONNX,
jax)."""

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
from jaxdet.errors import ConfigError
from jaxdet.evaluation.predict import Predictor
from jaxdet.export import stablehlo
from jaxdet.export.onnx import export as onnx_export

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
print(json.dumps({"detections": out, "modules": loaded, "jax": "jax" in sys.modules}))
"""


def assert_same_detections(got: dict, ref: dict, box_atol: float = 1e-3, score_atol: float = 1e-5) -> None:
    """Same count; scores position by position within `score_atol` (both lists are sorted);
    each detection equal to the reference's at its position (class, box within `box_atol`),
    or, where scores tie within `score_atol` (another runtime's rounding may order a tie
    the other way), to one of the tied reference detections."""
    scores, ref_scores = np.asarray(got["scores"]), np.asarray(ref["scores"])
    assert scores.shape == ref_scores.shape, (scores.shape, ref_scores.shape)
    np.testing.assert_allclose(scores, ref_scores, atol=score_atol)
    boxes, ref_boxes = np.asarray(got["boxes"]).reshape(-1, 4), np.asarray(ref["boxes"]).reshape(-1, 4)
    used = np.zeros(len(ref_scores), bool)
    for i in range(len(scores)):
        tied = np.nonzero(~used & (np.abs(ref_scores - scores[i]) <= score_atol))[0]
        same = [j for j in tied if got["classes"][i] == ref["classes"][j]
                and np.abs(boxes[i] - ref_boxes[j]).max() <= box_atol]  # fmt: skip
        assert same, f"detection {i} ({got['classes'][i]}, {scores[i]}, {boxes[i]}) is not the reference's"
        used[i if i in same else same[0]] = True


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


def test_the_onnx_artifact_in_onnxruntime_gives_predicts_detections(run, tmp_path):
    """model.onnx in onnxruntime, in a fresh process without jax, against predict on images
    of three other sizes; the metadata rides in the model too."""
    import onnx

    out = onnx_export.export(run, batch=2, out=str(tmp_path / "artifact"))
    meta = json.load(open(os.path.join(out, "metadata.json")))
    assert meta["format"] == "onnx" and meta["category_ids"] == [17, 44] and meta["batch"] == 2
    props = {p.key: p.value for p in onnx.load(os.path.join(out, "model.onnx")).metadata_props}
    assert json.loads(props["jaxdet"]) == meta
    rng = np.random.default_rng(1)
    paths = []
    for k, (h, w) in enumerate([(50, 90), (120, 70), (64, 64)]):
        paths.append(str(tmp_path / f"im{k}.png"))
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(paths[-1])
    proc = subprocess.run([sys.executable, "-c", _RUNNER, out, *paths], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not got["jax"] and "jaxdet.export.load" in got["modules"]
    predictor = Predictor(run)
    total = 0
    for path, d in zip(paths, got["detections"], strict=True):
        ref = predictor(np.asarray(Image.open(path).convert("RGB")))
        assert_same_detections(d, {k: np.asarray(v).tolist() for k, v in ref.items()})
        total += len(d["classes"])
    assert total > 0


@pytest.mark.slow  # ~40 s: every detector converted and run in onnxruntime
@pytest.mark.parametrize("recipe", ["default", "fcos", "yolov8", "yolo", "ssd", "centernet", "detr", "faster_rcnn"])
def test_every_detector_exports_to_onnx_with_the_jitted_functions_detections(recipe):
    """Random weights, every candidate kept (score threshold 0), random pixels: the ONNX
    model's detections in onnxruntime equal the jitted function's."""
    import importlib

    import jax.numpy as jnp
    import onnxruntime

    from jaxdet import detectors
    from jaxdet.detectors.inference import forward
    from jaxdet.export.onnx import to_onnx
    from jaxdet.training.step import init_key

    config = importlib.import_module(f"experiments.configs.{recipe}").get_config("tiny")
    config.model.kernels = "plain"
    config.model.score_threshold = 0.0
    size = config.data.image_size
    det = detectors.build_detector(config, 3)
    variables = jax.jit(lambda x: det.module.init({"params": init_key(0), "sampling": init_key(1)}, x))(
        np.zeros((1, size, size, 3), np.float32)
    )
    # Fresh heads score every candidate alike (their bias initialisation), and a tie among
    # hundreds is broken by rounding: noise on the weights spreads the scores, as training does.
    rng = np.random.default_rng(1)
    noise = lambda v: v + 0.05 * rng.normal(size=v.shape).astype(v.dtype)  # noqa: E731
    variables = {**variables, "params": jax.tree.map(noise, variables["params"])}

    def run(images):
        outputs, _ = forward(det, variables, {"image": images}, jax.random.key(0), train=False)
        return det.predict(outputs)._asdict()

    x = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype(np.float32)
    want = jax.device_get(jax.jit(run)(x))
    model = to_onnx(run, jax.ShapeDtypeStruct(x.shape, jnp.float32))
    session = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, {"images": x}), strict=True))
    np.testing.assert_array_equal(got["valid"], want["valid"])
    for b in range(2):
        keep = want["valid"][b]
        assert keep.sum() > 0 and np.all(np.isfinite(want["scores"][b][keep]))
        assert_same_detections(
            {k: v[b][keep] for k, v in got.items()}, {k: np.asarray(v)[b][keep] for k, v in want.items()}
        )


def test_an_earlier_artifact_is_never_written_over(run, tmp_path):
    out = tmp_path / "artifact"
    out.mkdir()
    (out / "metadata.json").write_text("{}")
    proc = subprocess.run([sys.executable, "-m", "experiments.export", f"--workdir={run}", f"--out={out}"],
                          capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))  # fmt: skip
    assert proc.returncode != 0, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: --out={out} already holds an artifact (metadata.json): choose another --out, or pass "
                      "--overwrite to replace it"], proc.stderr[-2000:]  # fmt: skip
    assert (out / "metadata.json").read_text() == "{}"
    with pytest.raises(ConfigError, match="already holds an artifact"):
        onnx_export.export(run, batch=1, out=str(out))
    stablehlo.export(run, batch=1, out=str(out), overwrite=True)
    assert json.loads((out / "metadata.json").read_text())["batch"] == 1


def test_the_weights_as_safetensors_seed_a_run_on_the_same_classes(run, tmp_path):
    from jaxdet import configs, detectors, parallel
    from jaxdet.detectors import inference
    from jaxdet.export import weights
    from jaxdet.training import init_from

    out = weights.export(run, out=str(tmp_path / "w"))
    config, classes = configs.load_recorded(run)
    config.model.init_from = os.path.join(out, weights.WEIGHTS)
    mesh = parallel.make_mesh(jax.local_devices()[:1])
    det = detectors.build_detector(config, len(classes), None)
    fresh = jax.tree_util.tree_map(
        np.zeros_like, jax.device_get(inference.restore_weights(run, "latest", det, 64, mesh)[0])
    )
    lines = []
    loaded = init_from.transfer(config, fresh, list(classes.names), mesh, log=lines.append)
    want, _ = inference.restore_weights(run, "latest", det, config.data.image_size, mesh)
    for a, b in zip(jax.tree_util.tree_leaves(loaded), jax.tree_util.tree_leaves(jax.device_get(want))):
        np.testing.assert_array_equal(a, b)
    assert "the same 2 classes: the class-dependent tensors load too" in lines[0]
    assert json.loads(open(os.path.join(out, "metadata.json")).read())["format"] == "safetensors"


def test_savedmodel_is_refused_because_tensorflow_cannot_run_jaxs_stablehlo(tmp_path):
    """The reason the CLI gives is checked, not assumed: a jax2tf SavedModel of a top_k (as in
    every detector's post-processing) fails when TensorFlow runs it. When a TensorFlow that
    reads this jax's StableHLO is pinned, this test fails: then build the format."""
    tf = pytest.importorskip("tensorflow")
    from jax.experimental import jax2tf

    proc = subprocess.run([sys.executable, "-m", "experiments.export", f"--workdir={tmp_path}", "--format=savedmodel"],
                          capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(__file__)))  # fmt: skip
    assert proc.returncode != 0 and "--format=savedmodel is not offered" in proc.stderr, proc.stderr[-2000:]
    module = tf.Module()
    fn = jax2tf.convert(lambda x: jax.lax.top_k(x, 2)[0])
    module.f = tf.function(fn, input_signature=[tf.TensorSpec((5,), tf.float32)], autograph=False)
    tf.saved_model.save(module, str(tmp_path / "sm"))
    loaded = tf.saved_model.load(str(tmp_path / "sm"))
    with pytest.raises(Exception, match="failed to deserialize portable artifact"):
        loaded.f(tf.constant([1.0, 5.0, 3.0, 4.0, 2.0]))
