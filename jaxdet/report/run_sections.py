"""The sections of one run's report, each from the files the run (and the tools run on
it) wrote in its workdir; a section whose files are absent says so or is left out."""

from __future__ import annotations

import glob
import importlib.util
import json
import os

from jaxdet import configs
from jaxdet.report import curves
from jaxdet.report import html as H

RECIPE = "recipe.json"  # written by experiments.train / experiments.sweep (experiments/cli.py)


def _read_json(path: str):
    with open(path) as f:
        return json.load(f)


def find_recipe(workdir: str) -> tuple[str, dict] | None:
    """(folder, recipe.json) of the run, or of the sweep it is an arm of (two folders up)."""
    for folder in (workdir, os.path.dirname(workdir), os.path.dirname(os.path.dirname(workdir))):
        path = os.path.join(folder, RECIPE)
        if os.path.exists(path):
            return folder, _read_json(path)
    return None


def load_recipe(spec: str) -> dict:
    """The config dict a config file gives (`path[:arg]`, get_config(arg))."""
    path, _, arg = spec.partition(":")
    module_spec = importlib.util.spec_from_file_location("jaxdet_report_recipe", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.get_config(arg or None).to_dict()


def config_section(workdir: str) -> str:
    """The run's config against its recipe (every field that differs), and the whole config."""
    recorded = _read_json(os.path.join(workdir, "config.json"))
    full = (
        f"<details><summary>the whole config.json</summary><pre>{H.esc(json.dumps(recorded, indent=1))}</pre></details>"
    )
    found = find_recipe(workdir)
    if found is None:
        return f'<p class="note">No {RECIPE} (runs before it was recorded): the recipe is unknown.</p>' + full
    folder, recipe = found
    command = " ".join(recipe.get("command", []))
    head = f"<p>Recipe <code>{H.esc(recipe['config'])}</code>; command <code>{H.esc(command)}</code>"
    head += f" (recorded in {H.esc(folder)})</p>" if folder != workdir else "</p>"
    try:
        base = load_recipe(recipe["config"])
    except Exception as e:  # noqa: BLE001 (a recipe file moved or broken: say so, show the config)
        return (
            head + f'<p class="note">The recipe could not be loaded ({H.esc(type(e).__name__)}: {H.esc(e)}).</p>' + full
        )
    rows = [line.strip().split(": ", 1) for line in configs.diff(base, recorded)]
    rows = [[key, *value.split(" -> ", 1)] for key, value in rows]
    note = '<p class="note">0 / "" fields the run resolves at start-up (data.max_boxes) show their resolved value.</p>'
    return head + H.table(["field", "recipe", "this run"], rows) + note + full


def metrics(workdir: str) -> list[dict]:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def summary_section(workdir: str, records: list[dict]) -> str:
    config = _read_json(os.path.join(workdir, "config.json"))
    evals = [r for r in records if r.get("split") == "eval" and "AP" in r]
    d = config["data"]
    rows = [
        ["detector", config["model"]["name"]],
        ["backbone", config["model"]["backbone"]],
        ["data", d.get("name") if d.get("format") == "tfds" else d.get("train_annotations") or d.get("root")],
        ["steps", config["train"]["steps"]],
        ["last step logged", max((r["step"] for r in records), default=None)],
    ]
    if evals:
        last = evals[-1]
        rows += [["AP (last evaluation)", last["AP"]], ["AP50", last.get("AP50")], ["at step", last["step"]]]
    best = os.path.join(workdir, "best.json")
    if os.path.exists(best):
        b = _read_json(best)
        rows.append([f"best {b['metric']}", f"{b['value']:.4f} at step {b['step']}"])
    return H.table(["", ""], rows)


def curves_section(workdir: str, records: list[dict], out: str) -> str:
    drawn = curves.draw(records, os.path.join(out, "curves.png"))
    if not drawn:
        return '<p class="note">metrics.jsonl holds no training records yet.</p>'
    return H.image(drawn, "loss terms, AP and gradient diagnostics over steps")


def evaluation_section(workdir: str, records: list[dict]) -> str | None:
    folder = os.path.join(workdir, "eval")
    if not os.path.isdir(folder):
        return None
    parts = []
    if os.path.exists(os.path.join(folder, "per_class.md")):
        parts.append("<h3>Per-class AP</h3>" + H.markdown(open(os.path.join(folder, "per_class.md")).read()))
    if os.path.exists(os.path.join(folder, "errors.txt")):
        parts.append(f"<h3>Error breakdown</h3><pre>{H.esc(open(os.path.join(folder, 'errors.txt')).read())}</pre>")
    if os.path.exists(os.path.join(folder, "pr_curves.png")):
        parts.append("<h3>Precision-recall</h3>" + H.image(os.path.join(folder, "pr_curves.png"), "PR curves"))
    return "".join(parts) or None


def predictions_section(workdir: str, most: int = 8) -> str | None:
    paths = sorted(glob.glob(os.path.join(workdir, "predictions", "*.png")))
    if not paths:
        return None
    last = os.path.basename(paths[-1]).split("_")[0]
    shown = [p for p in paths if os.path.basename(p).startswith(last)][:most]
    return f"<p>{H.esc(last)}: detections drawn on evaluation images.</p>" + H.gallery(shown)


def _pct(share: float | None) -> str | None:
    return None if share is None else f"{share:.1%}"


def anatomy_section(workdir: str, most_maps: int = 6) -> str | None:
    folder = os.path.join(workdir, "anatomy")
    path = os.path.join(folder, "anatomy.json")
    if not os.path.exists(path):
        return None
    doc = _read_json(path)
    last = doc["checkpoints"][-1]
    rows, magnitude = [], []
    for term, e in last["terms"].items():
        if e["other"] is None:
            continue
        rows.append([term, e["value"], e["output_grad_norm"], *[_pct(e["shares"][g]) for g in doc["groups"]],
                     _pct(e["other"])])  # fmt: skip
        magnitude.append([term, *[_pct(e.get("magnitude_shares", {}).get(g)) for g in doc["groups"]]])
    parts = [
        f"<p>{H.esc(doc['detector'])}, step {last['step']}, {last['images']} images of the {doc['split']} split "
        f"(<code>experiments.anatomy</code>). Shares of each weighted term's squared gradient norm with "
        f"respect to the head outputs, by the location's role in the detector's own assignment.</p>",
        H.table(["term", "value", "|d/d outputs|", *doc["groups"], "other"], rows),
        "<p>The same split of the norm summed location by location, not squared (many small pulls, "
        "such as easy negatives', weigh more here):</p>",
        H.table(["term", *doc["groups"]], magnitude),
    ]
    for name in ("shares.png", "modules.png", "iou.png"):
        if os.path.exists(os.path.join(folder, name)):
            parts.append(H.image(os.path.join(folder, name), name))
    maps = sorted(glob.glob(os.path.join(folder, "maps", "*.png")))[:most_maps]
    if maps:
        parts.append("<h3>Spatial maps</h3>" + H.gallery(maps))
    return "".join(parts)


def audit_section(workdir: str, most: int = 6) -> str | None:
    found = sorted(glob.glob(os.path.join(workdir, "audit", "*", "audit.json")), key=os.path.getmtime)
    if not found:
        return None
    doc = _read_json(found[-1])
    folder = os.path.dirname(found[-1])
    rows = [[s.get("kind"), s.get("image_id"), s.get("category_id"), s.get("suspicion")]
            for s in doc.get("suspects", [])[:20]]  # fmt: skip
    where = f"<p>{H.esc(os.path.relpath(folder, workdir))}: step {doc.get('step')}, {H.esc(doc.get('counts'))}.</p>"
    parts = [where, H.table(["kind", "image_id", "category_id", "suspicion"], rows)]
    pictures = sorted(glob.glob(os.path.join(folder, "gallery", "*.png")))[:most]
    if pictures:
        parts.append(H.gallery(pictures))
    return "".join(parts)
