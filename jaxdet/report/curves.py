"""One figure of a run's metrics.jsonl: the training loss terms, the evaluation AP and
validation losses, and (with train.term_grad_norms_every) each term's gradient norm and
the cosines between terms, over steps."""

from __future__ import annotations

import numpy as np

_NOT_TERMS = {"step", "split", "loss", "grad_norm", "learning_rate", "nonfinite", "images_per_sec", "truncated_boxes",
              "dropped_boxes", "replaced_images"}  # fmt: skip


def _series(records: list[dict], split: str, key: str) -> tuple[list[int], list[float]]:
    rows = [(r["step"], r[key]) for r in records if r.get("split") == split and key in r]
    return [s for s, _ in rows], [v for _, v in rows]


def draw(records: list[dict], path: str) -> str | None:
    """Writes the figure to `path` and returns it; None when there is no training record."""
    train = [r for r in records if r.get("split") == "train"]
    if not train:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    terms = [k for k in train[-1] if k not in _NOT_TERMS and "/" not in k]
    diagnostics = [r for r in records if r.get("split") == "diagnostics"]
    panels = 3 if diagnostics else 2
    fig, axes = plt.subplots(1, panels, figsize=(5.2 * panels, 3.8))
    for key in ["loss", *terms]:
        steps, values = _series(records, "train", key)
        if any(values):
            axes[0].plot(steps, values, label=key, lw=2 if key == "loss" else 1)
    axes[0].set_yscale("log")
    axes[0].set_xlabel("step")
    axes[0].set_title("training loss and its weighted terms", fontsize=9)
    axes[0].legend(fontsize=7)
    steps, ap = _series(records, "eval", "AP")
    if ap:
        axes[1].plot(steps, ap, marker="o", label="AP")
        for key in ("AP50", "AP75"):
            s, v = _series(records, "eval", key)
            axes[1].plot(s, v, marker=".", lw=0.8, label=key)
    axes[1].set_xlabel("step")
    axes[1].set_title("evaluation (COCO AP)", fontsize=9)
    axes[1].legend(fontsize=7)
    if diagnostics:
        ax, twin = axes[2], axes[2].twinx()
        for key in sorted(k for k in diagnostics[-1] if k.startswith("grad_norm/")):
            s, v = _series(records, "diagnostics", key)
            ax.plot(s, v, label=key.split("/", 1)[1])
        ax.set_yscale("log")
        for key in sorted(k for k in diagnostics[-1] if k.startswith("grad_cos/")):
            s, v = _series(records, "diagnostics", key)
            if np.any(np.asarray(v) != 0):
                twin.plot(s, v, ls="--", label="cos " + key.split("/", 1)[1].replace("__", " vs "))
        twin.axhline(0, color="k", lw=0.5)
        twin.set_ylim(-1, 1)
        ax.set_xlabel("step")
        ax.set_title("per-term gradient norm (solid) and cosine (dashed)", fontsize=9)
        lines = ax.get_legend_handles_labels()
        more = twin.get_legend_handles_labels()
        ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
