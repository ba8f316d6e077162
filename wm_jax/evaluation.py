"""``wm-jax evaluate``: score a run's controller (or a policy without models) in the real environment.

    wm-jax evaluate --run RUN_DIR [--episodes 100] [--seed S] [--controller PATH] [--policy agent|random|NAME]
                    [key=value ...]

The config is the run's ``config.json`` (or ``--config FILE``) plus dotted overrides. Episode i uses the
environment seed ``seed + i`` (default ``eval.seed``), so the same seed gives the same tracks / episodes.
Writes ``<run>/eval/results.json`` (``<run>/eval/<policy>/`` for the random policy or a
fixed reference policy NAME of :mod:`wm_jax.envs.reference`, e.g. ``sweep120``) atomically: mean, std,
per-episode returns, lengths, seeds, wall time and throughput; plus best.gif / worst.gif.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from wm_jax.config import Config, ConfigError


def check_eval_config(cfg: Config) -> None:
    e = cfg.eval
    for key, ok in (("eval.episodes", e.episodes >= 1), ("eval.workers", e.workers >= 0),
                    ("eval.envs_per_worker", e.envs_per_worker >= 1), ("eval.groups", e.groups >= 1)):
        if not ok:
            raise ConfigError(f"config key '{key}': must be >= {0 if key == 'eval.workers' else 1}")


def slot_layout(cfg: Config, episodes: int) -> tuple[int, int]:
    """(workers, environment slots) for `episodes` episodes: no more slots than episodes."""
    import os

    workers = cfg.eval.workers or os.cpu_count() or 1
    slots = min(episodes, workers * cfg.eval.envs_per_worker)
    return min(workers, slots), slots


def make_agent_policy(cfg: Config, run: Path, controller: str | None):
    """(AgentPolicy, cfg): V and M from `run` (or untrained, per eval.*_untrained), C from `controller`
    (default: the run's); cfg gets the controller folder's `controller.*` shape options."""
    from wm_jax.agent import AgentParams, AgentPolicy, load_models, spec_from_config, stack_controllers
    from wm_jax.io import controller_config, load_controller

    cpath = Path(controller) if controller else run
    c = load_controller(cpath)
    cfg = controller_config(cfg, cpath)
    spec = spec_from_config(cfg)
    vae, m = load_models(cfg, run)
    return AgentPolicy(spec, AgentParams(vae, m, stack_controllers([c]))), cfg


def evaluate(cfg: Config, run: Path, episodes: int, seed: int, policy_kind: str = "agent",
             controller: str | None = None, out: Path | None = None, progress: bool = True) -> dict[str, Any]:
    """Play `episodes` episodes with seeds seed, seed+1, ...; write results.json and GIFs; return the results."""
    from wm_jax.runner import EpisodeSpec, RandomPolicy, ReferencePolicy, run_episodes
    from wm_jax.checkpoint import write_json_atomic
    from wm_jax.envs.vector import VectorEnv
    from wm_jax.metrics import HAZARD_EDGES, episode_hazard

    out = Path(out) if out else default_out(run, policy_kind)
    workers, slots = slot_layout(cfg, episodes)
    if policy_kind == "random":
        policy = RandomPolicy(cfg.env.id, slots)
    elif policy_kind != "agent":
        policy = ReferencePolicy(cfg.env.id, policy_kind, slots)
    else:
        policy, cfg = make_agent_policy(cfg, run, controller)
    specs = [EpisodeSpec(seed + i) for i in range(episodes)]
    t0 = time.perf_counter()
    with VectorEnv(cfg.env, slots, workers) as venv:
        t1 = time.perf_counter()
        results, clips = run_episodes(venv, policy, specs, groups=cfg.eval.groups, record=cfg.eval.gifs,
                                      progress=progress, desc=f"evaluate {cfg.env.id} ({policy_kind})")
    t2 = time.perf_counter()
    returns = np.asarray([r.ret for r in results])
    frames = int(sum(r.length for r in results))
    summary = {
        "env": cfg.env.id, "policy": policy_kind, "run": str(run), "controller": controller,
        "episodes": episodes, "seed": seed, "max_steps": cfg.env.max_steps,
        "mean": float(returns.mean()), "std": float(returns.std()), "min": float(returns.min()),
        "max": float(returns.max()), "median": float(np.median(returns)),
        "returns": returns.tolist(), "lengths": [r.length for r in results], "seeds": [r.seed for r in results],
        "terminated": [r.terminated for r in results],
        "workers": workers, "slots": slots, "groups": cfg.eval.groups,
        "mdnrnn_untrained": cfg.eval.mdnrnn_untrained, "vae_untrained": cfg.eval.vae_untrained,
        "controller_inputs": cfg.controller.inputs, "controller_hidden": cfg.controller.hidden,
        "wall_s": t2 - t0, "startup_s": t1 - t0, "frames": frames, "frames_per_s": frames / max(t2 - t1, 1e-9),
        "provenance": _provenance(), "config": cfg.to_dict(),
    }
    if cfg.env.id == "takecover":  # the real game's hazard by time, to set beside dream-check's dream hazard
        summary["hazard_edges"] = list(HAZARD_EDGES)
        summary["hazard"] = episode_hazard(summary["lengths"], summary["terminated"])
    write_json_atomic(out / "results.json", summary)
    if clips:
        from wm_jax.viz import save_gif

        for name, clip in clips.items():
            save_gif(clip, out / f"{name}.gif")
    return summary


def _provenance() -> dict:
    """git commit + dirty flag, and the backend when the agent ran (no JAX is started for a policy without
    models)."""
    import sys

    from wm_jax.sysinfo import git_state, provenance

    return provenance() if "jax" in sys.modules else git_state()


def default_out(run: Path, policy_kind: str) -> Path:
    """<run>/eval for the agent, <run>/eval/<policy> for a policy without models."""
    return run / "eval" / ("" if policy_kind == "agent" else policy_kind)


def check_policy(env_name: str, policy_kind: str) -> None:
    """ConfigError naming the valid choices unless `policy_kind` is agent, random or a reference policy."""
    from wm_jax.envs import reference

    if policy_kind in ("agent", "random"):
        return
    try:
        reference.get(env_name, policy_kind)
    except ValueError as e:
        raise ConfigError(f"--policy {policy_kind}: {e} (or agent, random)") from None
