"""``wm-jax collect``: random-policy rollouts from the real environment into episode shards + a manifest.

- Episode i uses environment seed ``data.seed + i`` (policy rng derived from the same seed), so any rerun
  reproduces it byte for byte. An episode shorter than ``data.min_length`` is retried with seed
  ``data.seed + i + k * RETRY_STRIDE`` (k = 1, 2, ...); the manifest records the seed actually used.
- Workers are separate processes started with 'spawn'; they import the games and numpy, never JAX. Each
  worker steps its own environment, writes its shards itself (compression runs in parallel) and reports
  the manifest record to the main process, which owns the manifest.
- Episodes ``data.episodes .. data.episodes + data.long_hold_episodes - 1`` (TakeCover) use the long-hold
  variant of the random policy, the ``data.sweep_episodes`` after them a scripted sweeping policy; CarRacing's
  ``data.follow_episodes`` come after its random ones, played by a scripted road follower
  (``DataConfig.policy_kind``); each manifest record names its policy (``policy_label``), and a rerun whose
  config would give an existing index another policy is refused.
- Resume: shards on disk are the truth. At start the manifest is reconciled with ``episodes/``: records whose
  shard vanished are dropped, shards missing from the manifest (the manifest rewrite was killed) are
  validated and added, temp files of killed writers are deleted. Then only the missing indices run.
  The manifest is rewritten atomically at most once a second and at the end (and on Ctrl-C).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import multiprocessing as mp
import os
import queue
import signal
import sys
import time
import traceback
import warnings
from pathlib import Path

import numpy as np

from wm_jax.data.budget import check_budget, write_ledger
from wm_jax.data.shards import (
    CorruptShardError,
    Episode,
    episode_record,
    read_episode,
    read_manifest,
    remove_temp_files,
    shard_index,
    shard_name,
    write_episode,
    write_manifest,
)

RETRY_STRIDE = 1_000_000_007  # seed offset between retries of a too-short episode
MANIFEST_EVERY_S = 1.0
# Set while spawning workers: one BLAS thread per worker process (they already fill the cores), no display.
WORKER_ENV = {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "SDL_VIDEODRIVER": "dummy",
              "PYGAME_HIDE_SUPPORT_PROMPT": "1"}


def rollout(env, policy, seed: int) -> Episode:
    """Run one episode of `policy` in `env` (reset with `seed`) until terminated or truncated."""
    from wm_jax.envs import policy_rng

    frame = env.reset(seed)
    policy.reset(policy_rng(seed))
    frames, actions, rewards = [frame], [], []
    while True:
        action = np.asarray(policy(frame), np.float32).reshape(env.action_dim)
        frame, reward, terminated, truncated = env.step(action)
        frames.append(frame)
        actions.append(action)
        rewards.append(reward)
        if terminated or truncated:
            break
    t = len(actions)
    term = np.zeros(t, bool)
    trunc = np.zeros(t, bool)
    term[-1], trunc[-1] = terminated, truncated
    return Episode(np.stack(frames), np.stack(actions), np.asarray(rewards, np.float32), term, trunc, int(seed))


def collect_episode(env, policy, index: int, base_seed: int, min_length: int, max_tries: int = 100) -> Episode:
    """Episode `index` with seed base_seed + index (retried with a shifted seed while shorter than min_length)."""
    for k in range(max_tries):
        ep = rollout(env, policy, base_seed + index + k * RETRY_STRIDE)
        if ep.length >= min_length:
            return ep
    raise RuntimeError(f"episode {index}: {max_tries} tries all shorter than data.min_length={min_length}")


def _exit_on_term(signum, frame):
    raise SystemExit(0)


def policy_label(env_cfg, kind: str) -> str:
    """Name of the collection policy `kind` (``DataConfig.policy_kind``), stored in the manifest records."""
    if env_cfg.name == "takecover":
        if kind == "sweep":
            return f"sweep{env_cfg.doom_sweep_min}-{env_cfg.doom_sweep_max}r{env_cfg.doom_sweep_random_leg:g}"
        lo, hi = ((env_cfg.doom_long_repeat_min, env_cfg.doom_long_repeat_max) if kind == "long_hold"
                  else (env_cfg.doom_repeat_min, env_cfg.doom_repeat_max))
        return f"repeat{lo}-{hi}"
    if env_cfg.name == "atari":
        return "uniform" if env_cfg.atari_repeat_max == 1 else f"uniform_hold1-{env_cfg.atari_repeat_max}"
    if kind == "follow":
        return (f"follow_x{env_cfg.carracing_excursion:g}_{env_cfg.carracing_excursion_min}-"
                f"{env_cfg.carracing_excursion_max}")
    return env_cfg.carracing_policy


def _worker(env_fields: dict, data_fields: dict, base_seed: int, min_length: int, level: int, ep_dir: str,
            tasks, results) -> None:
    """Worker process: take indices from `tasks` until None; write shards; report records to `results`.
    Each index plays the policy ``DataConfig.policy_kind`` names."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the main process handles Ctrl-C and stops us
    signal.signal(signal.SIGTERM, _exit_on_term)  # ... with SIGTERM: exit through `finally` and close the game
    from wm_jax.config import DataConfig, EnvConfig
    from wm_jax.envs import make_env, make_policy

    parent = mp.parent_process()
    env_cfg, data_cfg = EnvConfig(**env_fields), DataConfig(**data_fields)
    env = make_env(env_cfg)
    policies = {}
    try:
        while True:
            try:
                index = tasks.get(timeout=1.0)
            except queue.Empty:
                if parent is not None and not parent.is_alive():
                    return  # the main process was killed: stop instead of lingering
                continue
            if index is None:
                return
            try:
                kind = data_cfg.policy_kind(index)
                if kind not in policies:
                    policies[kind] = make_policy(env_cfg, kind)
                ep = collect_episode(env, policies[kind], index, base_seed, min_length)
                write_episode(Path(ep_dir) / shard_name(index), ep, level)
                rec = {**episode_record(index, ep), "policy": policy_label(env_cfg, kind)}
                results.put(("ok", rec, "jax" in sys.modules))
            except Exception:
                results.put(("error", index, traceback.format_exc()))
                return
    finally:
        env.close()


# ---------------------------------------------------------------- reconciling disk and manifest


def reconcile(data_dir: Path, env: str, action_dim: int, base_seed: int,
              expected_policy=None) -> dict[int, dict]:
    """Records of every valid episode on disk, by index; shards are the truth, the manifest a cache.
    `expected_policy(index) -> label`: records naming another policy are refused (a config change would
    mix two policies under one index range), and a record rebuilt from its shard (a kill between the shard and
    the manifest write) gets the label back; None: any policy (episodes `wm-jax collect-agent` added)."""
    from wm_jax.config import ConfigError

    ep_dir = data_dir / "episodes"
    for p in remove_temp_files(ep_dir) + remove_temp_files(data_dir):
        print(f"collect: removed unfinished temp file {p}", file=sys.stderr)
    records: dict[int, dict] = {}
    if (data_dir / "manifest.json").exists():
        try:
            body = read_manifest(data_dir)
        except CorruptShardError as e:
            warnings.warn(f"{e}; rebuilding the manifest from the shards", stacklevel=2)
            body = None
        if body is not None:
            if body["env"] != env or body["action_dim"] != action_dim:
                raise ConfigError(f"{data_dir} holds {body['env']} data (action_dim {body['action_dim']}); "
                                  f"the config says env.name={env!r}: use another run name")
            records = {r["index"]: r for r in body["episodes"] if (data_dir / r["file"]).exists()}
    on_disk = {i: p for p in ep_dir.glob("ep_*.npz") if (i := shard_index(p.name)) is not None}
    for i in sorted(set(on_disk) - set(records)):
        try:
            records[i] = episode_record(i, read_episode(on_disk[i], action_dim))
            label = None if expected_policy is None else expected_policy(i)
            if label is not None:  # killed between its shard and its manifest write
                records[i]["policy"] = label
        except CorruptShardError as e:
            bad = on_disk[i].with_name(on_disk[i].name + ".corrupt")
            os.replace(on_disk[i], bad)
            print(f"collect: {e}; moved to {bad.name}, will recollect", file=sys.stderr)
    for i, r in records.items():
        if (r["seed"] - base_seed - i) % RETRY_STRIDE != 0:
            raise ConfigError(f"{data_dir}: episode {i} was collected with seed {r['seed']}, which does not "
                              f"match data.seed={base_seed} (+ index); keep data.seed or use another run name")
        if expected_policy is not None and "policy" in r and expected_policy(i) not in (None, r["policy"]):
            raise ConfigError(f"{data_dir}: episode {i} was collected with policy {r['policy']!r}, but the config "
                              f"asks {expected_policy(i)!r} for it (data.episodes / data.long_hold_episodes / "
                              f"data.sweep_episodes / data.follow_episodes / env.doom_*repeat_* / env.doom_sweep_* / "
                              f"env.carracing_excursion*); keep them or use "
                              f"another run name")
    return records


def collect(cfg, progress: bool = True) -> list[dict]:
    """Top `cfg.data_dir` up to `cfg.data.collected` episodes; returns the manifest records (sorted)."""
    from tqdm import tqdm

    data_dir = Path(cfg.data_dir)
    ep_dir = data_dir / "episodes"
    ep_dir.mkdir(parents=True, exist_ok=True)
    with data_lock(data_dir):
        env, adim, seed = cfg.env.id, cfg.action_dim, cfg.data.seed
        n_total = cfg.data.collected
        records = reconcile(data_dir, env, adim, seed,
                            lambda i: policy_label(cfg.env, cfg.data.policy_kind(i)) if i < n_total else None)
        write_manifest(data_dir, env, adim, list(records.values()))
        todo = [i for i in range(n_total) if i not in records]
        if not todo:
            return sorted(records.values(), key=lambda r: r["index"])
        check_budget(cfg, records.values(), len(todo), "random collection")
        n_workers = min(cfg.data.workers or os.cpu_count() or 1, len(todo))
        ctx = mp.get_context("spawn")
        tasks, results = ctx.Queue(), ctx.Queue()
        for i in todo:
            tasks.put(i)
        for _ in range(n_workers):
            tasks.put(None)
        env_fields = {**dataclasses.asdict(cfg.env), "max_steps": cfg.collect_steps}  # data.episode_steps
        args = (env_fields, dataclasses.asdict(cfg.data), seed, cfg.data.min_length,
                cfg.data.compress_level, str(ep_dir))
        saved_env = {k: os.environ.get(k) for k in WORKER_ENV}
        os.environ.update(WORKER_ENV)
        try:
            procs = [ctx.Process(target=_worker, args=(*args, tasks, results), daemon=True) for _ in range(n_workers)]
            for p in procs:
                p.start()
        finally:
            for k, v in saved_env.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        bar = tqdm(total=len(todo), unit="ep", disable=not progress, desc=f"collect {env} x{n_workers}")
        frames, t0, last_write = 0, time.perf_counter(), time.perf_counter()
        try:
            for _ in range(len(todo)):
                msg = _next_result(results, procs)
                if msg[0] == "error":
                    raise RuntimeError(f"collect worker failed on episode {msg[1]}:\n{msg[2]}")
                rec = msg[1]
                if msg[2]:
                    warnings.warn("a collect worker has JAX imported; keep jax out of the worker import path")
                records[rec["index"]] = rec
                frames += rec["length"] + 1
                bar.update(1)
                bar.set_postfix(frames_per_s=f"{frames / (time.perf_counter() - t0):.0f}", refresh=False)
                if time.perf_counter() - last_write > MANIFEST_EVERY_S:
                    write_manifest(data_dir, env, adim, list(records.values()))
                    last_write = time.perf_counter()
            for p in procs:
                p.join(timeout=10)
        finally:
            bar.close()
            write_manifest(data_dir, env, adim, list(records.values()))
            write_ledger(cfg, records.values())
            _stop_workers(procs, tasks, results)
        return sorted(records.values(), key=lambda r: r["index"])


@contextlib.contextmanager
def data_lock(data_dir: Path):
    """Hold the data folder's lock for one writer (`collect` or `collect-agent`); a second one is refused."""
    lock = open(Path(data_dir) / ".collect.lock", "w")
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another collection (`wm-jax collect` or `collect-agent`) writes {data_dir}") from None
        yield
    finally:
        lock.close()


def _stop_workers(procs, *queues) -> None:
    """SIGTERM the workers that still run (they close their game: a ViZDoom engine process ignores SIGINT and
    SIGTERM and would outlive a killed worker), then SIGKILL any that do not exit."""
    for q in queues:
        q.cancel_join_thread()  # unread tasks must not block our exit
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(timeout=10)
        if p.is_alive():
            p.kill()
            p.join(timeout=5)


def _next_result(results, procs) -> tuple:
    """The next worker message; raises once a worker has crashed (its episode would never arrive) or all exited."""
    while True:
        try:
            return results.get(timeout=1.0)
        except queue.Empty:
            crashed = [(i, p.exitcode) for i, p in enumerate(procs) if p.exitcode not in (None, 0)]
            if crashed:
                raise RuntimeError(f"collect workers crashed (worker, exit code): {crashed}") from None
            if not any(p.is_alive() for p in procs):
                try:
                    return results.get(timeout=1.0)
                except queue.Empty:
                    codes = [p.exitcode for p in procs]
                    raise RuntimeError(f"all collect workers exited (exit codes {codes}) with work left") from None


# ---------------------------------------------------------------- command line
