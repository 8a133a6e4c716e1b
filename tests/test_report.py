"""The run report (experiments.report) opened in a real browser, headless Chromium: every
image loaded, no script or console error; with the anatomy of the same run in it."""

import json
import os

import pytest

from jaxdet.report import browser, build
from jaxdet.report import html as H

needs_browser = pytest.mark.skipif(
    browser.find() is None, reason="no Chromium here (apt-get install chromium; .ci/run installs it)"
)


@needs_browser
def test_the_load_check_sees_a_broken_image_and_a_script_error(tmp_path):
    """The check the report tests rely on can fail: a page with a missing image, a
    console error and an uncaught exception says so."""
    page = tmp_path / "bad.html"
    body = '<img src="missing.png"><script>console.error("boom"); null.x;</script>'
    page.write_text(H.page("bad", [("a", "A", body)]))
    got = browser.render(str(page))
    # three errors: the image's load error, the console error and the exception
    assert got["images"] == 1 and got["broken"] == 1 and got["errors"] == 3, got
    assert any("boom" in line for line in got["console"]) and any("Uncaught" in line for line in got["console"])


@needs_browser
def test_a_trained_runs_report_renders_whole_with_its_anatomy(tmp_path, trained_tiny_run):
    from conftest import copy_run

    from jaxdet.anatomy import tool

    workdir = copy_run(trained_tiny_run, str(tmp_path / "run"))
    recipe = os.path.abspath("experiments/configs/default.py") + ":tiny"
    with open(os.path.join(workdir, "recipe.json"), "w") as f:
        json.dump({"config": recipe, "command": ["experiments.train", "--config=..."]}, f)
    lines = []
    tool.anatomy(workdir, ["1", "2"], images=6, batch_size=4, maps=2, log=lines.append)
    assert any(line.startswith("anatomy: step 2, 6 images") for line in lines), lines
    doc = json.load(open(os.path.join(workdir, "anatomy", "anatomy.json")))
    assert [c["step"] for c in doc["checkpoints"]] == [1, 2]
    for entry in doc["checkpoints"]:
        for term, e in entry["terms"].items():
            if e["other"] is not None:  # shares of one term add up to 1
                assert sum(e["shares"].values()) + e["other"] == pytest.approx(1.0, abs=1e-5), term
    page = build.report(workdir, log=lines.append)
    text = open(page).read()
    # The config against its recipe: the fields the test changed, nothing else's noise.
    assert "train.steps" in text and "train.checkpoint_every" in text and "Gradient anatomy" in text
    assert 'src="data:image/png;base64,' in text and "http" not in text.split("<body")[1].replace("https", "")
    got = browser.render(page, screenshot=str(tmp_path / "shot.png"))
    assert got["broken"] == 0 and got["errors"] == 0 and got["console"] == [], got
    # curves, PR curves, 2 predictions, shares / modules / iou, and the spatial maps
    assert got["images"] >= 8, got
    assert os.path.getsize(tmp_path / "shot.png") > 10_000


@needs_browser
def test_a_sweeps_report_shows_the_paired_table_and_the_arms(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for arm in ("loss.focal_gamma=2.0", "loss.focal_gamma=0.0"):
        os.makedirs(tmp_path / arm / "seed0")
    (tmp_path / "results.json").write_text(
        json.dumps({"arms": {"loss.focal_gamma=2.0": {}, "loss.focal_gamma=0.0": {}}})
    )
    (tmp_path / "results.md").write_text(
        "Seeds: 0, 1\n\n| arm | AP |\n|---|---|\n| loss.focal_gamma=2.0 | 0.5 |\n| loss.focal_gamma=0.0 | 0.4 |\n"
        "\n- loss.focal_gamma=0.0 seed 1: FAILED: NonFiniteError\n"
    )
    fig = plt.figure(figsize=(2, 2))
    fig.savefig(tmp_path / "results.png")
    plt.close(fig)
    page = build.report(str(tmp_path), log=lambda line: None)
    text = open(page).read()
    assert "<td>loss.focal_gamma=0.0</td>" in text and "FAILED: NonFiniteError" in text
    got = browser.render(page)
    assert got["images"] == 1 and got["broken"] == 0 and got["errors"] == 0, got


def test_a_folder_that_is_no_run_is_refused(tmp_path):
    from jaxdet.errors import ConfigError

    with pytest.raises(ConfigError, match="neither config.json .* nor results.json"):
        build.report(str(tmp_path))
