"""XLA's compiled programs kept on disk between commands (JAX's persistent compilation cache).

A command's compiled programs -- V's and M's train steps, the τ sweep's whole-generation program -- take tens of
seconds to build on a CPU; without this cache every command, every resume after a kill and every rerun of an
experiment builds them again. With it the second build of the same program (same HLO, flags, devices, jax
version) is a file read. The executable loaded is the one that was compiled, so the numbers are the same.

``WM_JAX_COMPILE_CACHE`` picks the folder (default ``$XDG_CACHE_HOME/wm-jax/xla``, i.e. ``~/.cache/wm-jax/xla``);
``off`` turns the cache off. A ``JAX_COMPILATION_CACHE_DIR`` the user set wins. Entries live in a sub-folder
named after this CPU (model and instruction-set flags): XLA:CPU's code is built for the host's instruction set,
and a home folder shared between machines must not hand one machine's code to another. A corrupt or truncated
entry is not fatal: JAX warns and compiles again.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
from pathlib import Path

ENV = "WM_JAX_COMPILE_CACHE"
OFF = ("off", "0", "false", "no", "")


def cpu_tag() -> str:
    """A short name of this CPU's instruction set: architecture + a hash of its model and flags."""
    model, flags = "", ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key = line.split(":", 1)[0].strip()
                if key == "model name" and not model:
                    model = line.split(":", 1)[1].strip()
                elif key in ("flags", "Features") and not flags:
                    flags = " ".join(sorted(line.split(":", 1)[1].split()))
    except OSError:
        model = platform.processor()
    digest = hashlib.sha256(f"{platform.machine()}|{model}|{flags}".encode()).hexdigest()[:12]
    return f"{platform.machine() or 'cpu'}-{digest}"


def cache_dir(environ: os._Environ | dict | None = None) -> Path | None:
    """The cache folder this process should use, or None when the cache is off."""
    env = os.environ if environ is None else environ
    value = env.get(ENV)
    if value is not None and value.strip().lower() in OFF:
        return None
    if value:
        root = Path(value).expanduser()
    else:
        root = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "wm-jax" / "xla"
    return root / cpu_tag()


def enable() -> Path | None:
    """Point JAX's persistent compilation cache at `cache_dir()` and return the folder in use (None: off).

    Call it before the process's first compile: JAX decides at its first compile whether a cache is used, and a
    folder set later is ignored. Without JAX imported yet only the environment is set (``wm-jax collect`` never
    initialises JAX). A ``JAX_COMPILATION_CACHE_DIR`` already set (by the user, or an earlier call) is kept."""
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return Path(os.environ["JAX_COMPILATION_CACHE_DIR"])
    path = cache_dir()
    if path is None:
        return None
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:  # a read-only home: run without the cache rather than fail the command
        print(f"wm-jax: compile cache off ({path}: {e.strerror})", file=sys.stderr)
        return None
    os.environ["JAX_COMPILATION_CACHE_DIR"] = str(path)  # JAX reads it at import; child processes inherit it
    if "jax" in sys.modules:
        import jax

        jax.config.update("jax_compilation_cache_dir", str(path))
    return path


def entries(path: Path | None) -> int:
    """How many compiled programs the cache folder holds (0 when off or empty: every program compiles)."""
    if path is None or not path.is_dir():
        return 0
    return sum(1 for p in path.iterdir() if p.name.endswith("-cache"))
