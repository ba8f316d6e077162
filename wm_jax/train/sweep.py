"""``wm-jax sweep-temperature --taus 0.1,0.5,1.0,1.15,1.3``: one controller per dream temperature τ.

All temperatures train in ONE compiled program: the ES generation (wm_jax.es) is vmapped over τ, which is
data in the dream's params, so the τ axis only widens the batch. Every τ starts from the same seed (common
random numbers across τ), so a τ's result equals a separate ``train-controller es.temperature=τ`` run.

Writes ``<run_dir>/sweep/tau_<τ>/`` (params.npz, config.json, score.json: loadable by
``load_controller(path)``), ``<run_dir>/sweep/scores.json`` (τ → virtual score), checkpoints in ``<run_dir>/sweep/ckpt`` (resumable)
and one dream episode per τ decoded through V: ``<run_dir>/plots/dream_rollout_tau_<τ>.gif``.
"""

from __future__ import annotations

from pathlib import Path

from wm_jax.config import Config


def tau_dir(run_dir: Path, tau: float) -> Path:
    return Path(run_dir) / "sweep" / f"tau_{tau:g}"


def sweep(cfg: Config, taus: tuple[float, ...], **kwargs) -> dict:
    """Train one controller per τ (batched) and write the sweep folder; kwargs go to train_dream."""
    from wm_jax.checkpoint import write_json_atomic
    from wm_jax.train.controller import train_dream

    root = Path(cfg.run_dir) / "sweep"
    summary = train_dream(cfg, taus=taus, ckpt_dir=root / "ckpt", out_dirs=[tau_dir(cfg.run_dir, t) for t in taus],
                          **kwargs)
    if summary["generations"] >= cfg.es.generations:
        held = summary["select_return"] or [None] * len(taus)
        scores = {f"{t:g}": {"dream_eval_return": r, "dir": d, **({"select_return": h} if h is not None else {})}
                  for t, r, h, d in zip(taus, summary["eval_return"], held, summary["dirs"])}
        write_json_atomic(root / "scores.json", {"env": cfg.env.id, "generations": summary["generations"],
                                                 "eval_trials": cfg.es.eval_trials, "scores": scores})
    return summary
