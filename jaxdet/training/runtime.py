"""Process-level JAX set-up: CPU devices, the persistent compilation cache and multi-process runs.

Call before the first jit compiles. Kept apart from the trainer so the benchmark, the
trainer and the tests configure JAX the same way.
"""

from __future__ import annotations

import os
import socket
import time

import jax
import numpy as np

from jaxdet.errors import ConfigError

# Only programs that took at least this long to compile are cached: small helper jits
# would otherwise fill the directory with entries that are faster to rebuild than read.
MIN_COMPILE_SECONDS = 1.0


def enable_compilation_cache(directory: str, min_compile_seconds: float = MIN_COMPILE_SECONDS) -> str | None:
    """Makes XLA executables persist in `directory` ("" = leave the cache off).

    A re-launch of the same program on the same devices and jax version then loads the
    compiled train step instead of recompiling it. Returns the absolute directory used.
    """
    if not directory:
        return None
    directory = os.path.abspath(os.path.expanduser(directory))
    os.makedirs(directory, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", directory)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", min_compile_seconds)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return directory


def set_cpu_devices(count: int) -> int:
    """Splits this process's CPU into `count` JAX devices (`train.cpu_devices`; 0 = JAX's
    default, one). Returns the CPU device count in effect.

    On a CPU-only machine the train step is then data parallel over those devices, as over
    GPUs: the same computation (sync BN, gradients and normalisers averaged over "data"),
    each device's part on its own thread. XLA:CPU runs one device's program largely on
    one thread, so on 2 cores two devices train 1.2-1.3x faster (BENCHMARKS.md). GPU and
    TPU runs are unaffected (their devices are not CPU devices). Call before any JAX
    computation: a count different from the running backend's is a ConfigError.
    """
    if not isinstance(count, int) or count < 0:
        raise ConfigError(f"config.train.cpu_devices={count!r} must be an int >= 0 (0: JAX's default, one device)")
    from jax._src import xla_bridge  # (no public "are backends up?" query; absent: assume not)

    if getattr(xla_bridge, "backends_are_initialized", lambda: False)():
        have = len(jax.devices("cpu"))
        if count and have != count:
            raise ConfigError(
                f"config.train.cpu_devices={count}, but JAX's CPU backend already runs with {have} device(s); "
                "set it before the first JAX computation (or leave it 0)"
            )
        return have
    if count:
        jax.config.update("jax_num_cpu_devices", count)
    return count or 1


def _auto_cluster() -> str | None:
    """The cluster `jax.distributed.initialize()` can configure itself on, if any."""
    if int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_JOB_ID" in os.environ:
        return "SLURM"
    if "TPU_WORKER_HOSTNAMES" in os.environ or "MEGASCALE_COORDINATOR_ADDRESS" in os.environ:
        return "TPU"
    if int(os.environ.get("OMPI_COMM_WORLD_SIZE", "1")) > 1:
        return "Open MPI"
    return None


def initialize_distributed(
    coordinator_address: str = "",
    num_processes: int = 0,
    process_id: int = -1,
    timeout_s: int = 300,
) -> int:
    """Joins this process to a multi-process run; returns the number of processes.

    Explicit: all of `coordinator_address` ("host:port" of process 0), `num_processes`
    and `process_id` given. Otherwise, under SLURM (several tasks), on a TPU pod or under
    Open MPI, `jax.distributed.initialize()` reads the cluster's environment. Otherwise a
    single process: nothing to do. A coordinator that does not answer within `timeout_s`
    gives a ConfigError naming the address, not a hang. Call before any JAX computation.
    """
    given = {
        "--jax_coordinator_address": bool(coordinator_address),
        "--jax_num_processes": num_processes > 0,
        "--jax_process_id": process_id >= 0,
    }
    if any(given.values()) and not all(given.values()):
        missing = [name for name, ok in given.items() if not ok]
        raise ConfigError(
            f"multi-process set-up needs --jax_coordinator_address, --jax_num_processes and --jax_process_id "
            f"together; missing: {', '.join(missing)}"
        )
    if all(given.values()):
        if not 0 <= process_id < num_processes:
            raise ConfigError(f"--jax_process_id={process_id} must be in [0, --jax_num_processes={num_processes})")
        if num_processes == 1:
            return 1
        kwargs = dict(
            coordinator_address=coordinator_address,
            num_processes=num_processes,
            process_id=process_id,
            initialization_timeout=timeout_s,
        )
        where = f"the coordinator {coordinator_address} (process {process_id} of {num_processes})"
    else:
        cluster = _auto_cluster()
        if cluster is None:
            return 1
        kwargs = dict(initialization_timeout=timeout_s)
        where = f"the {cluster} cluster's coordinator"
    if kwargs.get("process_id", 0) > 0:
        # XLA aborts the whole process (a C++ check failure, no Python exception) when the
        # coordinator never answers; probe it first so the user gets a message instead.
        _wait_for_coordinator(coordinator_address, timeout_s, where)
    elif "process_id" in kwargs:
        print(f"process 0: coordinator {coordinator_address}, waiting up to {timeout_s}s for {num_processes} processes")
    # CPU-only processes need a collectives backend to all-reduce across processes.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    try:
        jax.distributed.initialize(**kwargs)
    except Exception as e:  # jax raises a plain RuntimeError/XlaRuntimeError on timeouts
        raise ConfigError(
            f"could not join {where} within {timeout_s}s: {str(e).splitlines()[0] if str(e) else type(e).__name__}. "
            "Check that process 0 was started with the same address and is reachable (host, port, firewall)."
        ) from None
    return jax.process_count()


def _wait_for_coordinator(address: str, timeout_s: float, where: str) -> None:
    """Polls until a TCP connection to `address` ("host:port") succeeds; ConfigError after `timeout_s`."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit():
        raise ConfigError(f"--jax_coordinator_address={address!r} must be host:port, e.g. 10.0.0.1:1234")
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=2.0):
                return
        except OSError as e:
            if time.monotonic() > deadline:
                raise ConfigError(
                    f"could not reach {where} within {timeout_s}s ({e}). Check that process 0 was started "
                    "with the same --jax_coordinator_address and that the host and port are reachable."
                ) from None
            time.sleep(0.5)


def check_processes_agree(fingerprint: str) -> None:
    """Raises ConfigError on every process unless all processes have the same config fingerprint.

    `fingerprint` is a hex string (`configs.fingerprint`). Every process gathers every
    fingerprint, so all of them fail together instead of some hanging in a collective.
    """
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils

    mine = np.frombuffer(bytes.fromhex(fingerprint), np.uint8)
    every = np.asarray(multihost_utils.process_allgather(mine))  # [processes, bytes]
    prints = [bytes(row.astype(np.uint8)).hex() for row in every.reshape(jax.process_count(), -1)]
    if len(set(prints)) > 1:
        table = ", ".join(f"process {i}: {p}" for i, p in enumerate(prints))
        raise ConfigError(
            f"the processes were started with different configs (fingerprints {table}); "
            "start every process with the same --config file and overrides"
        )
