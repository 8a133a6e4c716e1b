"""Input-pipeline throughput on a COCO-JSON folder: Grain with 0/1/2/... worker processes,
and (when TensorFlow is installed) the tf.data pipeline jaxdet used before, in the same run.

    python tools/make_coco_folder.py --out=/tmp/coco2k --images=2000
    python -m experiments.bench_input --annotations=/tmp/coco2k/train.json --images=/tmp/coco2k/images

Both sides decode JPEGs, apply scale jitter (0.8-1.2) and flips, pad to --image_size and
batch --batch images; images/s are counted over --batches batches after --warmup. The
tf.data side is the former `jaxdet/data/pipeline.py` (tf.io.decode_image, tf.image.resize,
AUTOTUNE parallel map) over encoded images held in memory, as it ran. The last lines say
how many input cores feed a GPU at --target images/s.
"""

from __future__ import annotations

import json
import os
import time

from absl import app, flags

from experiments import cli

_ANNOTATIONS = flags.DEFINE_string("annotations", None, "COCO detection JSON.")
_IMAGES = flags.DEFINE_string("images", None, "The JSON's image folder.")
_IMAGE_SIZE = flags.DEFINE_integer("image_size", 640, "Square output side.")
_BATCH = flags.DEFINE_integer("batch", 16, "Images per batch.")
_BATCHES = flags.DEFINE_integer("batches", 40, "Timed batches per configuration.")
_WARMUP = flags.DEFINE_integer("warmup", 4, "Untimed batches first (worker start-up included there).")
_WORKERS = flags.DEFINE_list("workers", ["0", "1", "2"], "Grain worker counts to time.")
_MOSAIC = flags.DEFINE_float("mosaic_prob", 0.0, "Grain side only: probability of a 2x2 mosaic per example.")
_JITTER = flags.DEFINE_list(
    "color_jitter", ["0", "0", "0", "0"], "Grain side only: brightness,contrast,saturation,hue."
)
_AFFINE = flags.DEFINE_list(
    "affine", ["0", "0", "0", "0"], "Grain side only: random affine (degrees, translate, scale, shear); 0s = off."
)
_MIXUP = flags.DEFINE_float("mixup_prob", 0.0, "Grain side only: probability of mixup with a second example.")
_TF = flags.DEFINE_bool("tf_baseline", True, "Also time the former tf.data pipeline (needs TensorFlow).")
_TARGET = flags.DEFINE_float("target", 350.0, "Training images/s to feed (RetinaNet-R50 640 px bf16 on an H100).")
_JSON_OUT = flags.DEFINE_string("json_out", "", "Write the results here.")
flags.mark_flags_as_required(["annotations", "images"])


def _rate(stream, batches: int, warmup: int) -> float:
    for _ in range(warmup):
        next(stream)
    t0 = time.perf_counter()
    for _ in range(batches):
        next(stream)
    return batches * _BATCH.value / (time.perf_counter() - t0)


def _tf_data_stream(source, size: int, batch: int, seed: int = 0):
    """The former tf.data pipeline (decode, scale jitter, crop/pad, flip) over in-memory bytes."""
    import numpy as np
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")
    images = tf.constant([source.raw(i) for i in range(len(source))], tf.string)
    n = len(source)

    def fetch(k):
        idx = tf.random.experimental.index_shuffle(k % n, tf.stack([tf.cast(seed, tf.int64), k // n]), n - 1)
        image = tf.cast(tf.io.decode_image(images[idx], channels=3, expand_animations=False), tf.float32)
        image.set_shape([None, None, 3])
        draw = tf.random.stateless_uniform([4], seed=tf.stack([tf.cast(seed, tf.int64) + 1, k]))
        shape = tf.cast(tf.shape(image)[:2], tf.float32)
        scale = size * (0.8 + 0.4 * draw[0]) / tf.reduce_max(shape)
        new_hw = tf.cast(tf.round(shape * scale), tf.int32)
        image = tf.image.resize(image, new_hw, method="bilinear")
        ox = tf.cast(tf.round(draw[1] * tf.maximum(tf.cast(new_hw[1] - size, tf.float32), 0.0)), tf.int32)
        oy = tf.cast(tf.round(draw[2] * tf.maximum(tf.cast(new_hw[0] - size, tf.float32), 0.0)), tf.int32)
        image = tf.image.pad_to_bounding_box(image[oy : oy + size, ox : ox + size], 0, 0, size, size)
        return tf.cond(draw[3] < 0.5, lambda: image[:, ::-1], lambda: image)

    ds = tf.data.Dataset.range(np.iinfo(np.int64).max // 2).map(fetch, num_parallel_calls=tf.data.AUTOTUNE)
    return ds.batch(batch, drop_remainder=True).prefetch(2).as_numpy_iterator()


def _decoders(source, count: int = 200) -> dict[str, float]:
    """Milliseconds per image to decode the first `count` files with each candidate library."""
    import io

    import cv2
    import numpy as np
    import simplejpeg
    from PIL import Image

    data = [source.raw(i) for i in range(min(count, len(source)))]
    candidates = {
        "simplejpeg (used)": lambda b: simplejpeg.decode_jpeg(b, colorspace="RGB"),
        "OpenCV imdecode": lambda b: cv2.imdecode(np.frombuffer(b, np.uint8), cv2.IMREAD_COLOR),
        "PIL": lambda b: np.asarray(Image.open(io.BytesIO(b)).convert("RGB")),
    }
    out = {}
    for name, decode in candidates.items():
        decode(data[0])
        t0 = time.perf_counter()
        for b in data:
            decode(b)
        out[name] = 1000 * (time.perf_counter() - t0) / len(data)
    return out


def main(argv):
    cli.start(argv, quiet=True)
    from jaxdet.data import coco_json, pipeline, readers

    with cli.user_errors():
        table, _ = coco_json.load_coco_json(_ANNOTATIONS.value, _IMAGES.value)
    source = readers.FileSource(table.shared(), _IMAGES.value)
    size, batch = _IMAGE_SIZE.value, _BATCH.value
    results = []
    print(f"{len(source)} images in {_IMAGES.value}; {size} px, batch {batch}, flip + scale jitter; "
          f"Grain side also: mosaic {_MOSAIC.value}, colour jitter {_JITTER.value}, affine {_AFFINE.value}, "
          f"mixup {_MIXUP.value}; {os.cpu_count()} CPUs")  # fmt: skip
    for name, ms in _decoders(source).items():
        results.append({"decoder": name, "ms_per_image": ms})
        print(f"decode one image, {name}: {ms:.2f} ms", flush=True)
    for w in (int(v) for v in _WORKERS.value):
        jitter = tuple(float(v) for v in _JITTER.value)
        stream = pipeline.Pipeline(source, size, 100, workers=w).train(
            batch, 0, 0, True, (0.8, 1.2), _MOSAIC.value, color_jitter=jitter,
            affine=tuple(float(v) for v in _AFFINE.value), mixup_prob=_MIXUP.value,
        )  # fmt: skip
        ips = _rate(stream, _BATCHES.value, _WARMUP.value)
        stream.close()
        results.append({"pipeline": "grain", "workers": w, "images_per_sec": ips})
        print(f"grain, {w} worker processes{' (in process)' if w == 0 else ''}: {ips:.1f} images/s", flush=True)
    if _TF.value:
        try:
            stream = _tf_data_stream(source, size, batch)
        except ImportError:
            print("tf.data baseline skipped: TensorFlow is not installed")
        else:
            ips = _rate(stream, _BATCHES.value, _WARMUP.value)
            results.append({"pipeline": "tf.data (former)", "workers": "AUTOTUNE", "images_per_sec": ips})
            print(f"tf.data (former jaxdet pipeline, AUTOTUNE threads): {ips:.1f} images/s", flush=True)
    one = next((r["images_per_sec"] for r in results if r.get("workers") == 1), None)
    if one:
        print(f"one worker process: {one:.1f} images/s -> about {_TARGET.value / one:.1f} input cores "
              f"(data.workers) feed {_TARGET.value:.0f} training images/s")  # fmt: skip
    if _JSON_OUT.value:
        with open(_JSON_OUT.value, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    app.run(main)
