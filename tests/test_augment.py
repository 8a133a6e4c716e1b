"""Per-example transforms: the fast colour jitter equals the plain sequence of operations."""

import cv2
import numpy as np
import pytest

from jaxdet.data import augment


def _plain_color_jitter(image, draw, brightness, contrast, saturation, hue):
    """The definition, step by step on floats in [0, 1]: brightness, contrast around the
    grey mean, HSV saturation, HSV hue (TensorFlow's adjust_saturation / adjust_hue)."""
    x = image.astype(np.float64) / 255.0
    x = x * (1.0 - brightness + 2.0 * brightness * draw[0])
    mean = (x @ np.array([0.2989, 0.5870, 0.1140])).mean()
    x = (x - mean) * (1.0 - contrast + 2.0 * contrast * draw[1]) + mean
    hsv = cv2.cvtColor(np.clip(x, 0, 1).astype(np.float32), cv2.COLOR_RGB2HSV)
    hsv[..., 1] = np.clip(hsv[..., 1] * (1.0 - saturation + 2.0 * saturation * draw[2]), 0.0, 1.0)
    hsv[..., 0] = np.mod(hsv[..., 0] + 360.0 * (-hue + 2.0 * hue * draw[3]), 360.0)
    x = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)
    return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("strengths", [(0.4, 0.0, 0.0, 0.0), (0.4, 0.4, 0.0, 0.0), (0.0, 0.0, 0.6, 0.0),
                                       (0.4, 0.4, 0.4, 0.0), (0.4, 0.4, 0.4, 0.1), (0.0, 0.0, 0.0, 0.2)])  # fmt: skip
def test_fast_color_jitter_equals_the_plain_sequence(strengths):
    rng = np.random.default_rng(sum(strengths).__hash__() % 1000)
    image = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    image[:5] = 128  # grey pixels: no saturation to scale, no hue to turn
    image[5:8] = (255, 0, 0)  # saturated and extreme pixels
    for _ in range(5):
        draw = rng.random(4)
        fast = augment.color_jitter(image, draw, *strengths).astype(int)
        plain = _plain_color_jitter(image, draw, *strengths).astype(int)
        assert np.abs(fast - plain).max() <= 1, strengths  # rounding only
        assert (fast != plain).mean() < 0.01
