"""Host memory figures for benchmarks (no jax or torch imports: both benchmark sides use it)."""

from __future__ import annotations

import resource


def peak_host_mb() -> float:
    """This process's peak resident memory in MB.

    Linux's VmHWM belongs to the current program image; `ru_maxrss` would also carry the
    peak of a parent that forked this process (the torchvision side runs as a child)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
