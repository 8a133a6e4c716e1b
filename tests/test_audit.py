"""The audit's per-example losses and gradients (jaxdet/audit) against a Python loop of
`jax.grad`, one example at a time."""

import jax
import numpy as np
import optax
import pytest

from experiments.configs import default, faster_rcnn
from jaxdet import audit, detectors
from jaxdet.data.synthetic import synthetic_batch
from jaxdet.detectors import inference
from jaxdet.training.step import init_key


@pytest.mark.parametrize("recipe", [default, pytest.param(faster_rcnn, marks=pytest.mark.slow)])  # (~35 s)
def test_per_example_gradients_equal_a_loop_of_grad(recipe):
    config = recipe.get_config("tiny")
    size = config.data.image_size
    det = detectors.build_detector(config, 3)
    variables = jax.jit(lambda x: det.module.init({"params": init_key(0), "sampling": init_key(1)}, x))(
        np.zeros((1, size, size, 3), np.float32)
    )
    batch = {k: np.asarray(v) for k, v in synthetic_batch(3, size, config.data.max_boxes, 3, seed=4).items()}
    batch["box_mask"][2] = False  # an image without boxes: its loss is the background's alone
    heads = audit.head_names(variables["params"])
    assert heads and not any(h.startswith(("ResNet", "FPN")) for h in heads)
    rng = jax.random.key(0)
    got = jax.device_get(audit.per_example_fn(det, heads)(variables, batch, rng))

    for i in range(3):
        one = {k: v[i : i + 1] for k, v in batch.items()}

        def loss(head):
            full = {"params": {**variables["params"], **head}, "batch_stats": variables.get("batch_stats", {})}
            outputs, _ = inference.forward(det, full, one, rng, train=False)
            return det.loss_fn(outputs, one, rng)[0]

        value, grads = jax.value_and_grad(loss)({k: variables["params"][k] for k in heads})
        np.testing.assert_allclose(got["loss"][i], value, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(got["grad_norm"][i], optax.global_norm(grads), rtol=1e-4, atol=1e-6)
    assert got["grad_norm"].shape == (3,) and np.all(got["grad_norm"] > 0)
    assert len(set(np.round(got["loss"], 5))) == 3  # three different examples, three values
