"""The pipeline's stages as plain functions: ``collect(cfg)``, ``train_vae(cfg)``, ``encode(cfg)``, ...

Each takes a resolved :class:`~wm_jax.config.Config` (``wm_jax.load_config``) and keyword options, does its work
in ``cfg.run_dir`` (resuming what an earlier call left, returning at once when the stage is finished) and returns
a :class:`StageResult`. The CLI (``wm_jax.cli``) maps flags to these functions; the experiment scripts
(``wm_jax.pipeline``) call them directly. No JAX at import: the collection workers import this package.

``progress=None`` shows progress bars only when stderr is a terminal (no carriage-return spam in logs).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from wm_jax.config import Config, ConfigError


@dataclass(frozen=True)
class StageResult:
    """What a stage did: its name, the folder or file it wrote, and the summary it recorded there."""

    stage: str
    path: Path  # the stage's folder (e.g. <run>/vae) or the file it wrote (e.g. <run>/dream_check.json)
    summary: dict[str, Any] = field(default_factory=dict)  # the stage's DONE / JSON contents

    def __getitem__(self, key: str) -> Any:
        return self.summary[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.summary.get(key, default)


def show_progress(progress: bool | None) -> bool:
    """`progress`, or when None: whether stderr (where the bars go) is a terminal."""
    return sys.stderr.isatty() if progress is None else bool(progress)


# The config sections each trained stage depends on: a resume is refused when one of their keys changed
# (wm_jax.checkpoint.check_resume_config; more steps, generations or episodes are allowed).
V_KEYS = ("seed", "env.", "data.", "vae.")
M_KEYS = (*V_KEYS, "mdnrnn.")
C_KEYS = (*M_KEYS, "es.", "controller.")


def guard_resume(folder: Path, cfg: Config, allow: bool, sections: tuple[str, ...]) -> None:
    """ConfigError naming the keys when `folder` was trained with other values of `sections`' keys (unless
    `allow`, the CLI's --allow-config-change)."""
    from wm_jax.checkpoint import check_resume_config

    check_resume_config(folder, cfg, allow=allow, sections=sections)


def check_taus(taus: Sequence[float]) -> tuple[float, ...]:
    """Temperatures as a tuple, checked: non-empty, positive, no duplicates (ConfigError otherwise)."""
    taus = tuple(float(t) for t in taus)
    if not taus or any(t <= 0 for t in taus):
        raise ConfigError(f"temperatures must be positive numbers, got {list(taus)}")
    if len(set(taus)) != len(taus):
        raise ConfigError(f"temperatures hold duplicates: {list(taus)}")
    return taus


# ---------------------------------------------------------------- the world model: data, V, M


def collect(cfg: Config, *, progress: bool | None = None) -> StageResult:
    """Random-policy episodes from the real environment into ``<run>/data`` (tops up to data.episodes)."""
    import numpy as np

    from wm_jax.config import save_config
    from wm_jax.data.collect import collect as collect_episodes

    save_config(cfg, cfg.run_dir / "config.json")
    records = [r for r in collect_episodes(cfg, progress=show_progress(progress)) if r["index"] < cfg.data.collected]
    returns = [r["return"] for r in records]
    return StageResult("collect", cfg.data_dir, {
        "episodes": len(records), "frames": sum(r["length"] + 1 for r in records),
        "mean_return": float(np.mean(returns)) if returns else float("nan")})


def train_vae(cfg: Config, *, plots: bool = True, progress: bool | None = None,
              allow_config_change: bool = False) -> StageResult:
    """Train (or resume) V on the collected frames; summary: step, held-out MSE (+ TakeCover fireball recall,
    Atari foreground and small-object recall).
    A resume with other V settings is refused unless `allow_config_change`."""
    from wm_jax.io import VAE_DIR
    from wm_jax.train.vae import train

    guard_resume(cfg.run_dir / VAE_DIR, cfg, allow_config_change, V_KEYS)
    summary = train(cfg, plots=plots, progress=show_progress(progress))
    return StageResult("train-vae", cfg.run_dir / VAE_DIR, summary)


def evaluate_vae(cfg: Config, *, steps: Sequence[int] | None = None, holdout_episodes: int | None = None,
                 max_frames: int = 20_000, data_dir: str | os.PathLike | None = None) -> StageResult:
    """Held-out reconstruction error of V's checkpoints (`steps`, default every one kept) on the last episodes
    of the run's data (or `data_dir`'s); summary rows per step."""
    from wm_jax.train.vae_eval import evaluate_vae as run_eval

    out = run_eval(cfg, list(steps) if steps else None, holdout_episodes, max_frames, data_dir)
    return StageResult("eval-vae", Path(out["path"]), out)


def encode(cfg: Config, *, progress: bool | None = None) -> StageResult:
    """V's (mu, logvar) for every frame, written beside the data (``<run>/data/latents``)."""
    from wm_jax.train.encode import encode_dataset

    summary = encode_dataset(cfg, progress=show_progress(progress))
    return StageResult("encode", Path(summary["latents_dir"]), summary)


def train_mdnrnn(cfg: Config, *, member: int = 0, plots: bool = True, progress: bool | None = None,
                 allow_config_change: bool = False) -> StageResult:
    """Train (or resume) M on the encoded sequences; `member` e >= 1 trains dynamics-ensemble member e.
    A resume with other M (or V, data) settings is refused unless `allow_config_change`."""
    from wm_jax.io import member_dir
    from wm_jax.train.mdnrnn import train

    guard_resume(member_dir(cfg.run_dir, member), cfg, allow_config_change, M_KEYS)
    summary = train(cfg, plots=plots, member=member, progress=show_progress(progress))
    return StageResult("train-mdnrnn", member_dir(cfg.run_dir, member), summary)


# ---------------------------------------------------------------- C: in the dream or the real env


def train_controller(cfg: Config, *, gif: bool = True, progress: bool | None = None,
                     allow_config_change: bool = False) -> StageResult:
    """Train C with CMA-ES in M's dream at es.temperature (es.mode=dream) or in the real env (es.mode=real).
    A resume with other ES/controller (or world-model) settings is refused unless `allow_config_change`."""
    from wm_jax.io import CONTROLLER_DIR

    guard_resume(cfg.run_dir / CONTROLLER_DIR, cfg, allow_config_change, C_KEYS)
    if cfg.es.mode == "real":
        from wm_jax.train.controller_real import run_real_es

        summary = run_real_es(cfg, progress=show_progress(progress))
        return StageResult("train-controller", cfg.run_dir / CONTROLLER_DIR, summary)
    from wm_jax.train.controller import train_dream

    summary = train_dream(cfg, gif=gif, progress=show_progress(progress))
    return StageResult("train-controller", Path(summary["dirs"][0]), summary)


def sweep_temperature(cfg: Config, taus: Sequence[float] | None = None, *, gif: bool = True,
                      progress: bool | None = None, allow_config_change: bool = False) -> StageResult:
    """One C per dream temperature τ (default es.taus), all τ trained in one batched program; writes
    ``<run>/sweep/tau_<τ>/`` and ``<run>/sweep/scores.json``."""
    from wm_jax.train.sweep import sweep

    if cfg.es.mode != "dream":
        raise ConfigError("config key 'es.mode': the temperature sweep trains in the dream; set es.mode=dream")
    taus = check_taus(cfg.es.taus if taus is None else taus)
    guard_resume(cfg.run_dir / "sweep" / "ckpt", cfg, allow_config_change, C_KEYS)
    summary = sweep(cfg, taus, gif=gif, progress=show_progress(progress))
    return StageResult("sweep-temperature", cfg.run_dir / "sweep", {**summary, "taus": list(taus)})


def collect_agent(cfg: Config, controller: str | os.PathLike, round: int, *,
                  progress: bool | None = None) -> StageResult:
    """Real episodes played by `controller` with exploration, added to the data (iterative training round)."""
    from wm_jax.data.collect_agent import collect_agent as play

    summary = play(cfg, controller, round, progress=show_progress(progress))
    return StageResult("collect-agent", cfg.data_dir, summary)


def dream_check(cfg: Config, taus: Sequence[float] | None = None, *, episodes: int = 64,
                seed: int = 0) -> StageResult:
    """Fixed reference policies scored in M's dream at each τ (default es.temperature), with the dream's
    hazard by time; written to ``<run>/dream_check.json``. A diagnostic to run before ES."""
    from wm_jax.checkpoint import write_json_atomic
    from wm_jax.metrics import HAZARD_EDGES
    from wm_jax.train.dream_check import check

    taus = check_taus((cfg.es.temperature,) if taus is None else taus)
    res, hazard = check(cfg, taus, episodes, seed, with_hazard=True)
    record = {"env": cfg.env.id, "done_mode": cfg.es.done_mode, "episodes": episodes,
              "max_steps": cfg.es.dream_max_steps, "scores": res, "hazard_edges": list(HAZARD_EDGES),
              "hazard": hazard}
    path = cfg.run_dir / "dream_check.json"
    write_json_atomic(path, record)
    return StageResult("dream-check", path, record)


def dream_score(cfg: Config, controllers: Sequence[str | os.PathLike], *, member: int = 1,
                taus: Sequence[float] | None = None, trials: int = 256, seed: int = 0,
                out: str | os.PathLike | None = None) -> StageResult:
    """Trained controllers scored in M's dream and in held-out model ``<run>/mdnrnn_<member>``'s, per τ;
    written to `out` (default ``<run>/dream_score.json``)."""
    from wm_jax.checkpoint import write_json_atomic
    from wm_jax.io import load_bank, load_controller, load_mdnrnn
    from wm_jax.train.dream_score import score

    if member < 1:
        raise ConfigError(f"the held-out model must be a member >= 1 beside M, got {member}")
    taus = check_taus((cfg.es.temperature,) if taus is None else taus)
    mdn, bank = load_mdnrnn(cfg.run_dir), load_bank(cfg.data_dir, cfg.es.initial_states)
    held = load_mdnrnn(cfg.run_dir, member=member)
    res = score(cfg, {str(c): load_controller(c) for c in controllers}, taus, trials, seed, mdn, bank, held)
    path = Path(out) if out else cfg.run_dir / "dream_score.json"
    record = {"env": cfg.env.id, "member": member, "trials": trials, "seed": seed, "scores": res}
    write_json_atomic(path, record)
    return StageResult("dream-score", path, record)


# ---------------------------------------------------------------- the real environment


def evaluate(cfg: Config, run: str | os.PathLike | None = None, *, episodes: int | None = None,
             seed: int | None = None, policy: str = "agent", controller: str | os.PathLike | None = None,
             out: str | os.PathLike | None = None, progress: bool | None = None) -> StageResult:
    """Play `episodes` (default eval.episodes) real episodes, env seeds seed, seed+1, ... (default eval.seed).

    policy: "agent" (V + M + C of `run`, default cfg.run_dir; C from `controller`, default <run>/controller),
    "random", or a fixed reference policy of ``wm_jax.envs.reference`` (e.g. "sweep120"). Writes
    ``results.json`` (+ best.gif, worst.gif) into `out` (default <run>/eval, or <run>/eval/<policy>).
    """
    from wm_jax.evaluation import check_eval_config, check_policy, default_out
    from wm_jax.evaluation import evaluate as play

    check_eval_config(cfg)
    run_dir = Path(run) if run is not None else cfg.run_dir
    episodes = cfg.eval.episodes if episodes is None else episodes
    if episodes < 1:
        raise ConfigError(f"episodes must be >= 1, got {episodes}")
    seed = cfg.eval.seed if seed is None else seed
    check_policy(cfg.env.id, policy)
    out = Path(out) if out else default_out(run_dir, policy)
    summary = play(cfg, run_dir, episodes, seed, policy, None if controller is None else str(controller), out,
                   progress=show_progress(progress))
    return StageResult("evaluate", out / "results.json", summary)
