"""Test set-up: 4 fake CPU devices (for the data-parallel tests) and a shared TFDS dir."""

import fcntl
import os

# Must happen before JAX initialises its backend. The suite's programs are tiny and compiled
# once or twice each, so compiling dominates its time: without LLVM's optimisation passes
# (XLA's own HLO passes still run) they compile ~30% faster and run slower, which tests
# don't measure (speed is BENCHMARKS.md's, measured with the default level).
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4 --xla_backend_optimization_level=0")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import pytest  # noqa: E402


def _session_dir(tmp_path_factory, xdist_worker: str, name: str):
    """A folder for the whole test session: under pytest-xdist the base temp's parent, which
    its workers share; without workers (-n 0, -p no:xdist) a fresh one."""
    if xdist_worker == "master":
        return tmp_path_factory.mktemp(name)
    path = tmp_path_factory.getbasetemp().parent / name
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture(scope="session")
def tfds_dir(tmp_path_factory, xdist_worker) -> str:
    """A TFDS data dir holding `jaxdet_shapes` (ArrayRecord), generated once per test session
    (~20 s): under pytest-xdist, by the first worker to need it, the others waiting on a lock."""
    from jaxdet.data import sources

    path = _session_dir(tmp_path_factory, xdist_worker, "tfds")
    with open(path / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        sources.tfds_source("jaxdet_shapes", "train", str(path))  # prepares it, as a run does
    return str(path)


@pytest.fixture(scope="session")
def xdist_worker(request) -> str:
    """pytest-xdist's worker name ("gw0", ...), or "master" without workers (also where
    the plugin is not installed or is off)."""
    return getattr(request.config, "workerinput", {}).get("workerid", "master")


@pytest.fixture(scope="session", autouse=True)
def compilation_cache(tmp_path_factory, xdist_worker) -> str:
    """One persistent XLA cache for the session, shared by its xdist workers: the many tests
    that build the same tiny programs (each run re-creates its jitted steps) load them
    instead of recompiling, whichever worker compiled them first. (JAX writes an entry in
    place: an entry read while the other process writes it fails to decompress, and JAX
    then warns and compiles. JAX's file lock, on with jax_compilation_cache_max_size, is
    left off: its eviction trips over the entries of the CLI tests' subprocesses, which
    write without it.)"""
    from jaxdet.training import runtime

    path = _session_dir(tmp_path_factory, xdist_worker, "xla_cache")
    return runtime.enable_compilation_cache(str(path), min_compile_seconds=0.3)


@pytest.fixture(scope="session")
def trained_tiny_run(tmp_path_factory, xdist_worker, compilation_cache) -> str:
    """A finished tiny RetinaNet run on a small COCO folder (10 train / 4 val images, 2
    steps, checkpoints at 1 and 2, 2 prediction pictures), trained once per session by the
    first worker to need it (the audit and the report tests read it; each works on its own
    copy, `copy_run`)."""
    import jax
    from coco_folder import tiny_config, write_coco

    from jaxdet import experiment

    root = _session_dir(tmp_path_factory, xdist_worker, "trained_tiny")
    workdir = root / "run"
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (root / "done").exists():
            data = write_coco(str(root / "coco"), n_train=10, n_val=4)
            config = tiny_config(data, compilation_cache, steps=2, eval_every=2, checkpoint_every=1, log_every=1)
            config.train.num_prediction_images = 2
            experiment.train_and_evaluate(config, str(workdir), jax.devices()[:1])
            (root / "done").write_text("")
    return str(workdir)


def copy_run(workdir: str, to: str) -> str:
    """A copy of a finished run's workdir at `to` (without the owner lock of the run)."""
    import shutil

    shutil.copytree(workdir, to, ignore=shutil.ignore_patterns("owner.lock"))
    return to


# The numerics part of the suite: ops whose values a reference defines (box ops, losses,
# assigners, NMS, RoIAlign, the layer forms against the plain ones, torchvision parity),
# needing neither TensorFlow, Grain nor a dataset. `tools/numerics.sh` runs them on an
# accelerator (`pytest -m numerics`), where float32 matrix products default to TF32.
NUMERICS = {
    "test_boxes.py",
    "test_losses.py",
    "test_assigners.py",
    "test_box_coder_anchors.py",
    "test_postprocess.py",
    "test_roi_align.py",
    "test_layers.py",
    "test_convert.py",
    "test_torchvision_losses.py",
    "test_torchvision_detections.py",
    "test_torchvision_fcos.py",
    "test_matching.py",
    "test_set_loss.py",
}


def pytest_collection_modifyitems(items) -> None:
    for item in items:
        if item.path.name in NUMERICS:
            item.add_marker(pytest.mark.numerics)
