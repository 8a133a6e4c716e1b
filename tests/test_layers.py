"""The "cpu" kernel forms of layers (kernels/cpu_conv.py, the stem max-pool, BatchNorm) give
the same values and gradients as the plain ones, on whatever backend runs the suite; the
policy picks them from the mesh's platform."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdet import kernels
from jaxdet.errors import ConfigError
from jaxdet.kernels import cpu_conv
from jaxdet.models.backbones import make_backbone
from jaxdet.models.layers import Conv, FrozenBatchNorm, max_pool_3x3_s2


def _pool(x):
    return nn.max_pool(x, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1)))


@pytest.mark.parametrize("shape", [(2, 9, 7, 3), (1, 8, 8, 2), (1, 1, 1, 1), (1, 2, 3, 4), (2, 10, 5, 3)])
def test_stem_max_pool_equals_reduce_window(shape):
    x = jnp.asarray(np.random.default_rng(0).normal(size=shape), jnp.float32)
    ref = _pool(x)
    cpu_form = lambda x: max_pool_3x3_s2(x, "cpu")  # noqa: E731
    np.testing.assert_array_equal(cpu_form(x), ref)
    np.testing.assert_array_equal(max_pool_3x3_s2(x, "plain"), ref)
    assert "custom_vjp_call" in str(jax.make_jaxpr(cpu_form)(x))  # the cpu form was taken
    g = jnp.asarray(np.random.default_rng(1).normal(size=ref.shape), jnp.float32)
    ours = jax.vjp(cpu_form, x)[1](g)[0]
    theirs = jax.vjp(_pool, x)[1](g)[0]
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)


def test_stem_max_pool_ties_send_the_gradient_to_the_first_maximum_as_reduce_window():
    # After a ReLU, windows of equal values (zeros) are common: the whole gradient of such a
    # window goes to one input, the first in row-major order, as select_and_scatter does.
    x = jnp.asarray(np.random.default_rng(5).integers(0, 3, size=(2, 9, 8, 3)), jnp.float32)
    g = jnp.asarray(np.random.default_rng(6).normal(size=_pool(x).shape), jnp.float32)
    ours = jax.vjp(lambda x: max_pool_3x3_s2(x, "cpu"), x)[1](g)[0]
    theirs = jax.vjp(_pool, x)[1](g)[0]
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)
    # Ties really occurred: some windows hold their maximum more than once.
    # (Values shifted to >= 1, so that the patches' zero padding is never a maximum.)
    dims = ("NHWC", "HWIO", "NHWC")
    windows = jax.lax.conv_general_dilated_patches(x[..., :1] + 1, (3, 3), (2, 2), ((1, 1), (1, 1)), None, None, dims)
    tied = np.sum(np.asarray(windows) == np.asarray(_pool(x[..., :1] + 1)), axis=-1) > 1
    assert tied.sum() > 5


# The forms are compared as algebra, at full float32 precision: a backend's default may
# round float32 products (TF32 on recent NVIDIA GPUs), and two forms that sum in another
# order round differently. What precision the model then runs at is the backend's choice.
FULL_PRECISION = "highest"


def _conv_pair(x, w, stride, padding):
    dims = ("NHWC", "HWIO", "NHWC")
    plain = lambda x, w: jax.lax.conv_general_dilated(x, w, stride, padding, dimension_numbers=dims)
    ours = lambda x, w: cpu_conv.conv_general_dilated(x, w, stride, padding, dimension_numbers=dims)
    with jax.default_matmul_precision(FULL_PRECISION):
        np.testing.assert_allclose(ours(x, w), plain(x, w), rtol=1e-5, atol=1e-5)
        g = jnp.asarray(np.random.default_rng(7).normal(size=plain(x, w).shape), jnp.float32)
        for a, b in zip(jax.vjp(ours, x, w)[1](g), jax.vjp(plain, x, w)[1](g)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * float(jnp.max(jnp.abs(b))))
    return jax.make_jaxpr(ours)(x, w)


@pytest.mark.parametrize("stride, size", [(1, 8), (2, 8), (2, 7)])
def test_pointwise_conv_equals_lax_conv(stride, size):
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.normal(size=(2, size, size, 5)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(1, 1, 5, 6)), jnp.float32)
    jaxpr = _conv_pair(x, w, (stride, stride), "SAME")
    assert "conv_general_dilated" not in str(jaxpr)  # the matrix-product form was taken


def _taps_above(monkeypatch, macs: float, many_pixels: tuple[int, float] | None = None) -> None:
    monkeypatch.setattr(cpu_conv, "TAPS_WEIGHT_GRAD_ABOVE_MACS", {f: macs for f in kernels.CPU_FAMILIES})
    monkeypatch.setattr(cpu_conv, "TAPS_MANY_PIXELS", {f: many_pixels for f in kernels.CPU_FAMILIES})


@pytest.mark.parametrize("family", kernels.CPU_FAMILIES)  # (their products' layouts differ)
@pytest.mark.parametrize("padding, stride, size", [("SAME", 1, (7, 6)), (((1, 1), (1, 1)), 1, (7, 6)),
                                                   (((1, 1), (1, 1)), 2, (7, 6)), ("SAME", 2, (7, 9))])  # fmt: skip
def test_large_3x3_conv_weight_gradient_by_taps_equals_lax_conv(monkeypatch, padding, stride, size, family):
    monkeypatch.setenv(kernels.FAMILY_ENV, family)
    rng = np.random.default_rng(3)
    x = jnp.asarray(rng.normal(size=(2, *size, 4)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(3, 3, 4, 5)), jnp.float32)
    _taps_above(monkeypatch, 0)  # take the form at this tiny size
    assert "custom_vjp_call" in str(_conv_pair(x, w, (stride, stride), padding))
    _taps_above(monkeypatch, 1e12)
    assert "custom_vjp_call" not in str(_conv_pair(x, w, (stride, stride), padding))


def test_many_pixel_3x3_convs_take_the_taps_from_the_lower_threshold(monkeypatch):
    rng = np.random.default_rng(5)
    w = jnp.asarray(rng.normal(size=(3, 3, 4, 5)), jnp.float32)
    _taps_above(monkeypatch, 1e12, many_pixels=(84, 0))  # 84 output pixels or more, any size
    for size, taps in [((2, 7, 6), True), ((1, 7, 6), False), ((2, 13, 13), True)]:  # 84, 42, 338 pixels
        x = jnp.asarray(rng.normal(size=(*size, 4)), jnp.float32)
        assert ("custom_vjp_call" in str(_conv_pair(x, w, (1, 1), "SAME"))) == taps
    _taps_above(monkeypatch, 1e12, many_pixels=(84, 1e6))  # enough pixels, too few multiply-adds
    assert "custom_vjp_call" not in str(_conv_pair(jnp.ones((2, 7, 6, 4)), w, (1, 1), "SAME"))


def test_other_convolutions_are_left_to_lax(monkeypatch):
    _taps_above(monkeypatch, 0)  # whatever their size: it is their shape that rules them out
    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.normal(size=(1, 9, 9, 4)), jnp.float32)
    for shape, stride, padding in [((3, 3, 4, 2), (1, 1), "VALID"), ((7, 7, 4, 2), (2, 2), ((3, 3), (3, 3)))]:
        w = jnp.asarray(rng.normal(size=shape), jnp.float32)
        jaxpr = str(_conv_pair(x, w, stride, padding))
        assert "conv_general_dilated" in jaxpr and "custom_vjp_call" not in jaxpr


def test_the_taps_threshold_follows_the_cpu_family_and_is_logged(monkeypatch):
    """The threshold is the family's (measured apart, cpu_conv's docstring); the env variable
    overrides the detection and a wrong value is refused naming the valid ones."""
    for family in kernels.CPU_FAMILIES:
        monkeypatch.setenv(kernels.FAMILY_ENV, family)
        assert cpu_conv.taps_above_macs() == cpu_conv.TAPS_WEIGHT_GRAD_ABOVE_MACS[family]
        assert f"CPU family {family}:" in kernels.describe("cpu", "cpu")
        many = cpu_conv.takes_taps(10**6, 2e8)  # the many-pixel rule: measured to win on avx512_amx only
        assert many == (family == "avx512_amx") and (", or from" in kernels.describe("cpu", "cpu")) == many
    for family in ("avx512_amx", "avx512"):
        assert cpu_conv.TAPS_WEIGHT_GRAD_ABOVE_MACS[family] < cpu_conv.TAPS_WEIGHT_GRAD_ABOVE_MACS["generic"]
    assert kernels.describe("plain", "gpu") == "kernel forms: plain (gpu)"
    monkeypatch.setenv(kernels.FAMILY_ENV, "avx1024")
    valid = r"valid \('avx512_amx', 'avx512', 'generic'\)"
    with pytest.raises(ConfigError, match=r"JAXDET_CPU_FAMILY='avx1024': not a CPU family; " + valid):
        kernels.cpu_family()
    monkeypatch.delenv(kernels.FAMILY_ENV)
    assert kernels.cpu_family() in kernels.CPU_FAMILIES


def test_the_cpu_family_is_read_from_the_feature_flags():
    """/proc/cpuinfo flags of the machines each family was measured on (abridged), and an Arm's."""
    xeon = {"fma", "avx2", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16"}
    zen4 = {"fma", "avx2", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx512ifma", "sha_ni"}
    zen3 = {"fma", "avx2", "sha_ni", "vaes"}
    arm = {"fp", "asimd", "sve", "sve2"}
    families = [kernels.family_of_flags(f) for f in (xeon, zen4, zen3, arm)]
    assert families == ["avx512_amx", "avx512", "generic", "generic"]
    assert set(families) == set(kernels.CPU_FAMILIES)  # every family is reachable


def test_frozen_batch_norm_is_a_fixed_affine_map():
    x = jnp.asarray(np.random.default_rng(3).normal(size=(2, 3, 3, 4)), jnp.float32)
    stats = {"scale": jnp.arange(1.0, 5.0), "bias": jnp.full(4, 0.5), "mean": jnp.full(4, 0.2), "var": jnp.full(4, 4.0)}
    y = FrozenBatchNorm().apply({"batch_stats": stats}, x)
    expected = (x - 0.2) / np.sqrt(4.0 + 1e-5) * stats["scale"] + 0.5
    np.testing.assert_allclose(y, expected, rtol=1e-6, atol=1e-6)
    variables = FrozenBatchNorm().init(jax.random.key(0), x)
    assert "params" not in variables  # nothing to train


def test_batch_norm_matches_flax_values_statistics_and_gradients():
    from jaxdet.models.layers import BatchNorm

    rng = np.random.default_rng(4)
    x = jnp.asarray(rng.normal(2.0, 3.0, size=(3, 5, 4, 6)), jnp.float32)
    g = jnp.asarray(rng.normal(size=x.shape), jnp.float32)
    ours = BatchNorm(use_running_average=False, kernels="cpu")
    theirs = nn.BatchNorm(use_running_average=False, momentum=0.9)
    variables = theirs.init(jax.random.key(0), x)
    assert jax.tree_util.tree_structure(ours.init(jax.random.key(0), x)) == jax.tree_util.tree_structure(variables)
    params = {"scale": jnp.asarray(rng.uniform(0.5, 2, 6), jnp.float32), "bias": jnp.asarray(rng.normal(size=6))}
    variables = {"params": params, "batch_stats": variables["batch_stats"]}

    def run(module, x, params):
        y, updated = module.apply({**variables, "params": params}, x, mutable=["batch_stats"])
        return jnp.sum(y * g), (y, updated["batch_stats"])

    for (_, (y_a, stats_a)), (_, (y_b, stats_b)) in [(run(ours, x, params), run(theirs, x, params))]:
        np.testing.assert_allclose(y_a, y_b, rtol=1e-5, atol=1e-5)
        for k in ("mean", "var"):
            np.testing.assert_allclose(stats_a[k], stats_b[k], rtol=1e-5, atol=1e-6)
    grads_a = jax.grad(lambda x, p: run(ours, x, p)[0], argnums=(0, 1))(x, params)
    grads_b = jax.grad(lambda x, p: run(theirs, x, p)[0], argnums=(0, 1))(x, params)
    for a, b in zip(jax.tree_util.tree_leaves(grads_a), jax.tree_util.tree_leaves(grads_b)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    eval_a = BatchNorm(use_running_average=True).apply(variables, x)
    eval_b = nn.BatchNorm(use_running_average=True).apply(variables, x)
    np.testing.assert_allclose(eval_a, eval_b, rtol=1e-5, atol=1e-5)


def test_kernel_policy_resolves_from_the_platform_and_refuses_unknown_names():
    assert kernels.resolve("auto", "cpu") == "cpu"
    assert kernels.resolve("auto", "gpu") == kernels.resolve("auto", "tpu") == "plain"
    assert kernels.resolve("cpu", "gpu") == "cpu" and kernels.resolve("plain", "cpu") == "plain"
    assert kernels.platform(jax.devices()[:1]) == jax.devices()[0].platform
    with pytest.raises(ConfigError, match="config.model.kernels.*'auto', 'cpu', 'plain'"):
        kernels.resolve("fast", "cpu")
    with pytest.raises(ValueError, match="resolve the policy first"):
        Conv(4, (1, 1), kernels="auto")


def test_a_backbone_built_with_either_form_has_the_same_parameters_and_outputs():
    """The form changes how the backward pass is computed, never the model: same parameter
    tree and the same features (each form's gradients are compared layer by layer above)."""
    x = jnp.asarray(np.random.default_rng(8).normal(size=(2, 32, 32, 3)), jnp.float32)
    cpu, plain = (make_backbone("resnet_tiny", "batch", jnp.float32, None, k) for k in ("cpu", "plain"))
    variables = plain.init(jax.random.key(0), x, train=False)
    structure = jax.tree_util.tree_structure
    assert structure(cpu.init(jax.random.key(0), x, train=False)) == structure(variables)

    def features(module):
        return module.apply(variables, x, train=True, mutable=["batch_stats"])[0]

    with jax.default_matmul_precision(FULL_PRECISION):
        pairs = list(zip(jax.tree_util.tree_leaves(features(cpu)), jax.tree_util.tree_leaves(features(plain))))
    for a, b in pairs:
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    # The forms really differ in the program: the cpu one has the hand-written backward passes.
    jaxpr = lambda m: str(jax.make_jaxpr(lambda: features(m))())  # noqa: E731
    assert "custom_vjp_call" in jaxpr(cpu) and "custom_vjp_call" not in jaxpr(plain)
