"""N host environments in worker processes, stepped in lock-step through shared memory.

The host writes actions into a shared ``float32 [N, A]`` buffer and sends each worker a short message
naming the slots to step; the worker steps its environments and writes frames, rewards and end flags into
shared buffers (no frames are pickled). Slots live on workers in contiguous blocks, so a caller can step
one block of workers while it computes actions for another (see :class:`wm_jax.agent.Runner`).

Workers are started with ``spawn`` and import only this module, ``wm_jax.config`` and the env factory
(``wm_jax.envs:make_env`` by default): JAX is never imported in a worker.

Shared buffers (slot i = environment i)::

    frames      uint8   [N, S, S, 3]   last observation of each slot (S = env.frame_size)
    actions     float32 [N, A]         written by the host before `step_async`
    rewards     float32 [N]            reward of the last step
    terminated  bool    [N]            the env ended the episode on the last step
    truncated   bool    [N]            the step cap ended the episode on the last step
"""

from __future__ import annotations

import importlib
import multiprocessing as mp
import os
import traceback
from multiprocessing import shared_memory
from typing import Any, Sequence

import numpy as np

from wm_jax.envs.spec import env_spec

DEFAULT_FACTORY = "wm_jax.envs:make_env"


def _buffer_specs(num_envs: int, frame_size: int, action_dim: int) -> dict[str, tuple[tuple[int, ...], Any]]:
    return {
        "frames": ((num_envs, frame_size, frame_size, 3), np.uint8),
        "actions": ((num_envs, action_dim), np.float32),
        "rewards": ((num_envs,), np.float32),
        "terminated": ((num_envs,), np.bool_),
        "truncated": ((num_envs,), np.bool_),
    }


def _attach(names: dict[str, str], specs: dict) -> tuple[dict[str, np.ndarray], list]:
    arrays, handles = {}, []
    for key, (shape, dtype) in specs.items():
        shm = shared_memory.SharedMemory(name=names[key])
        handles.append(shm)
        arrays[key] = np.ndarray(shape, dtype=dtype, buffer=shm.buf)
    return arrays, handles


def load_factory(spec: str):
    """``"package.module:function"`` -> the function (imported in the worker)."""
    module, _, name = spec.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"cannot load env factory {spec!r}: {e}") from e


def _worker(conn, factory_spec: str, env_cfg, slots: list[int], names: dict[str, str], specs: dict) -> None:
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    envs, handles = [], []
    try:
        buf, handles = _attach(names, specs)
        factory = load_factory(factory_spec)
        envs = [factory(env_cfg) for _ in slots]
        conn.send(("ready", [int(e.action_dim) for e in envs]))
        local = {s: i for i, s in enumerate(slots)}
        while True:
            cmd, arg = conn.recv()
            if cmd == "close":
                break
            slot = -1
            try:
                if cmd == "reset":
                    for slot, seed in arg:
                        buf["frames"][slot] = envs[local[slot]].reset(int(seed))
                        buf["rewards"][slot] = 0.0
                        buf["terminated"][slot] = buf["truncated"][slot] = False
                elif cmd == "step":
                    for slot in arg:
                        frame, reward, term, trunc = envs[local[slot]].step(buf["actions"][slot].copy())
                        buf["frames"][slot] = frame
                        buf["rewards"][slot] = reward
                        buf["terminated"][slot] = term
                        buf["truncated"][slot] = trunc
                else:
                    raise ValueError(f"unknown command {cmd!r}")
                conn.send(("ok", None))
            except Exception:
                conn.send(("error", f"env slot {slot}, command {cmd!r}:\n{traceback.format_exc()}"))
    except Exception:
        conn.send(("error", f"worker start-up failed:\n{traceback.format_exc()}"))
    finally:
        for e in envs:
            try:
                e.close()
            except Exception:
                pass
        for h in handles:
            h.close()
        conn.close()


class VectorEnv:
    """`num_envs` environments spread over `workers` processes (contiguous blocks of slots per worker).

    Args:
      env_cfg: an :class:`wm_jax.config.EnvConfig` (picklable), passed to the factory in each worker.
      num_envs: N, the number of environment slots.
      workers: processes; 0 = one per CPU core (capped at N).
      action_dim: A; default the env spec's (wm_jax.envs.spec) (checked against each env's `action_dim`).
      factory: ``"module:function"`` building one env from `env_cfg` inside a worker.
    """

    def __init__(self, env_cfg, num_envs: int, workers: int = 0, action_dim: int | None = None,
                 factory: str = DEFAULT_FACTORY, start_method: str = "spawn"):
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        workers = workers or os.cpu_count() or 1
        self.num_envs = num_envs
        self.num_workers = min(workers, num_envs)
        self.action_dim = action_dim or env_spec(env_cfg.id).action_dim
        self.frame_size = env_cfg.frame_size
        specs = _buffer_specs(num_envs, self.frame_size, self.action_dim)
        self._shms = [shared_memory.SharedMemory(create=True, size=max(1, int(np.prod(s)) * np.dtype(d).itemsize))
                      for s, d in specs.values()]
        names = {k: shm.name for k, shm in zip(specs, self._shms)}
        self.buffers = {k: np.ndarray(s, dtype=d, buffer=shm.buf) for (k, (s, d)), shm in zip(specs.items(), self._shms)}
        self.buffers["actions"][:] = 0
        # Contiguous blocks: worker w owns slots bounds[w]:bounds[w+1].
        bounds = np.linspace(0, num_envs, self.num_workers + 1).round().astype(int)
        self.worker_slots = [list(range(bounds[w], bounds[w + 1])) for w in range(self.num_workers)]
        self.slot_worker = np.concatenate([[w] * len(s) for w, s in enumerate(self.worker_slots)]).astype(int)
        ctx = mp.get_context(start_method)
        self._conns, self._procs, self._pending = [], [], set()
        self._closed = False
        try:
            for w, slots in enumerate(self.worker_slots):
                parent, child = ctx.Pipe()
                p = ctx.Process(target=_worker, args=(child, factory, env_cfg, slots, names, specs),
                                daemon=True, name=f"wm-jax-env-{w}")
                p.start()
                child.close()
                self._conns.append(parent)
                self._procs.append(p)
            for w in range(self.num_workers):
                dims = self._recv(w, expect="ready")
                if any(d != self.action_dim for d in dims):
                    raise ValueError(f"env {env_cfg.name!r} has action_dim {dims[0]}, VectorEnv expects {self.action_dim}")
        except BaseException:
            self.close()
            raise

    # ---------------------------------------------------------------- messaging

    def _recv(self, w: int, expect: str = "ok") -> Any:
        # Poll rather than block: a worker that crashes in native code (a segfault inside the simulator) may leave a
        # process it forked (ViZDoom's engine) holding its end of the pipe, and a blocking recv would then never see
        # EOF. A dead worker is an error that names it, within about a second.
        conn, proc = self._conns[w], self._procs[w]
        try:
            while not conn.poll(1.0):
                if not proc.is_alive() and not conn.poll(0):
                    raise EOFError(f"process {proc.pid} exited with code {proc.exitcode}")
            kind, payload = conn.recv()
        except (EOFError, ConnectionError) as e:
            raise RuntimeError(f"env worker {w} (slots {self.worker_slots[w]}) died: {e}") from None
        if kind == "error":
            raise RuntimeError(f"env worker {w} failed: {payload}")
        if kind != expect:
            raise RuntimeError(f"env worker {w}: expected {expect!r}, got {kind!r}")
        return payload

    def _by_worker(self, slots: Sequence[int]) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {}
        for s in slots:
            out.setdefault(int(self.slot_worker[s]), []).append(int(s))
        return out

    def workers_of(self, slots: Sequence[int]) -> set[int]:
        return {int(self.slot_worker[s]) for s in slots}

    # ---------------------------------------------------------------- public API

    def reset(self, slots: Sequence[int], seeds: Sequence[int]) -> np.ndarray:
        """Start new episodes in `slots` with `seeds` (blocking). Returns the shared frames buffer [N, S, S, 3]."""
        if len(slots) != len(seeds):
            raise ValueError(f"reset: {len(slots)} slots but {len(seeds)} seeds")
        seed_of = dict(zip((int(s) for s in slots), (int(x) for x in seeds)))
        groups = self._by_worker(slots)
        busy = set(groups) & self._pending
        if busy:
            raise RuntimeError(f"reset: workers {sorted(busy)} still have a step in flight; call step_wait first")
        for w, ss in groups.items():
            self._conns[w].send(("reset", [(s, seed_of[s]) for s in ss]))
        for w in groups:
            self._recv(w)
        return self.buffers["frames"]

    def step_async(self, slots: Sequence[int], actions: np.ndarray) -> None:
        """Start one step of the envs in `slots` with `actions` [len(slots), A]; returns at once."""
        actions = np.asarray(actions, np.float32).reshape(len(slots), self.action_dim)
        if not np.all(np.isfinite(actions)):
            raise ValueError(f"step_async: non-finite actions for slots {list(slots)}")
        groups = self._by_worker(slots)
        busy = set(groups) & self._pending
        if busy:
            raise RuntimeError(f"step_async: workers {sorted(busy)} still have a step in flight")
        self.buffers["actions"][np.asarray(slots, int)] = actions
        for w, ss in groups.items():
            self._conns[w].send(("step", ss))
            self._pending.add(w)

    def step_wait(self, workers: set[int] | None = None) -> dict[str, np.ndarray]:
        """Wait for the steps in flight on `workers` (default: all). Returns the shared buffers (views)."""
        workers = set(self._pending) if workers is None else set(workers) & self._pending
        for w in sorted(workers):
            self._pending.discard(w)
            self._recv(w)
        return self.buffers

    def step(self, slots: Sequence[int], actions: np.ndarray) -> dict[str, np.ndarray]:
        self.step_async(slots, actions)
        return self.step_wait()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for c in self._conns:
            try:
                c.send(("close", None))
            except (OSError, ValueError):
                pass
        for p in self._procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
        for c in self._conns:
            c.close()
        self.buffers = {}
        for shm in self._shms:
            shm.close()
            try:
                shm.unlink()
            except FileNotFoundError:
                pass

    def __enter__(self) -> "VectorEnv":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


# ---------------------------------------------------------------- a tiny deterministic env (tests, overhead bench)


class ToyEnv:
    """A deterministic stand-in with the adapters' interface (no simulator): for tests and overhead checks.

    Episode length is 5 + seed % 7 steps; the frame encodes (seed, t); reward_t = 1 + action[0].
    """

    def __init__(self, env_cfg):
        self.action_dim = env_spec(env_cfg.id).action_dim
        self.size = env_cfg.frame_size
        self.cap = env_cfg.max_steps
        self.seed, self.t, self.length = 0, 0, 1

    def _frame(self) -> np.ndarray:
        f = np.zeros((self.size, self.size, 3), np.uint8)
        f[..., 0] = self.seed % 256
        f[..., 1] = self.t % 256
        f[: self.t % self.size, :, 2] = 255
        return f

    def reset(self, seed: int) -> np.ndarray:
        self.seed, self.t, self.length = int(seed), 0, 5 + int(seed) % 7
        return self._frame()

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool]:
        self.t += 1
        term = self.t >= self.length
        trunc = (not term) and self.t >= self.cap
        return self._frame(), float(1.0 + action[0]), term, trunc

    def close(self) -> None:
        pass


def make_toy_env(env_cfg) -> ToyEnv:
    return ToyEnv(env_cfg)
