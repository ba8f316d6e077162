"""Conditions every benchmark reports: device, versions, and the measured fp32 matmul peak."""

from __future__ import annotations

import functools
import importlib.metadata
import os
import platform
import time
from typing import Any, Callable

PACKAGES = ("jax", "jaxlib", "flax", "optax", "evosax", "orbax-checkpoint", "gymnasium", "vizdoom", "numpy")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for p in PACKAGES:
        try:
            out[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            out[p] = "absent"
    return out


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux; platform.processor() elsewhere), e.g. 'AMD EPYC'."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """One line naming the machine a result was measured on: cores, architecture, CPU model."""
    return f"{os.cpu_count()} cores, {platform.machine()}, {cpu_model()}"


def device_info() -> dict[str, Any]:
    import jax

    devs = jax.devices()
    return {
        "backend": jax.default_backend(),
        "device_kind": devs[0].device_kind,
        "device_count": len(devs),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "cpu_model": cpu_model(),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
    }


def git_state(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """{"commit": hash, "dirty": bool} of the git checkout holding `path` (default: this package's folder);
    both None outside a checkout, or where git is missing or does not answer. Dirty: a tracked file differs
    from the commit (untracked files do not count)."""
    import subprocess

    where = str(path if path is not None else os.path.dirname(os.path.abspath(__file__)))

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(["git", "-C", where, *args], capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.SubprocessError):  # no git binary, or it hung
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": None if status is None else bool(status)}


def provenance(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Where a result came from: the code's git commit and dirty flag (see git_state), JAX's backend, device
    kind, the device count (every process's) and the process count. Starts JAX if it has not started."""
    import jax

    devs = jax.devices()
    return {**git_state(path), "backend": jax.default_backend(), "device_kind": devs[0].device_kind,
            "device_count": len(devs), "process_count": jax.process_count()}


def time_call(fn: Callable[[], Any], repeats: int = 3, min_seconds: float = 1.0) -> float:
    """Best seconds per call of `fn` (which must block, e.g. end in block_until_ready); compile excluded.

    `fn` runs once to warm up, then enough times to fill `min_seconds`, `repeats` times; best of repeats.
    """
    fn()
    best = float("inf")
    for _ in range(repeats):
        n, t0 = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            dt = time.perf_counter() - t0
            if dt >= min_seconds:
                break
        best = min(best, dt / n)
    return best


@functools.lru_cache(maxsize=None)
def peak_flops(n: int = 2048) -> float:
    """Measured fp32 FLOP/s of a large jitted matmul on the default device (the 'limit' we compare to)."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    f = jax.jit(lambda x, y: x @ y)
    sec = time_call(lambda: f(a, b).block_until_ready(), repeats=3, min_seconds=1.0)
    return 2 * n**3 / sec


def conditions() -> dict[str, Any]:
    """Everything a benchmark JSON should carry besides its own figures."""
    return {"device": device_info(), "versions": versions(), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
