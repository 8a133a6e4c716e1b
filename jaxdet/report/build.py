"""`experiments.report`: one self-contained HTML page of a run (or of a sweep) from what
its workdir holds: config against its recipe, curves, per-class AP, error breakdown, PR
curves, predictions, the gradient anatomy and the audit when they were run; for a sweep
the paired table, its plots and the arms' anatomies side by side."""

from __future__ import annotations

import json
import os
from collections.abc import Callable

from jaxdet import files
from jaxdet.errors import ConfigError
from jaxdet.report import html as H
from jaxdet.report import run_sections as R


def _run_page(workdir: str, out: str) -> str:
    records = R.metrics(workdir)
    sections = [("summary", "Summary", R.summary_section(workdir, records)),
                ("config", "Config against its recipe", R.config_section(workdir)),
                ("curves", "Curves", R.curves_section(workdir, records, out))]  # fmt: skip
    for anchor, heading, body in (
        ("evaluation", "Evaluation", R.evaluation_section(workdir, records)),
        ("predictions", "Predictions", R.predictions_section(workdir)),
        ("anatomy", "Gradient anatomy", R.anatomy_section(workdir)),
        ("audit", "Audit: top suspects", R.audit_section(workdir)),
    ):
        if body is not None:
            sections.append((anchor, heading, body))
    missing = [h for a, h in (("anatomy", "experiments.anatomy"), ("audit", "experiments.audit"))
               if a not in {s[0] for s in sections}]  # fmt: skip
    if missing:
        sections.append(("more", "Not run on this workdir",
                         "<p>" + ", ".join(f"<code>python -m {m} --workdir={H.esc(workdir)}</code>" for m in missing)
                         + " would add its section.</p>"))  # fmt: skip
    return H.page(f"jaxdet run report: {os.path.basename(os.path.abspath(workdir))}", sections)


def _arm_anatomies(workdir: str, arms: list[str]) -> str | None:
    rows, groups = [], None
    for arm in arms:
        for seed_dir in sorted(d for d in os.listdir(os.path.join(workdir, arm)) if d.startswith("seed")):
            path = os.path.join(workdir, arm, seed_dir, "anatomy", "anatomy.json")
            if not os.path.exists(path):
                continue
            with open(path) as f:
                doc = json.load(f)
            groups = groups or doc["groups"]
            last = doc["checkpoints"][-1]
            for term, e in last["terms"].items():
                if e["other"] is not None:
                    rows.append([arm, seed_dir, last["step"], term, *[e["shares"].get(g) for g in groups]])
    if not rows:
        return None
    return ("<p>Each arm's runs measured by <code>experiments.anatomy</code> (last checkpoint): the share of each "
            "term's squared gradient norm by location group.</p>"
            + H.table(["arm", "seed", "step", "term", *groups], rows))  # fmt: skip


def _sweep_page(workdir: str) -> str:
    with open(os.path.join(workdir, "results.json")) as f:
        results = json.load(f)
    arms = [a for a in results["arms"] if os.path.isdir(os.path.join(workdir, a))]
    sections = []
    md = os.path.join(workdir, "results.md")
    if os.path.exists(md):
        sections.append(("results", "Paired results", H.markdown(open(md).read())))
    png = os.path.join(workdir, "results.png")
    if os.path.exists(png):
        sections.append(("plots", "Arms: AP per seed, losses, gradient norms", H.image(png, "results.png")))
    anatomies = _arm_anatomies(workdir, arms)
    if anatomies:
        sections.append(("anatomy", "Gradient anatomy per arm", anatomies))
    found = R.find_recipe(workdir)
    if found:
        sections.append(("recipe", "Recipe", f"<pre>{H.esc(json.dumps(found[1], indent=1))}</pre>"))
    listing = "".join(f"<li>{H.esc(a)}: <code>python -m experiments.report --workdir={H.esc(os.path.join(workdir, a))}"
                      "/seed0</code></li>" for a in arms)  # fmt: skip
    sections.append(("arms", "Each arm's own report", f"<ul>{listing}</ul>"))
    return H.page(f"jaxdet sweep report: {os.path.basename(os.path.abspath(workdir))}", sections)


def report(workdir: str, out: str | None = None, log: Callable[[str], None] = print) -> str:
    """Writes `out`/index.html (default workdir/report) for the run or sweep in `workdir`;
    returns its path."""
    is_sweep = os.path.exists(os.path.join(workdir, "results.json"))
    if not is_sweep and not os.path.exists(os.path.join(workdir, "config.json")):
        raise ConfigError(
            f"{workdir} holds neither config.json (a run's workdir) nor results.json (a sweep's): "
            "pass --workdir of a jaxdet run or sweep"
        )
    out = out or os.path.join(workdir, "report")
    os.makedirs(out, exist_ok=True)
    text = _sweep_page(workdir) if is_sweep else _run_page(workdir, out)
    path = os.path.join(out, "index.html")
    files.write_atomic(path, text)
    log(f"report: wrote {path} ({len(text) / 1e6:.1f} MB, images inline)")
    return path
