"""A run's curves from its metrics.jsonl: loss terms, learning rate, AP (and val loss)."""

from __future__ import annotations

import json
import os

from jaxdet.detectors import get_definition
from jaxdet.errors import ConfigError


def read_metrics(workdir: str) -> list[dict]:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        raise ConfigError(f"{path} does not exist: is {workdir!r} the workdir of a jaxdet run?")
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def loss_terms(workdir: str) -> list[str]:
    """The named loss terms of the run in `workdir` (its recorded detector's)."""
    path = os.path.join(workdir, "config.json")
    if not os.path.exists(path):
        raise ConfigError(f"{path} does not exist: is {workdir!r} the workdir of a jaxdet run?")
    with open(path) as f:
        name = json.load(f).get("model", {}).get("name", "retinanet")
    return list(get_definition(name).terms)


def plot_curves(workdir: str, out: str | None = None) -> str:
    """Draws workdir/curves.png (or `out`): training loss and its named terms, learning rate,
    eval AP and validation loss terms against the step. Returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(workdir)
    train = [r for r in rows if r["split"] == "train"]
    evals = [r for r in rows if r["split"] == "eval"]
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.6))
    terms = loss_terms(workdir)
    for key in ("loss", *terms):
        if any(r.get(key) for r in train):
            axes[0].plot([r["step"] for r in train], [r[key] for r in train], label=key)
    axes[0].set_yscale("log")
    axes[0].set_title("training loss and its terms (unweighted)")
    axes[1].plot([r["step"] for r in train], [r.get("learning_rate", float("nan")) for r in train])
    axes[1].set_title("learning rate")
    for key in ("AP", "AP50", "AP75"):
        axes[2].plot([r["step"] for r in evals], [r.get(key, float("nan")) for r in evals], "o-", label=key)
    axes[2].set_title("validation COCO AP")
    axes[2].set_ylim(0, 1)
    for key in terms:
        values = [r.get(f"loss_{key}", float("nan")) for r in evals]
        if any(values):
            axes[3].plot([r["step"] for r in evals], values, "o-", label=key)
    axes[3].set_title("validation loss (unweighted terms)")
    for ax in axes:
        ax.set_xlabel("step")
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    fig.tight_layout()
    out = out or os.path.join(workdir, "curves.png")
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
