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

Within the CPU forms, a size threshold can depend on the host CPU's family (`cpu_family`):
XLA:CPU's library kernels use AVX-512 where the CPU has it, and which form wins moves with
that (kernels/cpu_conv.py). The family is read from the CPU's features, never guessed from
its name, and a run logs it (`describe`).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence

import jax

from jaxdet.errors import ConfigError

POLICIES = ("auto", "cpu", "plain")
FORMS = ("cpu", "plain")  # what a policy resolves to
# CPU families whose forms were measured apart (BENCHMARKS.md, one table each), told apart by
# the features /proc/cpuinfo lists: "avx512_amx", AVX-512F with AMX tiles (measured on an
# Intel Xeon; float32 products do not use AMX: its flag tells that Xeon apart from the AMD
# Zen 4 below, where one of the Xeon's forms loses); "avx512", AVX-512F without AMX (measured
# on an AMD EPYC Zen 4; Intel Skylake-SP to Ice Lake fall here too, unmeasured); "generic",
# the rest (AVX2 x86 such as AMD EPYC Zen 2/3, Arm, ...).
CPU_FAMILIES = ("avx512_amx", "avx512", "generic")
FAMILY_ENV = "JAXDET_CPU_FAMILY"  # overrides the detection (benchmarks time both on one host)


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


def family_of_flags(flags: set[str] | frozenset[str]) -> str:
    """The CPU family (CPU_FAMILIES) of a CPU with these feature flags (/proc/cpuinfo's names)."""
    if "avx512f" not in flags:
        return "generic"
    return "avx512_amx" if "amx_tile" in flags else "avx512"


@functools.cache
def _detected_family() -> str:
    try:  # Linux; elsewhere the measured default ("generic")
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return family_of_flags(set(line.split(":", 1)[1].split()))
    except OSError:
        pass
    return "generic"


def cpu_family() -> str:
    """The host CPU's family in CPU_FAMILIES, from the flags /proc/cpuinfo lists (`family_of_flags`);
    the environment variable JAXDET_CPU_FAMILY overrides it (checked)."""
    family = os.environ.get(FAMILY_ENV) or _detected_family()
    if family not in CPU_FAMILIES:
        raise ConfigError(f"{FAMILY_ENV}={family!r}: not a CPU family; valid {CPU_FAMILIES}")
    return family


def describe(form: str, platform: str) -> str:
    """One log line: the resolved kernel form and, for the CPU forms, what the host CPU chose."""
    if check_form(form) == "plain":
        return f"kernel forms: plain ({platform})"
    from jaxdet.kernels import cpu_conv  # (imports this package)

    many = cpu_conv.TAPS_MANY_PIXELS[cpu_family()]
    also = f", or from {many[1]:.0e} with {many[0]} output pixels or more" if many else ""
    return (
        f"kernel forms: cpu ({platform}; CPU family {cpu_family()}: 3x3 weight gradients by taps above "
        f"{cpu_conv.taps_above_macs():.0e} multiply-adds{also})"
    )
