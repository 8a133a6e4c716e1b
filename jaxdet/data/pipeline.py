"""tfds -> tf.data -> fixed-shape numpy batches, with a data order that is a pure function of (seed, step).

Each process loads its own shard of a split (`tfds.even_splits`) into memory as
encoded images plus annotations, then streams examples by global position k:
epoch = k // n, the example is a seeded permutation (`index_shuffle`) of the epoch,
and the augmentation draws use stateless ops seeded by (seed, k). So the batches after
step s are the same whether the run started at 0 or resumed at s.

Batches (per process) are dicts of numpy arrays:
  image [B, S, S, 3] float32 pixels 0..255; boxes [B, M, 4] float32 xyxy pixels;
  labels [B, M] int32; box_mask [B, M] bool; image_mask [B] bool (False: padding
  added to fill the last evaluation batch); image_id [B] int64; scale [B] float32
  (resized / original pixels).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds
from absl import logging

from jaxdet.data import shapes as _shapes  # noqa: F401  (registers `jaxdet_shapes` with TFDS)
from jaxdet.errors import ConfigError

# tf.data only feeds the host; keep TensorFlow off any accelerator JAX will use.
tf.config.set_visible_devices([], "GPU")


@dataclasses.dataclass
class Source:
    """A split (or one process's shard of it), in memory. boxes[i]: [K_i, 4] xyxy original pixels."""

    images: list[bytes]
    boxes: list[np.ndarray]
    labels: list[np.ndarray]
    image_ids: np.ndarray
    heights: np.ndarray
    widths: np.ndarray
    class_names: list[str]
    # Optional per image: crowd regions (evaluation only, COCO's iscrowd) and file names.
    crowd_boxes: list[np.ndarray] | None = None
    crowd_labels: list[np.ndarray] | None = None
    file_names: list[str] | None = None

    def __len__(self) -> int:
        return len(self.images)

    def take(self, lo: int, hi: int) -> Source:
        """Images lo..hi-1 with all their per-image fields (crowd regions and names included)."""
        part = lambda x: None if x is None else x[lo:hi]  # noqa: E731
        return dataclasses.replace(
            self,
            **{f.name: part(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "class_names"},
        )


def load_source(
    name: str, split: str, data_dir: str | None = None, process_index: int = 0, process_count: int = 1
) -> Source:
    """Loads this process's shard of a TFDS detection split (features `image`, `objects/bbox|label`).

    The dataset is built on first use (for `jaxdet_shapes`, in seconds, offline).
    """
    builder = tfds.builder(name, data_dir=data_dir)
    builder.download_and_prepare()
    # (An empty split list means the metadata is not known yet, as under tfds.testing.mock_data.)
    # TFDS split expressions are allowed ("train[:10%]", "train[:512]+validation"): each part's name is checked.
    unknown = [p.split("[")[0].strip() for p in split.split("+") if p.split("[")[0].strip() not in builder.info.splits]
    if builder.info.splits and unknown:
        raise ConfigError(
            f"dataset {name!r} has no split {unknown[0]!r} (in {split!r}); available: {sorted(builder.info.splits)} "
            "(slices such as 'train[:10%]' or 'train[:512]' work too)"
        )
    shard = tfds.even_splits(split, process_count)[process_index]
    ds = builder.as_dataset(split=shard, shuffle_files=False, decoders={"image": tfds.decode.SkipDecoding()})

    def shape_of(ex):
        ex["shape"] = tf.shape(tf.io.decode_image(ex["image"], channels=3, expand_animations=False))
        return ex

    ds = ds.map(shape_of, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    objects = builder.info.features["objects"]
    # Regions not trained on and ignored by the evaluation: COCO's crowds, VOC's difficult.
    ignore_key = next((k for k in ("is_crowd", "is_difficult") if k in objects.feature), None)
    images, boxes, labels, ids, heights, widths, crowd_boxes, crowd_labels = ([] for _ in range(8))
    for i, ex in enumerate(tfds.as_numpy(ds)):
        h, w = int(ex["shape"][0]), int(ex["shape"][1])
        yxyx = np.asarray(ex["objects"]["bbox"], np.float32).reshape(-1, 4)
        xyxy = np.stack([yxyx[:, 1] * w, yxyx[:, 0] * h, yxyx[:, 3] * w, yxyx[:, 2] * h], axis=1)
        label = np.asarray(ex["objects"]["label"], np.int32).reshape(-1)
        ignore = np.zeros(len(label), bool)
        if ignore_key:
            ignore = np.asarray(ex["objects"][ignore_key], bool).reshape(-1)
        boxes.append(xyxy[~ignore])
        labels.append(label[~ignore])
        crowd_boxes.append(xyxy[ignore])
        crowd_labels.append(label[ignore])
        images.append(ex["image"])
        ids.append(int(ex["image/id"]) if "image/id" in ex else i + 1)
        heights.append(h)
        widths.append(w)
    class_names = list(objects["label"].names)
    return Source(
        images,
        boxes,
        labels,
        np.asarray(ids, np.int64),
        np.asarray(heights),
        np.asarray(widths),
        class_names,
        crowd_boxes,
        crowd_labels,
    )


def _padded_annotations(source: Source, max_boxes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[n, M, 4] boxes, [n, M] labels, [n] counts; more than max_boxes is reported, not hidden."""
    n = len(source)
    boxes = np.zeros((n, max_boxes, 4), np.float32)
    labels = np.zeros((n, max_boxes), np.int32)
    counts = np.zeros((n,), np.int32)
    truncated_images = truncated_boxes = 0
    for i, (b, lab) in enumerate(zip(source.boxes, source.labels)):
        k = min(len(b), max_boxes)
        if len(b) > max_boxes:
            truncated_images += 1
            truncated_boxes += len(b) - max_boxes
        boxes[i, :k], labels[i, :k], counts[i] = b[:k], lab[:k], k
    if truncated_boxes:
        logging.warning(
            "%d images have more than data.max_boxes=%d boxes; %d boxes beyond the limit are not "
            "used for training (raise data.max_boxes to keep them).",
            truncated_images,
            max_boxes,
            truncated_boxes,
        )
    return boxes, labels, counts


def _resize_and_pad(image, boxes, size: int, scale_factor, offset_x=0.0, offset_y=0.0):
    """Resizes so the longer side is size*scale_factor, crops at the offsets, pads to size."""
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = size * scale_factor / tf.reduce_max(shape)
    new_hw = tf.cast(tf.round(shape * scale), tf.int32)
    image = tf.image.resize(image, new_hw, method="bilinear")
    ox = tf.cast(tf.round(offset_x * tf.maximum(tf.cast(new_hw[1] - size, tf.float32), 0.0)), tf.int32)
    oy = tf.cast(tf.round(offset_y * tf.maximum(tf.cast(new_hw[0] - size, tf.float32), 0.0)), tf.int32)
    image = image[oy : oy + size, ox : ox + size]
    image = tf.image.pad_to_bounding_box(image, 0, 0, size, size)
    shift = tf.cast(tf.stack([ox, oy, ox, oy]), tf.float32)
    boxes = boxes * scale - shift
    boxes = tf.clip_by_value(boxes, 0.0, float(size))
    return image, boxes, scale


def _random_crop(image, boxes, draw, min_fraction: float):
    """A window of U(min_fraction, 1) of each side at a uniform position; boxes are shifted
    and clipped to it (one left wholly outside becomes empty and is dropped by `_finish`)."""
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    frac = min_fraction + (1.0 - min_fraction) * draw[:2]
    crop_hw = tf.maximum(tf.round(shape * frac), 1.0)
    y0, x0 = tf.floor(draw[2] * (shape[0] - crop_hw[0])), tf.floor(draw[3] * (shape[1] - crop_hw[1]))
    iy0, ix0 = tf.cast(y0, tf.int32), tf.cast(x0, tf.int32)
    ih, iw = tf.cast(crop_hw[0], tf.int32), tf.cast(crop_hw[1], tf.int32)
    image = image[iy0 : iy0 + ih, ix0 : ix0 + iw]
    boxes = boxes - tf.stack([x0, y0, x0, y0])
    limit = tf.stack([crop_hw[1], crop_hw[0], crop_hw[1], crop_hw[0]])
    return image, tf.clip_by_value(boxes, 0.0, limit)


def _color_jitter(image, draw, brightness: float, contrast: float, saturation: float, hue: float):
    """torchvision's ColorJitter factors: brightness and contrast x U(1-b, 1+b), saturation
    x U(1-s, 1+s), hue + U(-h, h) (fraction of a turn). Pixels 0..255 in and out."""
    x = image / 255.0
    if brightness:
        x = x * (1.0 - brightness + 2.0 * brightness * draw[0])
    if contrast:
        mean = tf.reduce_mean(tf.image.rgb_to_grayscale(x))
        x = (x - mean) * (1.0 - contrast + 2.0 * contrast * draw[1]) + mean
    if saturation:
        x = tf.image.adjust_saturation(tf.clip_by_value(x, 0.0, 1.0), 1.0 - saturation + 2.0 * saturation * draw[2])
    if hue:
        x = tf.image.adjust_hue(tf.clip_by_value(x, 0.0, 1.0), -hue + 2.0 * hue * draw[3])
    return tf.clip_by_value(x, 0.0, 1.0) * 255.0


class Pipeline:
    """Builds train and eval streams for one process's shard of a split."""

    def __init__(self, source: Source, image_size: int, max_boxes: int):
        self.source = source
        self.image_size = image_size
        self.max_boxes = max_boxes
        boxes, labels, counts = _padded_annotations(source, max_boxes)
        self._images = tf.constant(source.images, tf.string)
        self._boxes = tf.constant(boxes)
        self._labels = tf.constant(labels)
        self._counts = tf.constant(counts)
        self._ids = tf.constant(source.image_ids)

    def _example(self, idx):
        image = tf.io.decode_image(self._images[idx], channels=3, expand_animations=False)
        image = tf.cast(image, tf.float32)
        image.set_shape([None, None, 3])
        mask = tf.range(self.max_boxes) < self._counts[idx]
        return image, self._boxes[idx], self._labels[idx], mask

    def _finish(self, image, boxes, labels, mask, image_id, scale, image_ok=True):
        # A box squeezed below one pixel by cropping no longer shows an object.
        wh = boxes[:, 2:] - boxes[:, :2]
        mask = mask & (wh[:, 0] >= 1.0) & (wh[:, 1] >= 1.0)
        boxes = tf.where(mask[:, None], boxes, 0.0)
        labels = tf.where(mask, labels, 0)
        return {
            "image": tf.ensure_shape(image, [self.image_size, self.image_size, 3]),
            "boxes": boxes,
            "labels": labels,
            "box_mask": mask,
            "image_mask": tf.convert_to_tensor(image_ok),
            "image_id": image_id,
            "scale": tf.cast(scale, tf.float32),
        }

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
    ) -> Iterator[dict[str, np.ndarray]]:
        """Endless augmented batches for steps start_step, start_step + 1, ... (per process).

        `batch_size` is this process's share of the global batch (global = batch_size x
        process_count). Step s's global batch is examples s*G .. s*G + G - 1 of the seeded
        stream, and process p takes its slice p*batch_size .. (p+1)*batch_size - 1: so the
        global batch, hence training, is the same for any number of processes (the source
        must then be the whole split on every process).

        With probability `mosaic_prob` an example is a mosaic (YOLOv4): four augmented
        images tiled 2x2 and an image-sized window cropped around the centre. Batches
        carry `truncated_boxes` [B]: boxes beyond max_boxes that a mosaic had to leave out.
        With probability `crop_prob` an image is first cropped to a random window (sides
        U(crop_min, 1) of the original); `color_jitter` = (brightness, contrast,
        saturation, hue) strengths as torchvision's ColorJitter (0 = off).
        """
        n = len(self.source)
        if n == 0:
            raise ConfigError("the training split of this process is empty")
        lo, hi = float(scale_range[0]), float(scale_range[1])
        size = self.image_size
        seed64 = tf.cast(seed, tf.int64)

        def augment(idx, rng):
            """One example resized, cropped/padded to size x size and maybe flipped."""
            image, boxes, labels, mask = self._example(idx)
            if crop_prob > 0:
                crop_draw = tf.random.stateless_uniform([5], seed=rng + tf.constant([1000, 0], tf.int64))
                image, boxes = tf.cond(
                    crop_draw[4] < crop_prob,
                    lambda: _random_crop(image, boxes, crop_draw[:4], crop_min),
                    lambda: (image, boxes),
                )
            if any(color_jitter):
                color_draw = tf.random.stateless_uniform([4], seed=rng + tf.constant([2000, 0], tf.int64))
                image = _color_jitter(image, color_draw, *color_jitter)
            draw = tf.random.stateless_uniform([4], seed=rng)
            image, boxes, scale = _resize_and_pad(image, boxes, size, lo + (hi - lo) * draw[0], draw[1], draw[2])
            if hflip:
                flip = draw[3] < 0.5
                image = tf.cond(flip, lambda: image[:, ::-1], lambda: image)
                flipped = tf.stack([size - boxes[:, 2], boxes[:, 1], size - boxes[:, 0], boxes[:, 3]], axis=1)
                boxes = tf.where(flip, flipped, boxes)
            return image, boxes, labels, mask, scale

        def mosaic(k, idx):
            others = tf.random.stateless_uniform([3], seed=tf.stack([seed64 + 2, k]), maxval=n, dtype=tf.int64)
            tiles = [augment(i, tf.stack([seed64 + 3 + j, k])) for j, i in enumerate([idx, *tf.unstack(others)])]
            canvas = tf.concat(
                [tf.concat([tiles[0][0], tiles[1][0]], axis=1), tf.concat([tiles[2][0], tiles[3][0]], axis=1)], axis=0
            )
            offsets = [(0.0, 0.0), (size, 0.0), (0.0, size), (size, size)]
            boxes = tf.concat(
                [t[1] + tf.constant([ox, oy, ox, oy], tf.float32) for t, (ox, oy) in zip(tiles, offsets)], 0
            )
            labels = tf.concat([t[2] for t in tiles], 0)
            mask = tf.concat([t[3] for t in tiles], 0)
            # The window's corner lies in [size/4, 3 size/4]: every tile shows at least a quarter.
            corner = tf.random.stateless_uniform([2], seed=tf.stack([seed64 + 7, k]), minval=0.25, maxval=0.75)
            ox, oy = tf.unstack(tf.cast(tf.round(corner * size), tf.int32))
            image = canvas[oy : oy + size, ox : ox + size]
            area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
            shift = tf.cast(tf.stack([ox, oy, ox, oy]), tf.float32)
            boxes = tf.clip_by_value(boxes - shift, 0.0, float(size))
            clipped = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
            # An object cut down to a sliver no longer looks like itself: keep a quarter or more.
            mask = mask & (clipped >= 0.25 * area)
            order = tf.argsort(tf.cast(tf.logical_not(mask), tf.int32), stable=True)[: self.max_boxes]
            truncated = tf.maximum(tf.reduce_sum(tf.cast(mask, tf.int32)) - self.max_boxes, 0)
            gather = lambda x: tf.gather(x, order)
            return image, gather(boxes), gather(labels), gather(mask), tiles[0][4], truncated

        def single(k, idx):
            image, boxes, labels, mask, scale = augment(idx, tf.stack([seed64 + 1, k]))
            return image, boxes, labels, mask, scale, tf.constant(0, tf.int32)

        def fetch(k):
            epoch, pos = k // n, k % n
            idx = tf.random.experimental.index_shuffle(pos, tf.stack([seed64, epoch]), n - 1)
            if mosaic_prob > 0:
                use = tf.random.stateless_uniform([], seed=tf.stack([seed64 + 8, k])) < mosaic_prob
                image, boxes, labels, mask, scale, truncated = tf.cond(
                    use, lambda: mosaic(k, idx), lambda: single(k, idx)
                )
            else:
                image, boxes, labels, mask, scale, truncated = single(k, idx)
            out = self._finish(image, boxes, labels, mask, self._ids[idx], scale)
            out["truncated_boxes"] = truncated
            return out

        global_bs = batch_size * process_count

        def position(c):  # this process's c-th example -> its position in the global stream
            return (c // batch_size) * global_bs + process_index * batch_size + c % batch_size

        ds = tf.data.Dataset.range(start_step * batch_size, np.iinfo(np.int64).max // global_bs)
        ds = ds.map(lambda c: fetch(position(c)), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        ds = ds.batch(batch_size, drop_remainder=True).prefetch(2)
        return ds.as_numpy_iterator()

    def eval(self, batch_size: int) -> Iterator[dict[str, np.ndarray]]:
        """Every example once, in order; the last batch is padded with image_mask False."""
        n = len(self.source)
        total = -(-n // batch_size) * batch_size
        size = self.image_size

        def fetch(k):
            idx = tf.minimum(k, n - 1)
            image, boxes, labels, mask = self._example(idx)
            image, boxes, scale = _resize_and_pad(image, boxes, size, 1.0)
            return self._finish(image, boxes, labels, mask, self._ids[idx], scale, k < n)

        ds = tf.data.Dataset.range(total).map(fetch, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        return ds.batch(batch_size).prefetch(2).as_numpy_iterator()


def coco_ground_truth(source: Source) -> dict:
    """COCO-format ground truth for a split, in original pixels; category ids are label + 1."""
    images = [
        {"id": int(i), "width": int(w), "height": int(h)}
        for i, w, h in zip(source.image_ids, source.widths, source.heights)
    ]
    annotations = []
    empty = [np.zeros((0, 4), np.float32)] * len(source)
    crowd_boxes = source.crowd_boxes if source.crowd_boxes is not None else empty
    crowd_labels = source.crowd_labels if source.crowd_labels is not None else [np.zeros(0, np.int32)] * len(source)
    for image_id, boxes, labels, cboxes, clabels in zip(
        source.image_ids, source.boxes, source.labels, crowd_boxes, crowd_labels
    ):
        for crowd, (bs, ls) in enumerate(((boxes, labels), (cboxes, clabels))):
            for box, label in zip(bs, ls):
                w, h = float(box[2] - box[0]), float(box[3] - box[1])
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": int(image_id),
                        "category_id": int(label) + 1,
                        "bbox": [float(box[0]), float(box[1]), w, h],
                        "area": w * h,
                        "iscrowd": crowd,  # crowd regions: matches to them are neither TP nor FP
                    }
                )
    categories = [{"id": i + 1, "name": n} for i, n in enumerate(source.class_names)]
    return {"images": images, "annotations": annotations, "categories": categories}
