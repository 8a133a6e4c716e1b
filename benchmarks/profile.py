"""Where a compiled step's time goes: a `jax.profiler` trace summarised per XLA op and per
source scope.

    python -m experiments.bench --config=... --profile_dir=/tmp/prof    # prints the summary

The trace's device events (one per kernel on a GPU or TPU; on XLA:CPU, one per thunk of
the client's threads) are summed per HLO instruction and joined to the instruction's
`op_name` metadata in the compiled module's text, the JAX source path (`jit(step)/
jvp(FasterRCNNModule)/rpn/...`) that names which part of the model it computes. The
summary lists the top instructions and a roll-up per scope, forward and backward apart
(`transpose(...)` in the path is autodiff's backward).
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
from collections.abc import Callable
from typing import Any

import jax

# XLA:CPU's bookkeeping events on its client threads, which are not computation.
_HOST_BOOKKEEPING = re.compile(r"::|^end: |^Threadpool|^ThunkExecutor|^\$")
_METADATA = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = .*?metadata=\{[^}]*op_name=\"([^\"]*)\"")
_WRAPPERS = re.compile(r"^(jvp|transpose|vmap|remat|checkpoint|shard_map|while|body|cond)\((.*)\)$")


def trace_steps(run: Callable[[], Any], steps: int, logdir: str) -> str:
    """Runs `run` (which must block on its results) `steps` times under the profiler;
    returns the path of the trace's JSON (gzipped)."""
    with jax.profiler.trace(logdir):
        for _ in range(steps):
            run()
    paths = sorted(glob.glob(os.path.join(logdir, "plugins", "profile", "*", "*.trace.json.gz")), key=os.path.getmtime)
    if not paths:
        raise RuntimeError(f"jax.profiler wrote no *.trace.json.gz under {logdir}")
    return paths[-1]


def op_times(trace_path: str) -> dict[str, tuple[float, int]]:
    """{event name: (total seconds, count)} of a trace's device events.

    Device events are those of processes named `/device:...` (GPU, TPU); a CPU trace has
    none, and then the XLA client threads' events are taken, without bookkeeping.
    """
    with gzip.open(trace_path, "rt") as f:
        data = json.load(f)
    events = data["traceEvents"] if isinstance(data, dict) else data
    meta = [e for e in events if e.get("ph") == "M"]
    procs = {e["pid"]: e["args"]["name"] for e in meta if e.get("name") == "process_name"}
    threads = {(e["pid"], e["tid"]): e["args"]["name"] for e in meta if e.get("name") == "thread_name"}
    device_pids = {pid for pid, name in procs.items() if name.startswith("/device:")}

    def computation(e) -> bool:
        if device_pids:
            return e["pid"] in device_pids
        return "XLA" in threads.get((e["pid"], e.get("tid")), "") and not _HOST_BOOKKEEPING.search(e["name"])

    totals: dict[str, list] = collections.defaultdict(lambda: [0.0, 0])
    for e in events:
        if e.get("ph") == "X" and computation(e):
            name = (e.get("args") or {}).get("hlo_op") or e["name"]
            totals[name][0] += e.get("dur", 0) * 1e-6  # microseconds in the trace
            totals[name][1] += 1
    return {k: (v[0], v[1]) for k, v in totals.items()}


def hlo_op_names(hlo_text: str) -> dict[str, str]:
    """{HLO instruction name: its op_name metadata} of a compiled module's text."""
    names = {}
    for line in hlo_text.splitlines():
        m = _METADATA.match(line)
        if m:
            names.setdefault(m.group(1), m.group(2))
    return names


def scope(op_name: str, depth: int = 3) -> str:
    """A source path reduced to its first `depth` module scopes, `[bwd] ` when autodiff's
    transpose produced it: "jit(step)/transpose(jvp(Net))/backbone/conv" -> "[bwd] Net/backbone/conv"."""
    parts, backward = [], "transpose(" in op_name
    for part in op_name.split("/"):
        if part.startswith(("jit(", "pjit(")):  # the jitted function's own name, and inner jits
            continue
        m = _WRAPPERS.match(part)
        while m:
            part = m.group(2)
            m = _WRAPPERS.match(part)
        if part:
            parts.append(part)
    return ("[bwd] " if backward else "") + ("/".join(parts[:depth]) or "(unnamed)")


def summarize(times: dict[str, tuple[float, int]], names: dict[str, str], steps: int, top: int = 25) -> str:
    """A text report: the busy time per step (summed over a GPU's streams or XLA:CPU's
    threads, so it can exceed the step's wall time), the top instructions and the roll-up
    per scope, each with its share of the busy time."""
    total = sum(t for t, _ in times.values())
    if total <= 0:
        return "no device events in the trace"
    lines = [
        f"busy time per step: {1e3 * total / steps:.2f} ms, summed over streams / threads ({steps} steps traced)",
        "",
        "top instructions:",
    ]
    lines.append(f"{'ms/step':>9} {'share':>6} {'calls':>6}  instruction  <- source")
    for name, (t, n) in sorted(times.items(), key=lambda kv: -kv[1][0])[:top]:
        lines.append(
            f"{1e3 * t / steps:9.3f} {100 * t / total:5.1f}% {n // steps:6d}  {name}  <- {names.get(name, '?')}"
        )
    rolled: dict[str, float] = collections.defaultdict(float)
    for name, (t, _) in times.items():
        rolled[scope(names[name]) if name in names else "(no metadata)"] += t
    lines += ["", "per scope:"]
    for key, t in sorted(rolled.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"{1e3 * t / steps:9.3f} {100 * t / total:5.1f}%  {key}")
    return "\n".join(lines)


def profile(run: Callable[[], Any], hlo_text: str, logdir: str, steps: int = 3) -> str:
    """Traces `steps` calls of `run`, writes `logdir/summary.txt` and returns its text."""
    path = trace_steps(run, steps, logdir)
    text = summarize(op_times(path), hlo_op_names(hlo_text), steps)
    with open(os.path.join(logdir, "summary.txt"), "w") as f:
        f.write(text + "\n")
    return text
