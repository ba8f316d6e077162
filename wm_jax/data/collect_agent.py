"""``wm-jax collect-agent --controller PATH --round R``: real episodes played by a trained agent, added to the data.

The paper's iterative training (section 5): a controller trained in the dream plays the real game, with
exploration noise (``iterate.epsilon``: random actions held 1-10 steps), and its episodes join the random-policy
data, so M is next trained on the states such a controller visits -- where a dream it learned to exploit
was wrong. Round R writes episodes ``n + R * iterate.episodes`` .. ``n + (R + 1) * iterate.episodes - 1``
(n = data.collected: the random, long-hold and sweep episodes), episode i on environment seed ``data.seed + i``,
as shards and manifest records (policy ``agent_round<R>``) in the same format as ``wm-jax collect``.

Resume: shards on disk are the truth (as for ``collect``); a rerun plays only the missing indices.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np

from wm_jax.config import Config, ConfigError


def round_indices(cfg: Config, rnd: int) -> range:
    """Episode indices of iteration round `rnd`."""
    first = cfg.data.collected + rnd * cfg.iterate.episodes
    return range(first, first + cfg.iterate.episodes)


def collect_agent(cfg: Config, controller: str | Path, rnd: int, progress: bool = True) -> dict:
    """Play the missing episodes of round `rnd` with `controller` (+ exploration) into ``cfg.data_dir``."""
    from wm_jax.runner import EpisodeSpec, ExplorePolicy, run_episodes
    from wm_jax.data.budget import check_budget, write_ledger
    from wm_jax.data.collect import data_lock, reconcile
    from wm_jax.data.shards import episode_record, shard_name, write_episode, write_manifest
    from wm_jax.envs.vector import VectorEnv
    from wm_jax.evaluation import make_agent_policy, slot_layout

    if rnd < 0:
        raise ConfigError(f"--round must be >= 0, got {rnd}")
    data_dir = Path(cfg.data_dir)
    if not (data_dir / "manifest.json").exists():
        raise ConfigError(f"{data_dir}: no collected data (run `wm-jax collect` first)")
    label = f"agent_round{rnd}"
    with data_lock(data_dir):
        indices = round_indices(cfg, rnd)
        records = reconcile(data_dir, cfg.env.id, cfg.action_dim, cfg.data.seed,
                            lambda i: label if i in indices else None)
        todo = [i for i in indices if i not in records]
        summary = {"round": rnd, "controller": str(controller), "episodes": len(indices), "played": len(todo)}
        if todo:
            check_budget(cfg, records.values(), len(todo), f"iterate round {rnd}")
            policy, cfg = make_agent_policy(cfg, cfg.run_dir, str(controller))
            workers, slots = slot_layout(cfg, len(todo))
            explore = ExplorePolicy(policy, cfg.env.id, cfg.iterate.epsilon)
            specs = [EpisodeSpec(cfg.data.seed + i) for i in todo]
            last_write = [time.perf_counter()]

            def save(e: int, ep) -> None:
                index = todo[e]
                write_episode(data_dir / "episodes" / shard_name(index), ep, cfg.data.compress_level)
                records[index] = {**episode_record(index, ep), "policy": label}
                if time.perf_counter() - last_write[0] > 1.0:
                    write_manifest(data_dir, cfg.env.id, cfg.action_dim, list(records.values()))
                    last_write[0] = time.perf_counter()

            t0 = time.perf_counter()
            try:
                with VectorEnv(dataclasses.replace(cfg.env, max_steps=cfg.collect_steps), slots, workers) as venv:
                    run_episodes(venv, explore, specs, groups=cfg.eval.groups, progress=progress,
                                 desc=f"collect {cfg.env.id} ({label}, epsilon {cfg.iterate.epsilon:g})",
                                 on_episode=save)
            finally:
                write_manifest(data_dir, cfg.env.id, cfg.action_dim, list(records.values()))
                write_ledger(cfg, records.values())
            summary["wall_s"] = time.perf_counter() - t0
        mine = [records[i] for i in indices]
        summary.update(frames=int(sum(r["length"] + 1 for r in mine)),
                       mean_return=float(np.mean([r["return"] for r in mine])),
                       mean_length=float(np.mean([r["length"] for r in mine])))
        return summary
