"""The embedded dataset and the input pipeline."""

import numpy as np
import pytest
import tensorflow_datasets as tfds

from jaxdet.data import pipeline, readers, shapes_dataset


def test_generation_is_deterministic_and_varied():
    a = shapes_dataset.generate_example("train", 7)
    b = shapes_dataset.generate_example("train", 7)
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["boxes"], b["boxes"])
    counts, labels, sides, empty = [], [], [], 0
    for i in range(300):
        ex = shapes_dataset.generate_example("validation", i)
        counts.append(len(ex["labels"]))
        labels += list(ex["labels"])
        if len(ex["boxes"]):
            sides += list(np.maximum(ex["boxes"][:, 2] - ex["boxes"][:, 0], ex["boxes"][:, 3] - ex["boxes"][:, 1]))
        empty += len(ex["labels"]) == 0
        assert ex["image"].shape == (128, 128, 3) and ex["image"].dtype == np.uint8
        assert np.all(ex["boxes"][:, :2] >= 0) and np.all(ex["boxes"][:, 2:] <= 128)
    assert max(counts) == 8 and empty > 0
    assert set(labels) == set(range(len(shapes_dataset.CLASS_NAMES)))
    assert min(sides) <= 10 and max(sides) >= 56


def test_embedded_dataset_is_read_with_random_access(tfds_dir):
    """`jaxdet_shapes` is prepared as ArrayRecord and read per example (tfds.data_source)."""
    from jaxdet.data import sources

    info = tfds.builder("jaxdet_shapes", data_dir=tfds_dir).info
    assert info.splits["train"].num_examples >= 5000
    assert info.splits["validation"].num_examples >= 500
    src = sources.tfds_source("jaxdet_shapes", "validation", tfds_dir)
    ex = src.read(7)  # any example, without reading the ones before it
    assert ex.image.shape == (128, 128, 3) and ex.image.dtype == np.uint8
    truth = shapes_dataset.generate_example("validation", ex.image_id - 6001)  # ids: 6000 train images, then 1-based
    np.testing.assert_allclose(ex.boxes, truth["boxes"], atol=1e-3)
    assert ex.labels.tolist() == truth["labels"].tolist()
    assert np.abs(ex.image.astype(int) - truth["image"]).mean() < 6  # JPEG quality 92


def _prepare_and_count(data_dir: str) -> int:
    from jaxdet.data import sources

    return len(sources.tfds_source("jaxdet_shapes", "validation", data_dir))


@pytest.mark.slow  # (the suite's time: 26 s)
def test_processes_preparing_one_fresh_dataset_at_once_all_succeed(tmp_path):
    """A sweep's runs start together on a fresh disk: without the preparation lock every
    process but one failed renaming its copy into place ("Cannot rename ... already exists")."""
    import concurrent.futures
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=ctx) as pool:
        sizes = list(pool.map(_prepare_and_count, [str(tmp_path)] * 2))
    assert sizes == [sizes[0]] * 2 and sizes[0] > 0
    assert len([p for p in (tmp_path / "jaxdet_shapes").iterdir() if p.name.startswith("incomplete")]) == 0


def test_split_expressions_and_a_misspelt_split(tfds_dir):
    from jaxdet.data.sources import tfds_source
    from jaxdet.errors import ConfigError

    assert len(tfds_source("jaxdet_shapes", "train[:16]", tfds_dir)) == 16
    assert len(tfds_source("jaxdet_shapes", "train[:8]+validation[:4]", tfds_dir)) == 12
    with pytest.raises(
        ConfigError, match=r"has no split 'trian' \(in 'trian\[:8\]'\); available: \['train', 'validation'\]"
    ):
        tfds_source("jaxdet_shapes", "trian[:8]", tfds_dir)


def _square_source(n=6, size=100):
    """Black images with one white rectangle each: pixels say exactly where the box is."""
    import io

    from PIL import Image

    rng = np.random.default_rng(0)
    images, boxes, labels = [], [], []
    for i in range(n):
        img = np.zeros((size, size + 20 * (i % 2), 3), np.uint8)  # some non-square images
        x1, y1 = rng.integers(5, 50, 2)
        x2, y2 = x1 + rng.integers(15, 40), y1 + rng.integers(15, 40)
        img[y1:y2, x1:x2] = 255
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        images.append(buf.getvalue())
        boxes.append(np.array([[x1, y1, x2, y2]], np.float32))
        labels.append(np.array([i % 3], np.int32))
    return readers.memory_source(images, boxes, labels, ["a", "b", "c"])


def _pixel_box(image):
    gray = image.mean(-1)  # object pixels: brighter than halfway (colour jitter may darken them)
    ys, xs = np.nonzero(gray > (gray.max() + gray.min()) / 2)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


@pytest.mark.parametrize("crop, jitter", [(0.0, (0, 0, 0, 0)), (1.0, (0.4, 0.4, 0.4, 0.1))])
def test_augmented_boxes_follow_pixels(crop, jitter):
    """Flip, scale jitter, random crop (boxes clipped; a box cropped away is dropped) and
    colour jitter: every kept box is where its object's pixels are."""
    src = _square_source()
    data = pipeline.Pipeline(src, image_size=64, max_boxes=4)
    it = data.train(
        batch_size=6, seed=3, hflip=True, scale_range=(0.7, 1.4), crop_prob=crop, crop_min=0.4, color_jitter=jitter
    )
    checked = 0
    for _ in range(3 if crop == 0 else 6):
        batch = next(it)
        assert batch["image"].shape == (6, 64, 64, 3) and batch["image"].dtype == np.uint8
        assert batch["boxes"].shape == (6, 4, 4) and batch["box_mask"].shape == (6, 4)
        for i in range(6):
            if not batch["box_mask"][i, 0]:
                # The object was cropped away, or to a sliver under a pixel (dropped by design).
                if np.ptp(batch["image"][i].mean(-1)) >= 64:
                    left = _pixel_box(batch["image"][i])
                    assert min(left[2] - left[0], left[3] - left[1]) <= 2, left
                continue
            box = batch["boxes"][i, 0]
            if min(box[2] - box[0], box[3] - box[1]) < 3:  # a sliver left by a crop: blurred by resizing
                continue
            np.testing.assert_allclose(box, _pixel_box(batch["image"][i]), atol=1.5)
            checked += 1
            assert not batch["box_mask"][i, 1:].any()
    assert checked >= 12


def test_stream_is_a_function_of_seed_and_step():
    src = _square_source()
    data = pipeline.Pipeline(src, image_size=64, max_boxes=4)
    full = data.train(batch_size=2, seed=5, scale_range=(0.8, 1.2))
    batches = [next(full) for _ in range(5)]
    resumed = data.train(batch_size=2, seed=5, start_step=3, scale_range=(0.8, 1.2))
    for k in (3, 4):
        r = next(resumed)
        for key in ("image", "boxes", "image_id"):
            np.testing.assert_array_equal(r[key], batches[k][key])
    other = next(data.train(batch_size=2, seed=6, scale_range=(0.8, 1.2)))
    assert not np.array_equal(other["image"], batches[0]["image"])
    # Every image appears once per epoch (3 batches of 2 = the 6 images).
    assert sorted(np.concatenate([b["image_id"] for b in batches[:3]])) == list(range(1, 7))


def test_processes_split_the_same_global_batches():
    """Two processes with half the batch each see exactly the one-process global batch,
    also when resuming: the data does not depend on the number of processes."""
    data = pipeline.Pipeline(_square_source(), image_size=64, max_boxes=4)
    one = data.train(batch_size=4, seed=5, start_step=1, scale_range=(0.8, 1.2))
    halves = [data.train(2, 5, 1, True, (0.8, 1.2), 0.0, p, 2) for p in range(2)]
    for _ in range(3):
        whole, parts = next(one), [next(h) for h in halves]
        for key in ("image", "boxes", "image_id"):
            np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), whole[key])


def test_eval_covers_every_image_once_and_maps_scale():
    src = _square_source(n=5)
    data = pipeline.Pipeline(src, image_size=50, max_boxes=2)
    batches = list(data.eval(batch_size=2))
    assert len(batches) == 3
    mask = np.concatenate([b["image_mask"] for b in batches])
    ids = np.concatenate([b["image_id"] for b in batches])[mask]
    assert list(ids) == [1, 2, 3, 4, 5] and mask.sum() == 5
    b = batches[0]
    # Boxes scaled by `scale` back to original pixels are the source boxes.
    np.testing.assert_allclose(b["boxes"][0, 0] / b["scale"][0], src.table.boxes(0)[0], atol=1e-4)


def test_too_many_boxes_are_counted():
    src = _square_source(n=2)
    src = readers.memory_source(
        src.images, [np.tile(src.table.boxes(0), (3, 1)), src.table.boxes(1)], [np.zeros(3), [1]], src.class_names
    )
    batch = next(pipeline.Pipeline(src, image_size=64, max_boxes=2).eval(2))
    assert batch["truncated_boxes"].tolist() == [1, 0] and batch["box_mask"].sum() == 3


def test_coco_ground_truth():
    src = _square_source(n=2)
    gt = pipeline.coco_ground_truth(src.annotations())
    assert len(gt["images"]) == 2 and len(gt["annotations"]) == 2
    x1, y1, x2, y2 = src.table.boxes(1)[0]
    assert gt["annotations"][1]["bbox"] == pytest.approx([x1, y1, x2 - x1, y2 - y1])
    # The dataset's own id of the label (an in-memory source numbers its classes 0..C-1).
    assert gt["annotations"][1]["category_id"] == src.table.category_ids[src.table.labels(1)[0]]
    assert len(pipeline.coco_ground_truth(src.annotations(), leave_out={1})["images"]) == 1


def test_mosaic_boxes_follow_pixels_and_truncation_is_counted():
    src = _square_source(n=8)
    data = pipeline.Pipeline(src, image_size=64, max_boxes=4)
    it = data.train(batch_size=8, seed=1, hflip=True, scale_range=(0.9, 1.1), mosaic_prob=1.0)
    batch = next(it)
    assert batch["image"].shape == (8, 64, 64, 3)
    seen_multi = False
    for i in range(8):
        img = batch["image"][i].mean(-1) > 127
        boxes = batch["boxes"][i][batch["box_mask"][i]]
        seen_multi |= len(boxes) > 1
        for b in boxes:  # each kept box is white inside, at its clipped extent
            x1, y1, x2, y2 = np.round(b).astype(int)
            assert img[y1:y2, x1:x2].mean() > 0.9
        # No white pixel lies outside every box, except slivers of objects cut below a quarter.
        covered = np.zeros_like(img)
        for b in boxes:
            x1, y1, x2, y2 = np.round(b).astype(int)
            covered[y1:y2, x1:x2] = True
        assert (img & ~covered).sum() <= 0.25 * 40 * 40 * 4
    assert seen_multi
    assert batch["truncated_boxes"].shape == (8,)
    small = pipeline.Pipeline(src, image_size=64, max_boxes=1)
    b1 = next(small.train(batch_size=8, seed=1, scale_range=(0.9, 1.1), mosaic_prob=1.0))
    # With one slot per image, every visible box beyond the first is counted, not hidden.
    assert b1["truncated_boxes"].sum() > 0
    assert np.all(b1["box_mask"][b1["truncated_boxes"] > 0, 0])
