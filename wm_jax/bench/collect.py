"""``wm-jax bench collect``: real-environment frames per second, random policy, preprocessing included.

N spawned worker processes (no JAX in them) each warm up, meet at a barrier, then step their environment
for `--seconds` with the collection policy, resetting with a new seed whenever an episode ends (so track
generation / episode starts are included). ``frames_per_s`` is the sum of the workers' steps per second.
``--write`` instead runs whole episodes exactly as ``wm-jax collect`` does (shard compression included)
and counts only finished episodes. ``--stock`` (CarRacing) uses gymnasium's renderer for comparison.
"""

from __future__ import annotations

import os
import time


def add_arguments(parser) -> None:
    parser.add_argument("--env", choices=("carracing", "takecover"), default="takecover", help="which real environment")
    parser.add_argument("--workers", type=int, default=0, help="worker processes (0 = one per core)")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds per worker")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds first")
    parser.add_argument("--stock", action="store_true", help="CarRacing: gymnasium's own renderer")
    parser.add_argument("--write", action="store_true", help="whole episodes + shard writing, as collect does")
    parser.add_argument("--compress-level", type=int, default=1, help="zlib level of the episode shards written (data.compress_level)")


def _bench_worker(rank: int, env_name: str, fast: bool, seconds: float, warmup: float, write: bool,
                  level: int, tmp_dir: str, barrier, results) -> None:
    import numpy as np

    from wm_jax.config import EnvConfig
    from wm_jax.data.collect import collect_episode
    from wm_jax.envs.frames import carracing_frame, doom_frame
    from wm_jax.data.shards import write_episode
    from wm_jax.envs import make_env, make_policy, policy_rng

    cfg = EnvConfig(name=env_name, max_steps=1000 if env_name == "carracing" else 2100, carracing_fast_render=fast)
    env, policy = make_env(cfg), make_policy(cfg)
    seed = rank * 1_000_000

    def run_steps(duration: float) -> tuple[int, int, float]:
        nonlocal seed
        steps = episodes = 0
        frame = env.reset(seed)
        policy.reset(policy_rng(seed))
        t0 = time.perf_counter()
        while (dt := time.perf_counter() - t0) < duration:
            frame, _, term, trunc = env.step(policy(frame))
            steps += 1
            if term or trunc:
                seed += 1
                episodes += 1
                frame = env.reset(seed)
                policy.reset(policy_rng(seed))
        return steps, episodes, dt

    def run_episodes(duration: float) -> tuple[int, int, float]:
        nonlocal seed
        frames = episodes = 0
        t0 = time.perf_counter()
        while (dt := time.perf_counter() - t0) < duration:
            ep = collect_episode(env, policy, 0, seed, 1)
            write_episode(os.path.join(tmp_dir, f"w{rank}.npz"), ep, level)
            frames += ep.length + 1
            episodes += 1
            seed += 1
        return frames, episodes, dt

    run = run_episodes if write else run_steps
    run(warmup)
    barrier.wait()
    cpu0 = time.process_time()
    frames, episodes, dt = run(seconds)
    cpu = time.process_time() - cpu0
    # Preprocessing share: time the resize alone on a frame of the env's raw size.
    raw = np.random.default_rng(0).integers(0, 256, (96, 96, 3) if env_name == "carracing" else (120, 160, 3),
                                            dtype=np.uint8)
    prep = carracing_frame if env_name == "carracing" else doom_frame
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 0.5:
        prep(raw)
        n += 1
    results.put({"frames": frames, "episodes": episodes, "seconds": dt, "cpu_seconds": cpu,
                 "preprocess_us": (time.perf_counter() - t0) / n * 1e6})
    env.close()


def measure(args) -> dict:
    import multiprocessing as mp
    import tempfile

    from wm_jax.data.collect import WORKER_ENV

    workers = args.workers or os.cpu_count() or 1
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(workers), ctx.Queue()
    load_before = os.getloadavg()
    saved = {k: os.environ.get(k) for k in WORKER_ENV}
    os.environ.update(WORKER_ENV)
    with tempfile.TemporaryDirectory() as tmp:
        try:
            procs = [ctx.Process(target=_bench_worker, args=(r, args.env, not args.stock, args.seconds, args.warmup,
                                                             args.write, args.compress_level, tmp, barrier, results))
                     for r in range(workers)]
            for p in procs:
                p.start()
        finally:
            for k, v in saved.items():
                os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        per = [results.get(timeout=args.warmup + 10 * args.seconds + 120) for _ in procs]
        for p in procs:
            p.join()
    fps = [w["frames"] / w["seconds"] for w in per]
    return {
        "env": args.env,
        "workers": workers,
        "renderer": ("stock" if args.stock else "fast") if args.env == "carracing" else "vizdoom RES_160X120",
        "mode": "episodes+shard writes" if args.write else "steps (resets included)",
        "frames_per_s": sum(fps),
        "frames_per_s_per_worker": fps,
        "cpu_utilisation_per_worker": [w["cpu_seconds"] / w["seconds"] for w in per],
        "episodes": sum(w["episodes"] for w in per),
        "seconds": args.seconds,
        "preprocess_us_per_frame": sum(w["preprocess_us"] for w in per) / len(per),
        "loadavg_1min_before_after": [load_before[0], os.getloadavg()[0]],
    }
