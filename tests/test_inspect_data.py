"""`experiments.inspect_data` on a small COCO-JSON folder written here."""

import os
import subprocess
import sys

from test_coco_json import _write_dataset

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_inspect_data_writes_report_plots_and_samples(tmp_path):
    ann, img = _write_dataset(tmp_path / "data")
    out = tmp_path / "out"
    cmd = [
        sys.executable, "-m", "experiments.inspect_data", "--config=experiments/configs/default.py:tiny",
        f"--out={out}", "--samples=2", "--throughput_batches=2", "--config.data.format=coco_json",
        f"--config.data.train_annotations={ann}", f"--config.data.train_images={img}",
        f"--config.data.val_annotations={ann}", f"--config.data.val_images={img}", "--config.train.batch_size=2",
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = (out / "report.txt").read_text()
    assert "train: 3 images (1 without objects), 3 boxes, 1 crowd/ignore regions" in report
    assert "class counts: cat 1, dog 2" in report
    assert "1 boxes dropped: width or height <= 0" in report  # the load report is part of it
    assert "input pipeline:" in report and "images/s" in report
    files = set(os.listdir(out))
    for name in ("train_class_histogram.png", "train_box_sizes.png", "val_boxes_per_image.png", "train_sample_00.png"):
        assert name in files, files
