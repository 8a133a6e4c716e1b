"""The anatomy's PNGs: group shares, module norms and cosines (over checkpoints), the
localization gradient against IoU, and per-image spatial maps of each term's gradient."""

from __future__ import annotations

import os

import numpy as np

from jaxdet.anatomy import layout as L


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def shares(entry: dict, groups: list[str], path: str) -> None:
    """Per term, a bar of its squared gradient norm's shares by location group (and by level)."""
    plt = _pyplot()
    terms = [t for t, e in entry["terms"].items() if e["other"] is not None]
    fig, axes = plt.subplots(1, 2, figsize=(12, 0.6 * len(terms) + 2.4), squeeze=False)
    colours = plt.cm.viridis(np.linspace(0, 0.95, len(groups) + 1))
    for i, t in enumerate(terms):
        left = 0.0
        for j, g in enumerate([*groups, "other"]):
            v = entry["terms"][t]["other"] if g == "other" else entry["terms"][t]["shares"][g]
            axes[0, 0].barh(i, v, left=left, color=colours[j], label=g if i == 0 else None)
            left += v
        levels = entry["terms"][t].get("levels") or {}
        left = 0.0
        for j, (lv, v) in enumerate(levels.items()):
            axes[0, 1].barh(i, v, left=left, color=plt.cm.plasma(j / max(len(levels), 1)), label=lv)
            if v > 0.06:
                axes[0, 1].text(left + v / 2, i, lv, ha="center", va="center", fontsize=7, color="white")
            left += v
    for ax, title in zip(axes[0], ("by location group", "by pyramid level")):
        ax.set_yticks(range(len(terms)), terms)
        ax.set_xlim(0, 1)
        ax.set_title(f"share of each term's squared gradient norm, {title}", fontsize=9)
    axes[0, 0].legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=4, frameon=False)
    fig.suptitle(f"step {entry['step']}, {entry['images']} images", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def modules(checkpoints: list[dict], path: str) -> None:
    """Per module, each term's gradient norm (log) and the terms' cosines at the last
    checkpoint; with several checkpoints, each term's whole-network norm over the steps."""
    plt = _pyplot()
    last = checkpoints[-1]
    names = list(last["modules"])
    terms = [t for t, e in last["terms"].items() if e["other"] is not None]  # (a term without gradient: none)
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    width = 0.8 / max(len(terms), 1)
    for i, t in enumerate(terms):
        norms = [last["modules"][m]["norm"][t] or np.nan for m in names]  # (no bar where it is 0)
        axes[0].bar(np.arange(len(names)) + i * width, norms, width, label=t)
    axes[0].set_yscale("log")
    axes[0].set_title(f"gradient norm per module (step {last['step']})", fontsize=9)
    pairs = [p for p in (last["modules"][names[0]]["cos"] if names else {}) if set(p.split("__")) <= set(terms)]
    for i, pair in enumerate(pairs):
        cos = [last["modules"][m]["cos"][pair] for m in names]
        axes[1].bar(np.arange(len(names)) + i * 0.8 / len(pairs), [np.nan if c is None else c for c in cos],
                    0.8 / len(pairs), label=pair.replace("__", " vs "))  # fmt: skip
    axes[1].axhline(0, color="k", lw=0.5)
    axes[1].set_title("cosine between terms' gradients per module (< 0: conflict)", fontsize=9)
    for ax in axes[:2]:
        ax.set_xticks(np.arange(len(names)) + 0.4, names, rotation=60, ha="right", fontsize=7)
        ax.legend(fontsize=7)
    steps = [c["step"] for c in checkpoints]
    for t in terms:
        total = [np.sqrt(sum(c["modules"][m]["norm"][t] ** 2 for m in c["modules"])) for c in checkpoints]
        axes[2].plot(steps, total, marker="o", label=t)
    axes[2].set_yscale("log")
    axes[2].set_xlabel("step")
    axes[2].set_title("each term's parameter-gradient norm over checkpoints", fontsize=9)
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def iou_profile(entry: dict, path: str) -> None:
    """Each term's mean gradient magnitude at a positive against the IoU of its box."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for t, e in entry["terms"].items():
        edges = np.asarray(e["iou"]["edges"])
        mean = np.asarray([np.nan if v is None else v for v in e["iou"]["mean_magnitude"]], float)
        if np.all(np.isnan(mean)) or np.nanmax(mean) <= 0:
            continue
        ax.plot(0.5 * (edges[1:] + edges[:-1]), mean, marker="o", label=t)
    ax.set_xlabel("IoU of the positive's predicted box with its target")
    ax.set_ylabel("mean |d term / d head outputs| at a positive")
    ax.set_title(f"gradient magnitude vs IoU (step {entry['step']})", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def spatial_map(image: np.ndarray, boxes: np.ndarray, magnitude: np.ndarray, roles: np.ndarray,
                lay: list[L.Level], title: str, path: str) -> None:  # fmt: skip
    """One image's gradient magnitude [A] (summed over each cell's anchors) per level, over
    the image (grey), with the ground truth (white) and the positives' cells (cyan +)."""
    plt = _pyplot()
    maps = L.level_maps(magnitude, lay)
    positives = L.level_maps((roles == 0).astype(np.float32), lay)
    size = image.shape[0]
    fig, axes = plt.subplots(1, len(lay), figsize=(3.2 * len(lay), 3.4), squeeze=False)
    top = max(float(m.max()) for m in maps.values()) or 1.0
    for ax, lv in zip(axes[0], lay):
        # The image in grey, dimmed, so that the map's colour reads on any picture.
        ax.imshow(0.6 * image.astype(np.float32).mean(-1) / 255.0, cmap="gray", vmin=0, vmax=1)
        # Opacity follows the magnitude (square root: small pulls stay visible), so the image
        # shows through where the term does not pull.
        v = np.sqrt(np.clip(maps[lv.level] / top, 0.0, 1.0))
        rgba = plt.cm.autumn_r(v)
        rgba[..., 3] = 0.9 * v
        ax.imshow(rgba, extent=(0, size, size, 0), interpolation="nearest")
        for x1, y1, x2, y2 in boxes:
            ax.add_patch(plt.Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color="white", lw=1))
        ys, xs = np.nonzero(positives[lv.level])
        stride = size / lv.w
        ax.scatter((xs + 0.5) * stride, (ys + 0.5) * stride, s=10, c="cyan", marker="+")
        ax.set_title(f"P{lv.level} ({lv.h}x{lv.w}): {maps[lv.level].sum() / max(magnitude.sum(), 1e-30):.0%}",
                     fontsize=8)  # fmt: skip
        ax.set_xlim(0, size)
        ax.set_ylim(size, 0)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_all(doc: dict, pictures: list[dict], out: str) -> list[str]:
    """Every PNG of `doc` (anatomy.json's content) and `pictures` into `out`; their names."""
    written = []
    last = doc["checkpoints"][-1]
    for name, draw in (("shares.png", lambda p: shares(last, doc["groups"], p)),
                       ("modules.png", lambda p: modules(doc["checkpoints"], p)),
                       ("iou.png", lambda p: iou_profile(last, p))):  # fmt: skip
        draw(os.path.join(out, name))
        written.append(name)
    os.makedirs(os.path.join(out, "maps"), exist_ok=True)
    for pic in pictures:
        for term, (magnitude, roles, lay) in pic["terms"].items():
            name = os.path.join("maps", f"image{pic['index']:04d}_{term.replace('/', '_')}.png")
            title = f"{term}: |gradient| per location, image {pic['index']} (step {last['step']})"
            spatial_map(pic["image"], pic["boxes"], magnitude, roles, lay, title, os.path.join(out, name))
            written.append(name)
    return written
