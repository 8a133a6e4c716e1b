"""Runs a command and reports the peak resident memory of its whole process tree
(the command and every process it starts, e.g. input workers), sampled every 0.1 s.

    python tools/peak_rss.py -- python -m experiments.train --config=...

`/usr/bin/time -v` reports only the largest single process; a Grain pipeline's workers
are separate processes, so the tree's sum is what a machine must hold.
"""

from __future__ import annotations

import subprocess
import sys
import time

import psutil


def tree_rss(proc: psutil.Process) -> int:
    """Bytes resident in `proc` and all its descendants now (processes gone meanwhile are skipped)."""
    total = 0
    for p in [proc, *proc.children(recursive=True)]:
        try:
            total += p.memory_info().rss
        except psutil.Error:
            pass
    return total


def main() -> int:
    argv = sys.argv[1:]
    if argv[:1] == ["--"]:
        argv = argv[1:]
    if not argv:
        print(__doc__)
        return 2
    child = subprocess.Popen(argv)
    proc, peak, peak_procs = psutil.Process(child.pid), 0, 0
    t0 = time.time()
    while child.poll() is None:
        try:
            rss = tree_rss(proc)
            if rss > peak:
                peak, peak_procs = rss, 1 + len(proc.children(recursive=True))
        except psutil.Error:
            pass
        time.sleep(0.1)
    print(
        f"peak RSS of the process tree: {peak / 2**20:.0f} MiB ({peak_procs} processes then); "
        f"exit {child.returncode}, {time.time() - t0:.0f} s",
        file=sys.stderr,
    )
    return child.returncode


if __name__ == "__main__":
    sys.exit(main())
