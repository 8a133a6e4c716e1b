"""YOLO-family augmentations on crafted images: the random affine's boxes bound the moved
objects' pixels and degenerate boxes are dropped and counted, mixup's pixels and boxes,
close_mosaic turns the mosaic off for the last steps; all pure functions of (seed, position)."""

import numpy as np
import pytest

from jaxdet.data import augment
from jaxdet.data.examples import Augmentation, Examples
from jaxdet.data.readers import Example


def _scene(size=64, box=(10, 20, 30, 44)):
    image = np.zeros((size, size, 3), np.uint8)
    x0, y0, x1, y1 = box
    image[y0:y1, x0:x1] = 255
    return image, np.array([box], np.float32)


def _pixels_box(image):
    ys, xs = np.nonzero(image[..., 0] > 127)
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], np.float32)


@pytest.mark.parametrize("seed", range(8))
def test_the_affine_box_bounds_the_moved_object(seed):
    image, boxes = _scene()
    draw = np.random.default_rng(seed).random(6)
    out, moved, keep = augment.random_affine(image, boxes, draw, degrees=15.0, translate=0.1, scale=0.3, shear=5.0)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert keep[0]
    # The box is the bounding box of the transformed corners: it bounds the object's pixels
    # (bilinear edges: within 1.5 px).
    np.testing.assert_allclose(moved[0], _pixels_box(out), atol=1.5)


def test_the_identity_draw_changes_nothing():
    image, boxes = _scene()
    out, moved, keep = augment.random_affine(image, boxes, np.full(6, 0.5), 10.0, 0.2, 0.5, 5.0)
    np.testing.assert_array_equal(out, image)
    np.testing.assert_allclose(moved, boxes, atol=1e-4)
    assert keep.all()


def test_a_box_moved_out_of_the_image_is_marked_for_dropping():
    image, _ = _scene()
    boxes = np.array([[2, 2, 10, 10], [40, 40, 60, 60]], np.float32)
    draw = np.array([0.5, 0.5, 0.5, 0.5, 0.0, 0.0])  # translate by -translate * size on both axes
    _, moved, keep = augment.random_affine(image, boxes, draw, 0.0, 0.25, 0.0, 0.0)
    assert keep.tolist() == [False, True]
    np.testing.assert_allclose(moved[1], [24, 24, 44, 44], atol=1e-4)


def test_mixup_weighs_the_pixels_and_keeps_both_images_boxes():
    a = (np.full((8, 8, 3), 200, np.uint8), np.array([[0, 0, 4, 4]], np.float32), np.array([1], np.int32))
    b = (np.full((8, 8, 3), 100, np.uint8), np.array([[2, 2, 8, 8]], np.float32), np.array([3], np.int32))
    image, boxes, labels = augment.mixup(a, b, 0.25)
    assert (image == 125).all()
    np.testing.assert_array_equal(boxes, [[0, 0, 4, 4], [2, 2, 8, 8]])
    assert labels.tolist() == [1, 3]


class _OneBoxPerImage:
    """A split of n crafted images, each with one box (white on black)."""

    def __init__(self, n=8, size=64):
        self.n, self.size = n, size

    def __len__(self):
        return self.n

    def read(self, i):
        image, boxes = _scene(self.size, (4 + i, 6 + i, 30 + i, 34 + i))
        return Example(image, boxes, np.array([i % 3], np.int32), 100 + i)

    def where(self, i):
        return f"crafted image {i}"

    def image_id(self, i):
        return 100 + i


def _examples(**aug):
    return Examples(_OneBoxPerImage(), 64, 16, seed=3, aug=Augmentation(hflip=False, **aug), skip_bad=False)


def test_close_mosaic_turns_the_mosaic_off_from_its_position_on():
    examples = _examples(mosaic_prob=1.0, mosaic_until=40)
    assert all(examples.uses_mosaic(k) for k in range(40))
    assert not any(examples.uses_mosaic(k) for k in range(40, 80))
    # A mosaic shows four images' boxes; a plain example its one box.
    assert max(int(examples.train(k)["box_mask"].sum()) for k in range(8)) > 1
    assert all(int(examples.train(k)["box_mask"].sum()) == 1 for k in range(40, 48))


def test_dropped_boxes_are_counted_and_examples_are_pure_functions_of_the_position():
    examples = _examples(affine=(0.0, 0.45, 0.0, 0.0), mixup_prob=1.0)
    outs = [examples.train(k) for k in range(16)]
    again = [_examples(affine=(0.0, 0.45, 0.0, 0.0), mixup_prob=1.0).train(k) for k in range(16)]
    for a, b in zip(outs, again):
        for key in a:
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    kept = np.array([int(o["box_mask"].sum()) for o in outs])
    dropped = np.array([int(o["dropped_boxes"]) for o in outs])
    assert (kept + dropped == 2).all()  # mixup of two one-box images: each box kept or counted
    assert dropped.sum() > 0 and kept.sum() > 0
