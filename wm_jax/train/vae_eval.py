"""``wm-jax eval-vae``: compare V checkpoints on held-out frames, before spending an M and a C on one.

For each V step kept in ``<run>/vae`` (or those named by ``--steps``): per-pixel MSE of the reconstructions
from z = mu, and for TakeCover the share of approaching fireballs' pixels the reconstructions keep
(``wm_jax.envs.frames.fireball_recall``) — the figure that tells whether a dream can contain the threat
at all; for Atari the share of the pixels off the playfield, and of small moving objects' (Pong's ball), that
they keep, and the share of the pixels they paint off it that belong there (``wm_jax.envs.frames.foreground_recall``,
against V's playfield ``<run>/vae/background.png``). The held-out set is the last ``--holdout-episodes`` episodes of the run's data (default: V's own
``vae.holdout_episodes``), or of another run's data with ``--data DIR`` (V's of different runs compared on the
same frames). The output counts how many of the scored episodes V trained on: those whose (seed, length, return)
match one of V's training episodes, i.e. the run's first ``data.collected`` episodes minus its
``vae.holdout_episodes`` (episodes added later by ``collect-agent`` came after V).

Output: a table on stdout and ``<run>/vae/eval.json`` (``eval_<other run>.json`` with ``--data``; rows keyed by
step, conditions; written atomically).
"""

from __future__ import annotations

import time
from pathlib import Path

from wm_jax.config import Config


def evaluate_vae(cfg: Config, steps: list[int] | None = None, holdout_episodes: int | None = None,
                 max_frames: int = 20_000, data_dir: str | Path | None = None) -> dict:
    """Score V checkpoints of cfg.run_dir on the last episodes of its data (or of `data_dir`), counting those
    V trained on; writes and returns ``eval.json``'s dict."""
    from wm_jax.checkpoint import Checkpointer, write_json_atomic
    from wm_jax.data.dataset import open_dataset
    from wm_jax.io import load_vae
    from wm_jax.sysinfo import device_info
    from wm_jax.train.vae import STAGE, playfield
    from wm_jax.train.vae_holdout import holdout_metrics

    folder = Path(cfg.run_dir) / STAGE
    if not folder.is_dir():
        raise FileNotFoundError(f"no V checkpoints in {folder}; run `wm-jax train-vae` first")
    with Checkpointer(folder) as ck:
        kept = ck.all_steps()
    missing = sorted(set(steps or []) - set(kept))
    if missing:
        raise ValueError(f"{folder}: no V checkpoint at step(s) {missing}; kept steps: {kept}")
    n = cfg.vae.holdout_episodes if holdout_episodes is None else holdout_episodes
    own = data_dir is None or Path(data_dir).resolve() == Path(cfg.data_dir).resolve()
    data_dir = Path(cfg.data_dir if data_dir is None else data_dir)
    scored = open_dataset(data_dir)
    _, hold = scored.split(n)
    run_data = scored if own else open_dataset(cfg.data_dir)
    collected = run_data.episodes[:cfg.data.collected]
    seen = {_fingerprint(r) for r in collected[:max(0, len(collected) - cfg.vae.holdout_episodes)]}
    background = playfield(cfg) if cfg.env.name == "atari" else None  # V's, also on another run's frames
    rows = []
    for step in steps or kept:
        t0 = time.perf_counter()
        params, _ = load_vae(cfg.run_dir, step)
        m = holdout_metrics(params, hold, max_frames=max_frames, env=cfg.env.id, background=background)
        rows.append({"step": step, **m, "seconds": time.perf_counter() - t0})
    out = {"run_dir": str(cfg.run_dir), "data_dir": str(data_dir), "holdout_episodes": n,
           "trained_on": sum(_fingerprint(r) in seen for r in hold.episodes), "env": cfg.env.id,
           "device": device_info(), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "rows": rows}
    path = folder / ("eval.json" if own else f"eval_{data_dir.resolve().parent.name}.json")
    out["path"] = str(path)
    write_json_atomic(path, out)
    return out


def _fingerprint(rec) -> tuple:
    """An episode's identity across data folders: the same seed, length and return."""
    return rec.seed, rec.length, round(rec.episode_return, 3)
