"""Look at a dataset before training on it: statistics, plots, augmented samples, input speed."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import numpy as np

from jaxdet import visualize


def statistics(table) -> dict:
    """Counts of a split's `AnnotationTable`: images, boxes per image, classes, box sizes (sqrt area, px)."""
    per_image = table.box_counts()
    start, stop = table.arrays["box_start"][table.lo], table.arrays["box_start"][table.hi]
    boxes, labels = np.asarray(table.arrays["boxes"][start:stop]), np.asarray(table.arrays["labels"][start:stop])
    sizes = np.sqrt(np.maximum(boxes[:, 2] - boxes[:, 0], 0) * np.maximum(boxes[:, 3] - boxes[:, 1], 0))
    crowd = table.arrays["crowd_start"]
    return {
        "images": len(table),
        "negatives": int((per_image == 0).sum()),
        "boxes": int(per_image.sum()),
        "crowd_boxes": int(crowd[table.hi] - crowd[table.lo]),
        "boxes_per_image": per_image,
        "class_counts": np.bincount(labels, minlength=len(table.class_names)),
        "box_sizes": sizes,
        "image_sizes": np.stack([table.column("heights"), table.column("widths")], axis=1),
    }


def report_lines(stats: dict, class_names: list[str], split: str) -> list[str]:
    per, sizes, hw = stats["boxes_per_image"], stats["box_sizes"], stats["image_sizes"]
    lines = [
        f"{split}: {stats['images']} images ({stats['negatives']} without objects), {stats['boxes']} boxes, "
        f"{stats['crowd_boxes']} crowd/ignore regions",
        f"  boxes per image: mean {per.mean():.2f}, median {np.median(per):.0f}, max {per.max()}",
        f"  image sizes (h x w): min {hw.min(0).tolist()}, max {hw.max(0).tolist()}",
    ]
    if len(sizes):
        small, medium = (sizes < 32).mean(), ((sizes >= 32) & (sizes < 96)).mean()
        lines.append(
            f"  box size sqrt(area): min {sizes.min():.1f}, median {np.median(sizes):.1f}, max {sizes.max():.1f} px; "
            f"COCO small/medium/large {100 * small:.0f}/{100 * medium:.0f}/{100 * (1 - small - medium):.0f}%"
        )
    lines.append("  class counts: " + ", ".join(f"{n} {c}" for n, c in zip(class_names, stats["class_counts"])))
    return lines


def plot_statistics(stats: dict, class_names: list[str], out_dir: str, split: str) -> list[str]:
    """class_histogram / box_sizes / boxes_per_image PNGs for one split; returns their paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    figures = {
        "class_histogram": lambda ax: (
            ax.bar(range(len(class_names)), stats["class_counts"]),
            ax.set_xticks(range(len(class_names)), class_names, rotation=60, ha="right", fontsize=7),
            ax.set_ylabel("boxes"),
        ),
        "box_sizes": lambda ax: (ax.hist(stats["box_sizes"], bins=40), ax.set_xlabel("sqrt(box area), pixels")),
        "boxes_per_image": lambda ax: (
            ax.hist(stats["boxes_per_image"], bins=np.arange(stats["boxes_per_image"].max() + 2) - 0.5),
            ax.set_xlabel("boxes per image"),
        ),
    }
    for name, draw in figures.items():
        fig, ax = plt.subplots(figsize=(6, 3.5))
        draw(ax)
        ax.set_title(f"{split}: {name.replace('_', ' ')}")
        fig.tight_layout()
        path = os.path.join(out_dir, f"{split}_{name}.png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths


def draw_samples(batch: dict, class_names: list[str], out_dir: str, prefix: str, limit: int) -> list[str]:
    """Writes batch images with their (augmented) ground-truth boxes and class names."""
    from PIL import Image

    paths = []
    for i in range(min(limit, len(batch["image"]))):
        keep = batch["box_mask"][i]
        boxes = batch["boxes"][i][keep]
        pic = visualize.draw_boxes(
            batch["image"][i], boxes, batch["labels"][i][keep], np.ones(len(boxes)), class_names,
            upscale=max(1, 384 // batch["image"].shape[1]),
        )  # fmt: skip
        path = os.path.join(out_dir, f"{prefix}_{i:02d}.png")
        Image.fromarray(pic).save(path)
        paths.append(path)
    return paths


def throughput(stream: Iterator[dict], batches: int, warmup: int = 3) -> float:
    """Images per second delivered by a batch stream, after `warmup` batches."""
    for _ in range(warmup):
        next(stream)
    t0, images = time.perf_counter(), 0
    for _ in range(batches):
        images += len(next(stream)["image"])
    return images / (time.perf_counter() - t0)
