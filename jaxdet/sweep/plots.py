"""results.png: AP per arm with each seed's line across the arms (the paired view), loss
curves, and per-term gradient norms when the runs logged them."""

from __future__ import annotations

import itertools

import numpy as np


def terms_of(records: list[dict]) -> list[str]:
    """Every arm's loss terms, in order of first appearance."""
    return list(dict.fromkeys(t for r in records for t in r["terms"]))


def plot(records: list[dict], arms: list[str], path: str) -> None:
    """Writes the figure of `records` (per (arm, seed)) for `arms`, in order, to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_diag = any(r.get("diagnostics") for r in records)
    fig, axes = plt.subplots(1, 3 if with_diag else 2, figsize=(18 if with_diag else 12, 4.5))
    ax_ap, ax_loss = axes[0], axes[1]
    ap = {(r["arm"], r["seed"]): r["final"].get("AP", np.nan) for r in records}
    finite = {arm: [v for (a, _), v in ap.items() if a == arm and np.isfinite(v)] for arm in arms}
    means = [np.mean(finite[arm]) if finite[arm] else np.nan for arm in arms]  # (an arm whose runs all failed: none)
    ax_ap.bar(range(len(arms)), means, color="tab:blue", alpha=0.35, label="mean over seeds")
    # The paired view: one line per seed across the arms (a difference that is real moves every line alike).
    for i, seed in enumerate(sorted({s for _, s in ap})):
        ax_ap.plot(range(len(arms)), [ap.get((arm, seed), np.nan) for arm in arms], "o-", color=f"C{i}",
                   label=f"seed {seed}")  # fmt: skip
    ax_ap.set_xticks(range(len(arms)), arms, rotation=30, ha="right", fontsize=8)
    ax_ap.set_ylabel("COCO AP (validation)")
    ax_ap.legend(fontsize=7)
    ax_ap.set_title("AP per arm: mean (bars), each seed (lines)")
    for arm in arms:
        curves = [r["train"] for r in records if r["arm"] == arm and r["train"]]
        if not curves:
            continue
        n = min(len(c) for c in curves)
        steps = [row["step"] for row in curves[0][:n]]
        loss = np.mean([[row["loss"] for row in c[:n]] for c in curves], axis=0)
        ax_loss.plot(steps, loss, label=arm)
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("training loss (weighted total)")
    ax_loss.set_yscale("log")
    if ax_loss.lines:
        ax_loss.legend(fontsize=7)
    ax_loss.set_title("loss curves (mean over seeds)")
    if with_diag:
        _plot_term_gradients(axes[2], records, arms)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_term_gradients(ax, records: list[dict], arms: list[str]) -> None:
    """Per-term gradient norms over steps (first seed of each arm): which term drives training."""
    styles = dict(zip(terms_of(records), itertools.cycle(["-", "--", ":", "-."])))
    for i, arm in enumerate(arms):
        rows = next((r["diagnostics"] for r in records if r["arm"] == arm and r.get("diagnostics")), [])
        if not rows:
            continue
        steps = [row["step"] for row in rows]
        for term, style in styles.items():
            values = [row.get(f"grad_norm/{term}", np.nan) for row in rows]
            if np.nanmax(values) > 0:
                ax.plot(steps, values, style, color=f"C{i}", label=f"{arm}: {term}")
    ax.set_xlabel("step")
    ax.set_ylabel("gradient norm of the weighted term")
    ax.set_yscale("log")
    ax.legend(fontsize=6)
    ax.set_title("per-term gradient norms (train.term_grad_norms_every)")
