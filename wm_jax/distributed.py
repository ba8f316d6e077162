"""Many processes, one program: ``jax.distributed.initialize`` before JAX starts, and who writes files.

Every process runs the same command on the same config; :mod:`wm_jax.parallel` builds its mesh over the global
devices of all processes, so a batch or an ES population is split over every device of every process, and the
compiled programs' collectives (gloo on CPU, NCCL on GPU, ICI on TPU) join them. Process 0 alone writes metrics,
plots, GIFs and controller files (:func:`is_main_process`); orbax coordinates the checkpoint writes itself.

Where the processes find each other, first match wins:

1. the arguments of :func:`initialize`,
2. the environment: ``WM_JAX_COORDINATOR`` (``host:port`` of process 0), ``WM_JAX_NUM_PROCESSES``,
   ``WM_JAX_PROCESS_ID`` (0 .. n-1),
3. JAX's own detection of the cluster (SLURM ``srun``, Open MPI, Cloud TPU pods) for any value still unset.

The CLI calls :func:`maybe_initialize` with its ``--distributed`` flag first thing in ``main``: with the flag,
or with ``WM_JAX_COORDINATOR`` / ``WM_JAX_NUM_PROCESSES`` / ``WM_JAX_DISTRIBUTED=1`` set, the command joins the
others; otherwise it runs alone, as before. See docs/distributed.md for launching on SLURM and TPU pods.
"""

from __future__ import annotations

import os
import sys

ENV_COORDINATOR = "WM_JAX_COORDINATOR"
ENV_NUM_PROCESSES = "WM_JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "WM_JAX_PROCESS_ID"
ENV_DISTRIBUTED = "WM_JAX_DISTRIBUTED"  # "1": join like --distributed (the values come from the cluster)
ENV_TIMEOUT = "WM_JAX_INIT_TIMEOUT"  # seconds to wait for every process to connect (default 300)

_joined: dict | None = None  # the arguments this process joined with (None: not joined by this module)


class DistributedError(RuntimeError):
    """A distributed set-up that cannot work (bad environment value, JAX already started, a second set-up)."""


def _env_int(name: str) -> int | None:
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    try:
        value = int(text)
    except ValueError:
        raise DistributedError(f"environment variable {name}={text!r} must be an integer") from None
    if value < 0:
        raise DistributedError(f"environment variable {name}={value} must be >= 0")
    return value


def requested_by_env() -> bool:
    """True when the environment asks for a multi-process run (any WM_JAX_* variable above is set)."""
    flag = os.environ.get(ENV_DISTRIBUTED, "").strip().lower() in ("1", "true", "yes")
    return flag or any(os.environ.get(k, "").strip() for k in (ENV_COORDINATOR, ENV_NUM_PROCESSES, ENV_PROCESS_ID))


def settings(coordinator: str | None = None, num_processes: int | None = None,
             process_id: int | None = None) -> dict:
    """The values :func:`initialize` passes to JAX: arguments first, then the WM_JAX_* environment; None where
    neither says (JAX then asks the cluster: SLURM, Open MPI, TPU pod metadata)."""
    out = {
        "coordinator_address": coordinator or os.environ.get(ENV_COORDINATOR, "").strip() or None,
        "num_processes": num_processes if num_processes is not None else _env_int(ENV_NUM_PROCESSES),
        "process_id": process_id if process_id is not None else _env_int(ENV_PROCESS_ID),
    }
    n, i = out["num_processes"], out["process_id"]
    if n is not None and n < 1:
        raise DistributedError(f"num_processes must be >= 1, got {n}")
    if n is not None and i is not None and not 0 <= i < n:
        raise DistributedError(f"process_id {i} is outside 0..{n - 1} (num_processes={n})")
    return out


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None,
               timeout_s: int | None = None) -> dict:
    """Join the other processes (``jax.distributed.initialize``); must run before any JAX computation.

    Idempotent: a second call with the same (or no) values returns at once; other values raise. Returns the
    settings joined with (see :func:`settings`; values JAX detected stay None here, ask ``jax.process_count()``).
    """
    global _joined
    want = settings(coordinator, num_processes, process_id)
    import jax

    if _joined is not None or jax.distributed.is_initialized():
        have = _joined or {}
        clash = [k for k, v in want.items() if v is not None and have.get(k) not in (None, v)]
        if clash:
            raise DistributedError(f"already joined with {have}; cannot join again with {want} ({', '.join(clash)})")
        return dict(have)
    timeout = timeout_s if timeout_s is not None else (_env_int(ENV_TIMEOUT) or 300)
    try:
        jax.distributed.initialize(**want, initialization_timeout=timeout)
    except RuntimeError as e:
        if "before any JAX calls" in str(e) or "must be called before" in str(e):
            raise DistributedError("wm_jax.distributed.initialize must run before any JAX computation (it ran "
                                   f"after JAX had started its backend): {e}") from None
        raise
    except ValueError as e:  # no value given and no cluster detected
        raise DistributedError(f"cannot start a multi-process run: {e}. Set {ENV_COORDINATOR}, "
                               f"{ENV_NUM_PROCESSES} and {ENV_PROCESS_ID}, or launch under SLURM / a TPU pod "
                               "(docs/distributed.md)") from None
    _joined = want
    return dict(want)


def maybe_initialize(flag: bool) -> bool:
    """The CLI's hook: join when `flag` (``--distributed``) or the environment asks (:func:`requested_by_env`);
    returns whether this process runs as one of several (False: a plain single-process run, nothing done)."""
    if not (flag or requested_by_env()):
        return False
    initialize()
    return True


def is_main_process() -> bool:
    """True on process 0 (the one that writes metrics, plots and final files), and in every single-process run.

    Never starts JAX: a process that has not imported it (``wm-jax collect``) or has not joined others is main.
    """
    if "jax" not in sys.modules:
        return True
    import jax

    if not jax.distributed.is_initialized():
        return True
    return jax.process_index() == 0
