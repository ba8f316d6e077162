"""``wm-jax eval-vae``: compare V checkpoints on held-out frames, before spending an M and a C on one.

For each V step kept in ``<run>/vae`` (or those named by ``--steps``): per-pixel MSE of the reconstructions
from z = mu, and for TakeCover the share of approaching fireballs' pixels the reconstructions keep
(``wm_jax.envs.frames.fireball_recall``) — the figure that tells whether a dream can contain the threat
at all. The held-out set is the last ``--holdout-episodes`` episodes of the run's data (default: V's own
``vae.holdout_episodes``), or of another run's data with ``--data DIR`` (V's of different runs compared on the
same frames). The output counts how many of the scored episodes V trained on: those whose (seed, length, return)
match one of V's training episodes, i.e. the run's first ``data.collected`` episodes minus its
``vae.holdout_episodes`` (episodes added later by ``collect-agent`` came after V).

Output: a table on stdout and ``<run>/vae/eval.json`` (``eval_<other run>.json`` with ``--data``; rows keyed by
step, conditions; written atomically).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from wm_jax.config import Config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from wm_jax.cli import add_config_arguments

    add_config_arguments(parser)
    parser.add_argument("--steps", default="", help="comma-separated V steps (default: every step kept)")
    parser.add_argument("--holdout-episodes", type=int, default=None,
                        help="score on the last N episodes of the data (default: vae.holdout_episodes)")
    parser.add_argument("--data", default=None,
                        help="score on this data folder instead of the run's (compare V's of runs on the same frames)")
    parser.add_argument("--max-frames", type=int, default=20_000, help="cap on the held-out frames scored")


def run(args: argparse.Namespace) -> int:
    from wm_jax.cli import config_from_args

    cfg = config_from_args(args)
    steps = [int(s) for s in args.steps.split(",") if s.strip()] or None
    try:
        out = evaluate_vae(cfg, steps, args.holdout_episodes, args.max_frames, args.data)
    except (FileNotFoundError, ValueError) as e:  # no checkpoint, unknown step, too few episodes, corrupt shard
        print(f"wm-jax eval-vae: {e}", file=sys.stderr)
        return 1
    print(f"V checkpoints of {out['run_dir']} on the last {out['holdout_episodes']} episodes "
          f"of {out['data_dir']} ({out['trained_on']} of them in V's training set), "
          f"{out['rows'][0]['holdout_frames']} frames:")
    fire = "fireball_recall" in out["rows"][0]
    print("| step | held-out MSE |" + (" fireball pixels kept |" if fire else ""))
    print("|---:|---:|" + ("---:|" if fire else ""))
    for r in out["rows"]:
        line = f"| {r['step']} | {r['holdout_mse']:.5f} |"
        if fire and r["fireball_recall"] is not None:
            line += f" {r['fireball_recall']:.1%} ({r['fireball_frames']} frames) |"
        elif fire:
            line += " – (no frame with a fireball on its way) |"
        print(line)
    print(f"written: {out['path']}")
    return 0


def evaluate_vae(cfg: Config, steps: list[int] | None = None, holdout_episodes: int | None = None,
                 max_frames: int = 20_000, data_dir: str | Path | None = None) -> dict:
    """Score V checkpoints of cfg.run_dir on the last episodes of its data (or of `data_dir`), counting those
    V trained on; writes and returns ``eval.json``'s dict."""
    from wm_jax.checkpoint import Checkpointer, write_json_atomic
    from wm_jax.data.dataset import open_dataset
    from wm_jax.sysinfo import device_info
    from wm_jax.io import load_vae
    from wm_jax.train.vae import STAGE, holdout_metrics

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
    rows = []
    for step in steps or kept:
        t0 = time.perf_counter()
        params, _ = load_vae(cfg.run_dir, step)
        m = holdout_metrics(params, hold, max_frames=max_frames, env=cfg.env.name)
        rows.append({"step": step, **m, "seconds": time.perf_counter() - t0})
    out = {"run_dir": str(cfg.run_dir), "data_dir": str(data_dir), "holdout_episodes": n,
           "trained_on": sum(_fingerprint(r) in seen for r in hold.episodes), "env": cfg.env.name,
           "device": device_info(), "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "rows": rows}
    path = folder / ("eval.json" if own else f"eval_{data_dir.resolve().parent.name}.json")
    out["path"] = str(path)
    write_json_atomic(path, out)
    return out


def _fingerprint(rec) -> tuple:
    """An episode's identity across data folders: the same seed, length and return."""
    return rec.seed, rec.length, round(rec.episode_return, 3)
