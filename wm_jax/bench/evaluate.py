"""Evaluation throughput: frames/s of the batched agent in the real env vs raw env stepping on the same workers.

Both runs play the same episodes (same seeds, same step cap) on the same VectorEnv layout; "raw" uses the
random policy (a few µs of numpy per slot), "policy" the jitted V → C → M step at the paper's sizes with
random weights (CarRacing: z 32, LSTM 256, C on [z, h]; TakeCover: z 64, LSTM 512, C on [z, c, h], restart
flag). Also reported: the policy step alone (no envs) in frames/s and GFLOP/s, and its fraction of the
measured matmul peak, so the ratio can be checked against what the machine allows.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

SIZES = {  # (z_dim, lstm hidden, controller inputs, restart flag): the paper's / configs' real sizes
    "carracing": (32, 256, "zh", False),
    "takecover": (64, 512, "zch", True),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--env", choices=sorted(SIZES), default="takecover")
    parser.add_argument("--workers", type=int, default=0, help="env worker processes (0 = one per core)")
    parser.add_argument("--envs-per-worker", type=int, default=0, help="slots per worker (0 = env default)")
    parser.add_argument("--episodes", type=int, default=0, help="episodes per measurement (0 = env default)")
    parser.add_argument("--max-steps", type=int, default=0, help="episode cap (0 = env default)")
    parser.add_argument("--groups", type=str, default="1,2", help="comma list of eval.groups variants to time")
    parser.add_argument("--factory", default="wm_jax.envs:make_env", help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=123)
    parser.add_argument("--repeats", type=int, default=2, help="alternating raw/policy runs; best of each kept")


def _defaults(env: str) -> dict:
    # CarRacing steps at ~110 frames/s per core, TakeCover at thousands: size the runs to ~10-30 s each.
    if env == "carracing":
        return {"envs_per_worker": 2, "episodes": 8, "max_steps": 150}
    return {"envs_per_worker": 8, "episodes": 64, "max_steps": 2100}


def _policy_alone(spec, params, n: int) -> dict:
    """Time the jitted policy step on a batch of n frames (no envs): frames/s, FLOPs per frame, GFLOP/s."""
    import jax

    from wm_jax.agent import make_policy
    from wm_jax.models.mdnrnn import zero_state
    from wm_jax.sysinfo import peak_flops, time_call

    step = make_policy(spec)
    state = zero_state(spec.hidden, (n,))
    frames = np.random.default_rng(0).integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)
    first = np.zeros(n, bool)
    index = np.zeros(n, np.int32)
    flops = None
    try:
        cost = step.lower(params, state, frames, first, index).compile().cost_analysis()
        cost = cost[0] if isinstance(cost, (list, tuple)) else cost
        flops = float(cost.get("flops", 0.0)) or None
    except Exception:  # cost analysis is best-effort
        pass
    sec = time_call(lambda: jax.block_until_ready(step(params, state, frames, first, index)), repeats=3,
                    min_seconds=0.5)
    peak = peak_flops()
    out = {"policy_alone_batch": n, "policy_alone_ms": sec * 1e3, "policy_alone_frames_per_s": n / sec,
           "peak_gflops": peak / 1e9}
    if flops:
        out.update(policy_mflop_per_frame=flops / n / 1e6, policy_alone_gflops=flops / sec / 1e9,
                   policy_alone_fraction_of_peak=flops / sec / peak)
    return out


def measure(args: argparse.Namespace) -> dict:
    import jax

    from wm_jax.agent import AgentPolicy, AgentSpec, init_agent_params
    from wm_jax.runner import EpisodeSpec, RandomPolicy, run_episodes
    from wm_jax.config import EnvConfig
    from wm_jax.envs.vector import VectorEnv

    d = _defaults(args.env)
    per = args.envs_per_worker or d["envs_per_worker"]
    episodes = args.episodes or d["episodes"]
    cap = args.max_steps or d["max_steps"]
    env_cfg = EnvConfig(name=args.env, max_steps=cap)
    z, h, inputs, restart = SIZES[args.env]
    spec = AgentSpec(args.env, z, h, inputs, restart)
    params = init_agent_params(args.seed, spec, ctrl_scale=1.0)
    groups = [int(g) for g in args.groups.split(",") if g.strip()]
    import os

    workers = args.workers or os.cpu_count() or 1
    slots = workers * per
    specs = [EpisodeSpec(args.seed + i) for i in range(episodes)]
    out: dict = {"env": args.env, "workers": workers, "envs_per_worker": per, "slots": slots,
                 "episodes": episodes, "max_steps": cap, "z_dim": z, "lstm_hidden": h, "controller_inputs": inputs}

    def timed(policy, g: int) -> tuple[float, int]:
        t0 = time.perf_counter()
        res, _ = run_episodes(venv, policy, specs, groups=g, progress=False)
        return time.perf_counter() - t0, int(sum(r.length for r in res))

    with VectorEnv(env_cfg, slots, workers, factory=args.factory) as venv:
        timed(RandomPolicy(args.env, slots), 1)  # warm up the workers (first resets load maps/tracks)
        agents = {}
        for g in groups:
            agents[g] = AgentPolicy(spec, params)
            for gi, ws in enumerate(_blocks(venv, g)):  # compile every group shape before timing
                n = sum(len(venv.worker_slots[w]) for w in ws)
                agents[g].act(gi, np.zeros((n, 64, 64, 3), np.uint8), np.ones(n, bool), np.zeros(n, np.int32), None)
        # Alternate raw and policy runs back to back and keep the best of `repeats` (the machine is shared).
        raw = {g: 0.0 for g in groups}
        pol = {g: 0.0 for g in groups}
        for _ in range(args.repeats):
            for g in groups:
                sec, frames = timed(RandomPolicy(args.env, slots), g)
                raw[g] = max(raw[g], frames / sec)
                sec, frames = timed(agents[g], g)
                pol[g] = max(pol[g], frames / sec)
        best_raw = max(raw.values())
        best_g = max(pol, key=pol.get)
        out.update(
            repeats=args.repeats, raw_frames_per_s=best_raw, raw_frames_per_s_by_groups={str(g): raw[g] for g in groups},
            frames_per_s=pol[best_g], best_groups=best_g,
            frames_per_s_by_groups={str(g): pol[g] for g in groups},
            ratio=pol[best_g] / best_raw, ratio_by_groups={str(g): pol[g] / raw[g] for g in groups},
        )
    out.update(_policy_alone(spec, params, slots))
    return out


def _blocks(venv, g: int) -> list[list[int]]:
    from wm_jax.runner import worker_groups

    return worker_groups(venv.num_workers, g)
