"""The kernel policy: which form of a layer or op the model is built with.

Every op has a plain JAX form, which is its definition. Some have a second form that
computes the same values faster on one backend (the CPU forms of `cpu_conv`, the stem
max-pool, BatchNorm and multi-level RoIAlign, measured on XLA:CPU; BENCHMARKS.md). The
policy is resolved once, when the detector is built, from the platform of the devices the
run's mesh holds (not the process's default backend), and is passed down to every module
as a static field, so the choice is visible in the model and testable on any backend:

- "auto": the CPU forms on a CPU mesh, the plain forms elsewhere (the default);
- "cpu": the CPU forms on any backend (tests compare them with the plain forms);
- "plain": the plain forms everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax

from jaxdet.errors import ConfigError

POLICIES = ("auto", "cpu", "plain")
FORMS = ("cpu", "plain")  # what a policy resolves to


def resolve(policy: str, platform: str) -> str:
    """ "auto" | "cpu" | "plain" on devices of `platform` ("cpu", "gpu", "tpu") -> "cpu" | "plain"."""
    if policy not in POLICIES:
        raise ConfigError(f"unknown kernel policy {policy!r} (config.model.kernels); valid: {POLICIES}")
    if policy == "auto":
        return "cpu" if platform == "cpu" else "plain"
    return policy


def platform(devices: Sequence[jax.Device] | None = None) -> str:
    """The platform of `devices` (all must share one), else of the default backend's devices."""
    devices = list(devices) if devices is not None else jax.devices()
    platforms = {d.platform for d in devices}
    if len(platforms) != 1:
        raise ValueError(f"a mesh over devices of several platforms {sorted(platforms)} is not supported")
    return platforms.pop()


def check_form(form: str) -> str:
    """`form` if it is a resolved policy; a module built with "auto" was not resolved."""
    if form not in FORMS:
        raise ValueError(f"kernel form {form!r}: resolve the policy first (jaxdet.kernels.resolve); valid {FORMS}")
    return form
