"""Random-access source -> Grain -> fixed-shape numpy batches, in an order that is a pure
function of (seed, global example position).

The training stream's k-th global example is, with n images, image
`permutation(seed, k // n)[k % n]`, augmented with draws from
`np.random.default_rng([seed, purpose, k])`. Step s's global batch is positions
s*G .. s*G + G - 1 and process p reads (and decodes) only its slice
p*B .. (p+1)*B - 1 of it, so the batches after step s are the same whether the run
started at 0 or resumed at s, and whatever the number of processes. Grain maps that
function over the positions: `data.workers` processes each build whole batches
(decode, augment, pad), handed over in order through shared memory.

Batches (per process) are dicts of numpy arrays:
  image [B, S, S, 3] uint8 RGB; boxes [B, M, 4] float32 xyxy pixels; labels [B, M] int32;
  box_mask [B, M] bool; image_mask [B] bool (False: padding that fills the last
  evaluation batch, or an unreadable image left out with data.skip_bad); image_id [B]
  int64; scale [B] float32 (resized / original pixels); truncated_boxes [B] int32 (boxes
  beyond M, not trained on); bad_image [B] int64 (the index of an unreadable image this
  example replaced or left out with data.skip_bad, else -1).
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Iterator

import grain
import numpy as np
from absl import flags

from jaxdet.data.annotation_table import AnnotationTable
from jaxdet.data.examples import Augmentation, Examples
from jaxdet.errors import ConfigError


def default_workers() -> int:
    """Input worker processes when data.workers < 0: half the cores (the rest run the step), at most 16."""
    return max(1, min(16, (os.cpu_count() or 2) // 2))


def _watch_parent(worker_index: int, worker_count: int) -> None:
    """In each input worker: exit when the trainer is gone (e.g. kill -9), instead of
    lingering with its shared memory. Polls the parent pid once a second."""
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="jaxdet-parent-watch").start()


class Batches(Iterator):
    """Iterates a Grain pipeline; maps a dead input worker to an error that names the batch's images."""

    def __init__(self, dataset: grain.MapDataset, workers: int, describe):
        self._describe = describe  # batch number -> the images it holds (for error messages)
        self._count = 0
        # The arrays handed out that live in shared memory (input workers' batches): see close().
        self._shared: dict[int, weakref.ref] = {}
        ds = dataset.to_iter_dataset(grain.ReadOptions(num_threads=1, prefetch_buffer_size=2))
        if workers > 0:
            if not flags.FLAGS.is_parsed():  # Grain reads its absl flags; outside an absl main (tests,
                flags.FLAGS.mark_as_parsed()  # notebooks) they keep their defaults
            options = grain.MultiprocessingOptions(num_workers=workers, per_worker_buffer_size=2)
            ds = ds.mp_prefetch(options, worker_init_fn=_watch_parent)
        self._it = iter(ds)

    def __next__(self) -> dict[str, np.ndarray]:
        try:
            batch = next(self._it)
        except RuntimeError as e:
            if "terminated unexpectedly" not in str(e):
                raise
            raise RuntimeError(
                f"an input worker process died ({e}) while preparing batch {self._count} "
                f"({self._describe(self._count)}); if it was killed for memory, lower --config.data.workers"
            ) from e
        self._count += 1
        for v in batch.values():
            if getattr(v, "_unlink_on_del", False):  # (a dead array's entry removes itself)
                self._shared[id(v)] = weakref.ref(v, lambda _, key=id(v), live=self._shared: live.pop(key, None))
        return batch

    def close(self) -> None:
        """Stops the workers and frees the shared memory of the batches handed out.

        A batch's shared memory is freed when its arrays are garbage-collected; the ones
        still referenced when a run ends (the batch of the step that failed, say) would
        be left to the resource tracker at exit, which warns about "leaked shared_memory
        objects". Their names are unlinked here instead; the arrays stay readable (the
        mapping lives until they are collected)."""
        close = getattr(self._it, "close", None)
        if close:
            close()
        for ref in list(self._shared.values()):
            array = ref()
            if array is not None and array._unlink_on_del:
                array._unlink_on_del = False
                try:
                    array.shm.unlink()
                except FileNotFoundError:
                    pass
        self._shared.clear()


class Pipeline:
    """Train and eval streams over a random-access source (see the module docstring)."""

    def __init__(self, source, image_size: int, max_boxes: int, workers: int = 0, skip_bad: bool = False):
        if max_boxes < 1:  # (0 = automatic is a config value, resolved at start-up: jaxdet/data/fit.py)
            raise ConfigError(
                f"a pipeline needs data.max_boxes >= 1, got {max_boxes}: resolve 0 (automatic) against the training "
                "split first (jaxdet.data.fit.resolve_max_boxes)"
            )
        self.source, self.image_size, self.max_boxes = source, image_size, max_boxes
        self.workers = default_workers() if workers < 0 else workers
        self.skip_bad = skip_bad

    @classmethod
    def from_config(cls, source, data, workers: int | None = None) -> Pipeline:
        """The pipeline config.data (`data`) describes over `source`; `workers` overrides data.workers."""
        return cls(source, data.image_size, data.max_boxes, data.workers if workers is None else workers, data.skip_bad)

    def train(
        self,
        batch_size: int,
        seed: int,
        start_step: int = 0,
        hflip: bool = True,
        scale_range=(1.0, 1.0),
        mosaic_prob: float = 0.0,
        process_index: int = 0,
        process_count: int = 1,
        *,
        crop_prob: float = 0.0,
        crop_min: float = 0.5,
        color_jitter: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0),
        affine: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0),
        mixup_prob: float = 0.0,
        mosaic_until_step: int | None = None,
        sizes: tuple[int, ...] = (),
    ) -> Batches:
        """Endless augmented batches for steps start_step, start_step + 1, ... (per process).

        `batch_size` is this process's share of the global batch (global = batch_size x
        process_count); process p builds slice p of each global batch (module docstring).
        With probability `mosaic_prob` an example is a 2x2 mosaic (YOLOv4); with
        `crop_prob` an image is first cropped to a random window (sides U(crop_min, 1));
        `color_jitter` = (brightness, contrast, saturation, hue) as torchvision's ColorJitter;
        `affine` = (degrees, translate, scale, shear), ultralytics' random affine after the
        mosaic; with `mixup_prob` an example is mixed with a second one (YOLOv4 mixup); from
        step `mosaic_until_step` on no example is a mosaic (ultralytics' close_mosaic); with
        `sizes` each step's canvas side is drawn from them (multi-scale training;
        `examples.train_size`), else it is the pipeline's image_size.
        """
        if len(self.source) == 0:
            raise ConfigError("the training split is empty")
        global_bs = batch_size * process_count
        until = None if mosaic_until_step is None else mosaic_until_step * global_bs
        aug = Augmentation(hflip, tuple(scale_range), mosaic_prob, crop_prob, crop_min, tuple(color_jitter),
                           tuple(affine), mixup_prob, until, tuple(sizes), global_bs)  # fmt: skip
        examples = Examples(self.source, self.image_size, self.max_boxes, seed, aug, self.skip_bad)

        def position(c: int) -> int:  # this process's c-th example -> its position in the global stream
            return (c // batch_size) * global_bs + process_index * batch_size + c % batch_size

        first = start_step * batch_size
        ds = grain.MapDataset.range(first, 2**62).map(lambda c: examples.train(position(c))).batch(batch_size)

        def describe(b: int) -> str:
            step = start_step + b
            idx = [examples.index(position(step * batch_size + i)) for i in range(batch_size)]
            shown = ", ".join(self.source.where(i) for i in idx[:4]) + (" ..." if len(idx) > 4 else "")
            return f"training step {step}: {shown}"

        return Batches(ds, self.workers, describe)

    def eval(self, batch_size: int) -> Batches:
        """Every example once, in order; the last batch is padded with image_mask False."""
        n = len(self.source)
        total = -(-n // batch_size) * batch_size
        ds = grain.MapDataset.range(total).map(self._eval_examples().eval).batch(batch_size)

        def describe(b: int) -> str:
            return f"evaluation images {b * batch_size}..{min(n, (b + 1) * batch_size) - 1}"

        return Batches(ds, self.workers, describe)

    def eval_example(self, index: int) -> dict[str, np.ndarray]:
        """Example `index` of the split as `eval` gives it (resized and padded, no batch axis)."""
        return self._eval_examples().eval(index)

    def _eval_examples(self) -> Examples:
        return Examples(self.source, self.image_size, self.max_boxes, 0, Augmentation(), self.skip_bad)


def coco_ground_truth(table: AnnotationTable, leave_out: set[int] = frozenset(), categories=None) -> dict:
    """COCO-format ground truth of a split (original pixels, the dataset's own category ids),
    without the images whose ids are in `leave_out` (unreadable ones under data.skip_bad).

    `categories` (COCO [{"id", "name"}], e.g. a run's `Classes.categories()`) are the classes
    scored; default the table's. An annotated category outside them is an error."""
    if categories is None:
        categories = table.classes.categories()
    known = {c["id"] for c in categories}
    unknown = sorted({int(i) for i in table.category_ids} - known)
    if unknown:
        raise ConfigError(
            f"the evaluation data's category ids {unknown} are not classes of the model (ids {sorted(known)}); "
            "evaluate on data with the categories the run was trained on"
        )
    ids, heights, widths = table.column("image_ids"), table.column("heights"), table.column("widths")
    images, annotations = [], []
    for i, (image_id, h, w) in enumerate(zip(ids, heights, widths)):
        if int(image_id) in leave_out:
            continue
        images.append({"id": int(image_id), "width": int(w), "height": int(h)})
        crowd_boxes, crowd_labels = table.crowd(i)
        for crowd, (bs, ls) in enumerate(((table.boxes(i), table.labels(i)), (crowd_boxes, crowd_labels))):
            for box, label in zip(bs, ls):
                bw, bh = float(box[2] - box[0]), float(box[3] - box[1])
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": int(image_id),
                        "category_id": int(table.category_ids[int(label)]),
                        "bbox": [float(box[0]), float(box[1]), bw, bh],
                        "area": bw * bh,
                        "iscrowd": crowd,  # crowd regions: matches to them are neither TP nor FP
                    }
                )
    return {"images": images, "annotations": annotations, "categories": list(categories)}


def model_inputs(local: dict) -> dict:
    """The batch fields the steps read (the pipeline's bookkeeping fields, truncated_boxes,
    dropped_boxes and bad_image, stay on the host)."""
    return {k: v for k, v in local.items() if k not in ("truncated_boxes", "dropped_boxes", "bad_image")}
