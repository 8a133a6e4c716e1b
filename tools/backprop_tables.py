"""The tables and figures of docs/backprop.md, from the runs it names (see that page).

    python tools/backprop_tables.py --sweep=runs/backprop --retinanet=runs/default \
        --faster_rcnn=runs/faster_rcnn --out=docs/images/backprop > tables.md

Reads each run's metrics.jsonl (train.term_grad_norms_every diagnostics, AP) and
anatomy/anatomy.json (experiments.anatomy); compares arms with the sweep's first arm seed
by seed (jaxdet.sweep.stats: paired t-test). Prints markdown; writes PNGs to --out.
"""

from __future__ import annotations

import argparse
import glob
import json
import os

import numpy as np

from jaxdet.sweep import stats

BASE = "loss.focal_gamma=2.0,optim.name=adamw,optim.learning_rate=0.002,optim.momentum=0.9,loss.localization=giou,model.retinanet.assigner=atss"  # noqa: E501
EASY = "negative <0.05"


def arm(**changes) -> str:
    fields = dict(p.split("=", 1) for p in BASE.split(","))
    fields.update({k.replace("__", "."): str(v) for k, v in changes.items()})
    return ",".join(f"{k}={v}" for k, v in fields.items())


ARMS = {
    "gamma 2 (default)": BASE,
    "gamma 0": arm(loss__focal_gamma="0.0"),
    "gamma 1": arm(loss__focal_gamma="1.0"),
    "SGD": arm(optim__name="sgd", optim__learning_rate="0.02"),
    "RMSprop": arm(optim__name="rmsprop", optim__learning_rate="0.001", optim__momentum="0.0"),
    "smooth L1": arm(loss__localization="smooth_l1"),
    "max-IoU": arm(model__retinanet__assigner="max_iou"),
}


def _jsonl(path: str) -> list[dict]:
    return [json.loads(line) for line in open(path) if line.strip()] if os.path.exists(path) else []


def seeds(sweep: str, name: str) -> dict[int, str]:
    out = {}
    for d in sorted(glob.glob(os.path.join(sweep, ARMS[name], "seed*"))):
        if os.path.exists(os.path.join(d, "best.json")):
            out[int(os.path.basename(d)[4:])] = d
    return out


def final_ap(run: str) -> float | None:
    evals = [r for r in _jsonl(os.path.join(run, "metrics.jsonl")) if r.get("split") == "eval" and "AP" in r]
    return evals[-1]["AP"] if evals else None


def anatomy(run: str) -> dict | None:
    path = os.path.join(run, "anatomy", "anatomy.json")
    return json.load(open(path)) if os.path.exists(path) else None


def per_seed(sweep: str, name: str, fn) -> dict[int, float]:
    out = {}
    for s, run in seeds(sweep, name).items():
        v = fn(run)
        if v is not None:
            out[s] = float(v)
    return out


def share(run: str, term: str, group: str, step: int | None = None, key: str = "shares") -> float | None:
    doc = anatomy(run)
    if doc is None:
        return None
    entry = doc["checkpoints"][-1] if step is None else next(c for c in doc["checkpoints"] if c["step"] == step)
    return entry["terms"][term][key].get(group)


def positives(run: str) -> float | None:
    doc = anatomy(run)
    if doc is None:
        return None
    last = doc["checkpoints"][-1]
    return sum(last["terms"]["localization"]["iou"]["count"]) / last["images"]


def _fmt(values: dict[int, float], digits: int = 4) -> str:
    v = np.asarray(list(values.values()))
    if v.size == 0:
        return "-"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}" if v.size > 1 else f"{v.mean():.{digits}f}"


def _paired(base: dict, other: dict) -> str:
    p = stats.compare(base, other)
    if p.n < 2:
        return f"n = {p.n}"
    return f"{p.mean:+.4f} [{p.ci_low:+.4f}, {p.ci_high:+.4f}], p = {p.p:.2g} ({p.verdict})"


def table(sweep: str, names: list[str], metrics: dict[str, callable]) -> list[str]:
    """Rows per arm: each metric mean ± sd over seeds, and its paired difference from the baseline."""
    head = ["arm", "seeds", *[f"{m}" for m in metrics], *[f"{m}: arm - default" for m in metrics]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    base = {m: per_seed(sweep, "gamma 2 (default)", fn) for m, fn in metrics.items()}
    for name in names:
        got = {m: per_seed(sweep, name, fn) for m, fn in metrics.items()}
        n = len(seeds(sweep, name))
        cells = [name, str(n), *[_fmt(got[m]) for m in metrics]]
        cells += ["" if name == "gamma 2 (default)" else _paired(base[m], got[m]) for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def diagnostics_figure(sweep: str, names: list[str], path: str) -> list[str]:
    """Per arm (mean over seeds): each term's gradient norm and the cls-loc cosine over steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
    lines = ["| arm | step | grad norm cls | grad norm loc | cos(cls, loc) |", "|---|---|---|---|---|"]
    for name in names:
        rows = {}
        for run in seeds(sweep, name).values():
            for r in _jsonl(os.path.join(run, "metrics.jsonl")):
                if r.get("split") == "diagnostics":
                    rows.setdefault(r["step"], []).append(r)
        steps = sorted(rows)
        if not steps:
            continue
        mean = lambda k: [np.mean([r[k] for r in rows[s]]) for s in steps]  # noqa: E731
        axes[0].plot(steps, mean("grad_norm/classification"), label=name)
        axes[1].plot(steps, mean("grad_norm/localization"), label=name)
        axes[2].plot(steps, mean("grad_cos/classification__localization"), label=name)
        for s in (steps[0], 100, 200, steps[-1]):
            if s in rows:
                vals = [
                    np.mean([r[k] for r in rows[s]])
                    for k in (
                        "grad_norm/classification",
                        "grad_norm/localization",
                        "grad_cos/classification__localization",
                    )
                ]
                lines.append(f"| {name} | {s} | {vals[0]:.3f} | {vals[1]:.3f} | {vals[2]:+.3f} |")
    for ax, title in zip(axes, ("classification gradient norm", "localization gradient norm", "cos(cls, loc)")):
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    axes[0].set_yscale("log")
    axes[1].set_yscale("log")
    axes[2].axhline(0, color="k", lw=0.5)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return lines


def iou_figure(sweep: str, names: list[str], path: str) -> list[str]:
    """The localization term's mean gradient magnitude at a positive against its IoU."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    lines = []
    for name in names:
        curves = []
        for run in seeds(sweep, name).values():
            doc = anatomy(run)
            if doc:
                e = doc["checkpoints"][-1]["terms"]["localization"]["iou"]
                curves.append([np.nan if v is None else v for v in e["mean_magnitude"]])
                edges = np.asarray(e["edges"])
        if not curves:
            continue
        mean = np.nanmean(np.asarray(curves, float), axis=0)
        centres = 0.5 * (edges[1:] + edges[:-1])
        ax.plot(centres, mean, marker="o", label=name)
        lines.append(f"| {name} | " + " | ".join("-" if np.isnan(v) else f"{v:.3g}" for v in mean) + " |")
    ax.set_xlabel("IoU of the positive's predicted box with its target")
    ax.set_ylabel("mean |d loc / d box outputs|")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    head = "| arm | " + " | ".join(f"{a:.1f}-{b:.1f}" for a, b in zip(edges[:-1], edges[1:])) + " |"
    return [head, "|" + "---|" * (len(edges))] + lines


def modules_table(run: str, label: str) -> list[str]:
    doc = anatomy(run)
    last = doc["checkpoints"][-1]
    terms = [t for t, e in last["terms"].items() if e["other"] is not None]
    lines = [f"{label} (step {last['step']}): each term's gradient norm per module", "",
             "| module | " + " | ".join(terms) + " |", "|" + "---|" * (len(terms) + 1)]  # fmt: skip
    for m, v in last["modules"].items():
        lines.append(f"| {m} | " + " | ".join(f"{v['norm'][t]:.3g}" for t in terms) + " |")
    return lines


def _label(doc: dict) -> str:
    changes = doc.get("loss_changes", {})
    return ", ".join(f"{k.split('.')[-1]}={v}" for k, v in changes.items()) or "as trained"


def same_weights(folders: list[str], path: str) -> list[str]:
    """One run's checkpoint measured with several losses (experiments.anatomy --loss): the
    classification gradient's shares by group, squared and summed, per loss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    docs = [json.load(open(os.path.join(f, "anatomy.json"))) for f in folders]
    groups = docs[0]["groups"]
    lines = ["| loss change | cls value | " + " | ".join(groups) + " |", "|" + "---|" * (len(groups) + 2)]
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.5 * len(docs) + 2.4))
    colours = plt.cm.viridis(np.linspace(0, 0.95, len(groups)))
    for i, doc in enumerate(docs):
        e = doc["checkpoints"][-1]["terms"]["classification"]
        label = ", ".join(f"{k}={v}" for k, v in doc.get("loss_changes", {}).items()) or "as trained"
        cells = [f"{e['shares'][g]:.1%} / {e['magnitude_shares'][g]:.1%}" for g in groups]
        lines.append(f"| {label} | {e['value']:.4f} | " + " | ".join(cells) + " |")
        for ax, key in zip(axes, ("shares", "magnitude_shares")):
            left = 0.0
            for j, g in enumerate(groups):
                ax.barh(i, e[key][g], left=left, color=colours[j], label=g if i == 0 else None)
                left += e[key][g]
            ax.set_yticks(range(len(docs)), [_label(d) for d in docs])
    axes[0].set_title("share of the classification gradient's squared norm", fontsize=9)
    axes[1].set_title("share of its per-location norms, summed", fontsize=9)
    axes[1].legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=3, frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return lines


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sweep", required=True)
    ap.add_argument("--retinanet")
    ap.add_argument("--faster_rcnn")
    ap.add_argument("--out", required=True)
    ap.add_argument("--same_weights", default="", help="anatomy folders of one checkpoint with several --loss")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    sw = a.sweep
    ap_ = final_ap
    if a.same_weights:
        print("## Same weights, another gamma\n")
        print("\n".join(same_weights(a.same_weights.split(","), os.path.join(a.out, "same_weights.png"))))
    print("## Focal gamma\n")
    easy = lambda r: share(r, "classification", EASY)  # noqa: E731
    easy_summed = lambda r: share(r, "classification", EASY, key="magnitude_shares")  # noqa: E731

    def negative(run: str) -> float | None:
        pos, ign = share(run, "classification", "positive"), share(run, "classification", "ignored")
        return None if pos is None else 1 - pos - (ign or 0.0)

    print("\n".join(table(sw, ["gamma 2 (default)", "gamma 1", "gamma 0"],
                          {"AP": ap_, "easy-negative share": easy, "easy-negative share (summed norms)": easy_summed,
                           "all-negative share": negative})))  # fmt: skip
    print("\n## Over training\n")
    print(
        "\n".join(
            diagnostics_figure(sw, ["gamma 2 (default)", "SGD", "RMSprop"], os.path.join(a.out, "diagnostics.png"))
        )
    )
    print("\n## Optimizers\n")
    print("\n".join(table(sw, ["gamma 2 (default)", "SGD", "RMSprop"], {"AP": ap_})))
    print("\n## Localization loss\n")
    print("\n".join(table(sw, ["gamma 2 (default)", "smooth L1"], {"AP": ap_})))
    print()
    print("\n".join(iou_figure(sw, ["gamma 2 (default)", "smooth L1"], os.path.join(a.out, "iou.png"))))
    print("\n## Assigner\n")
    pos_share = lambda r: share(r, "classification", "positive")  # noqa: E731
    print(
        "\n".join(
            table(
                sw,
                ["gamma 2 (default)", "max-IoU"],
                {"AP": ap_, "positives per image": positives, "positive share of cls": pos_share},
            )
        )
    )
    for run, label in ((a.retinanet, "RetinaNet"), (a.faster_rcnn, "Faster R-CNN")):
        if run and anatomy(run):
            print("\n" + "\n".join(modules_table(run, label)))


if __name__ == "__main__":
    main()
