"""Config checks beyond types: ranges and cross-field rules, each naming the key it rejects.

:mod:`wm_jax.config` checks each value's type while it builds a Config, then calls :func:`validate` on the
whole: a range (``es.population >= 2``) or a rule across sections (``es.done_scale`` needs
``es.done_mode=bernoulli``). The rules live here so the dataclasses stay readable; this module imports
nothing from wm_jax at import time (the env table, ``wm_jax.envs.spec``, inside a check), so both can use
:class:`ConfigError`.
"""

from __future__ import annotations

import typing

if typing.TYPE_CHECKING:
    from wm_jax.config import Config


class ConfigError(ValueError):
    """A config key is unknown, or its value has the wrong type or range."""


ENVS = ("carracing", "takecover", "atari")


def validate(cfg: Config) -> None:
    """Raise ConfigError naming the first key (section by section) whose value is out of range or contradicts
    another key."""
    for check in (check_env, check_data, check_models, check_es, check_iterate):
        check(cfg)


def _need(ok: bool, key: str, why: str) -> None:
    if not ok:
        raise ConfigError(f"config key '{key}': {why}")


def check_env(cfg: Config) -> None:
    """env.*: the game, its frames and the collection policies' ranges."""
    _need(cfg.env.name in ENVS, "env.name", f"must be one of {ENVS}, got {cfg.env.name!r}")
    _need(cfg.env.carracing_policy in ("brownian", "random_linear"), "env.carracing_policy",
          "must be 'brownian' or 'random_linear'")
    _need(1 <= cfg.env.doom_repeat_min <= cfg.env.doom_repeat_max, "env.doom_repeat_min", "need 1 <= min <= max")
    _need(cfg.env.frame_size == 64, "env.frame_size", "the VAE architecture needs 64")
    _need(1 <= cfg.env.doom_long_repeat_min <= cfg.env.doom_long_repeat_max, "env.doom_long_repeat_min",
          "need 1 <= min <= max")
    _need(0.0 <= cfg.env.carracing_excursion <= 1.0, "env.carracing_excursion", "must be in [0, 1]")
    _need(1 <= cfg.env.carracing_excursion_min <= cfg.env.carracing_excursion_max, "env.carracing_excursion_min",
          "need 1 <= min <= max")
    _need(1 <= cfg.env.doom_sweep_min <= cfg.env.doom_sweep_max, "env.doom_sweep_min", "need 1 <= min <= max")
    _need(0.0 <= cfg.env.doom_sweep_random_leg <= 1.0, "env.doom_sweep_random_leg", "must be in [0, 1]")
    _need(0 <= cfg.env.doom_skill <= 5, "env.doom_skill", "must be 0 (take_cover.cfg's) or ViZDoom's 1..5")
    _need(cfg.env.max_steps >= 1, "env.max_steps", "must be >= 1")
    from wm_jax.envs.spec import ATARI_GAMES

    _need(cfg.env.name != "atari" or cfg.env.atari_game in ATARI_GAMES, "env.atari_game",
          f"must be one of {sorted(ATARI_GAMES)}, got {cfg.env.atari_game!r}")
    _need(cfg.env.atari_frameskip >= 1, "env.atari_frameskip", "must be >= 1")
    _need(cfg.env.atari_noop_max >= 0, "env.atari_noop_max", "must be >= 0 (0: no no-op starts)")
    _need(0.0 <= cfg.env.atari_sticky <= 1.0, "env.atari_sticky", "must be in [0, 1]")
    _need(cfg.env.atari_repeat_max >= 1, "env.atari_repeat_max", "must be >= 1 (1: a new random action every step)")


def check_data(cfg: Config) -> None:
    """data.*: episode counts (the extra kinds exist for one game each) and storage."""
    _need(cfg.data.episodes >= 0, "data.episodes", "must be >= 0")
    _need(cfg.data.long_hold_episodes >= 0, "data.long_hold_episodes", "must be >= 0")
    _need(cfg.data.long_hold_episodes == 0 or cfg.env.name == "takecover", "data.long_hold_episodes",
          "long-hold episodes exist for takecover only")
    _need(cfg.data.sweep_episodes >= 0, "data.sweep_episodes", "must be >= 0")
    _need(cfg.data.sweep_episodes == 0 or cfg.env.name == "takecover", "data.sweep_episodes",
          "sweep episodes exist for takecover only")
    _need(cfg.data.follow_episodes >= 0, "data.follow_episodes", "must be >= 0")
    _need(cfg.data.follow_episodes == 0 or cfg.env.name == "carracing", "data.follow_episodes",
          "follow episodes exist for carracing only")
    _need(cfg.data.workers >= 0, "data.workers", "must be >= 0")
    _need(cfg.data.min_length >= 1, "data.min_length", "must be >= 1")
    _need(0 <= cfg.data.compress_level <= 9, "data.compress_level", "must be in 0..9")
    _need(cfg.data.episode_steps >= 0, "data.episode_steps", "must be >= 0 (0: env.max_steps)")
    _need(cfg.data.interaction_budget >= 0, "data.interaction_budget", "must be >= 0 (0: no limit)")
    if cfg.data.interaction_budget:
        worst = worst_case_steps(cfg)
        _need(sum(worst.values()) <= cfg.data.interaction_budget, "data.interaction_budget",
              f"the collections this config plans may take up to {sum(worst.values()):,} real steps "
              f"({', '.join(f'{k} {v:,}' for k, v in worst.items())}: episodes x data.episode_steps "
              f"{cfg.collect_steps:,}), over the budget of {cfg.data.interaction_budget:,}; collect fewer or "
              f"shorter episodes")
        _need(cfg.es.mode == "dream", "es.mode",
              "ES in the real environment spends real interactions; with data.interaction_budget set, train C "
              "in the dream (es.mode=dream)")


def worst_case_steps(cfg: Config) -> dict[str, int]:
    """Most real steps each planned collection can take: every episode played to its cap (cfg.collect_steps)."""
    cap = cfg.collect_steps
    out = {"random": cfg.data.collected * cap}
    out.update({f"round {r}": cfg.iterate.episodes * cap for r in range(cfg.iterate.rounds)})
    return out


def check_models(cfg: Config) -> None:
    """vae.*, mdnrnn.*, controller.*: V's, M's and C's sizes and options."""
    _need(cfg.vae.z_dim > 0, "vae.z_dim", "must be > 0")
    _need(cfg.vae.batch_size > 0, "vae.batch_size", "must be > 0")
    _need(cfg.vae.fireball_weight >= 0, "vae.fireball_weight", "must be >= 0 (0: the original's loss)")
    _need(cfg.vae.fireball_weight == 0 or cfg.env.name == "takecover", "vae.fireball_weight",
          "fireballs exist in takecover only")
    _need(cfg.vae.foreground_weight >= 0, "vae.foreground_weight", "must be >= 0 (0: the original's loss)")
    _need(cfg.vae.foreground_weight == 0 or cfg.env.name == "atari", "vae.foreground_weight",
          "weighs pixels off a static playfield, which atari has only")
    _need(cfg.vae.small_object_weight >= 0, "vae.small_object_weight", "must be >= 0 (0: off)")
    _need(cfg.vae.small_object_weight == 0 or cfg.vae.foreground_weight > 0, "vae.small_object_weight",
          "adds to vae.foreground_weight's weighting: set vae.foreground_weight > 0 (atari) too")
    _need(not cfg.vae.residual or cfg.env.name == "atari", "vae.residual",
          "encodes the frame minus a static playfield, which atari has only")
    _need(not (cfg.vae.residual and cfg.eval.vae_untrained), "eval.vae_untrained",
          "builds a plain V with random weights; a residual V (vae.residual) needs its trained playfield")
    _need(-20.0 <= cfg.vae.logvar_init <= 5.0, "vae.logvar_init",
          "must be in [-20, 5] (the initial log-variance of V's posterior; 0: sigma 1, the original)")
    _need(cfg.mdnrnn.seq_len > 0, "mdnrnn.seq_len", "must be > 0")
    _need(cfg.mdnrnn.done_horizon >= 1, "mdnrnn.done_horizon", "must be >= 1 (1: the death step only, original)")
    _need(0.0 <= cfg.mdnrnn.head_dropout < 1.0, "mdnrnn.head_dropout", "must be in [0, 1) (0: no dropout, original)")
    _need(cfg.controller.inputs in ("z", "zh", "zch"), "controller.inputs", "must be 'z', 'zh' or 'zch'")
    _need(not cfg.mdnrnn.reward_sign or cfg.env.name != "takecover", "mdnrnn.reward_sign",
          "takecover's dream counts steps alive, not M's reward")


def check_es(cfg: Config) -> None:
    """es.*: the search, the dream it runs in, the final choice."""
    _need(cfg.es.mode in ("dream", "real"), "es.mode", "must be 'dream' or 'real'")
    _need(cfg.es.done_mode in ("threshold", "bernoulli"), "es.done_mode", "must be 'threshold' or 'bernoulli'")
    _need(cfg.es.population >= 2, "es.population", "must be >= 2")
    _need(cfg.es.trials >= 1, "es.trials", "must be >= 1")
    _need(cfg.es.done_scale > 0, "es.done_scale", "must be > 0 (1: the calibrated probability)")
    _need(cfg.es.done_scale == 1.0 or cfg.es.done_mode == "bernoulli", "es.done_scale",
          "scales bernoulli ends only; set es.done_mode=bernoulli")
    _need(cfg.es.dream_compact >= 0, "es.dream_compact", "must be >= 0 (0: off)")
    _need(0.0 < cfg.es.dream_compact_ratio < 1.0, "es.dream_compact_ratio", "must be in (0, 1)")
    _need(cfg.es.dream_models >= 1, "es.dream_models", "must be >= 1 (1: M alone)")
    _need(cfg.es.dream_models <= min(cfg.es.trials, cfg.es.eval_trials), "es.dream_models",
          "must be <= es.trials and es.eval_trials (each trial runs in one model's dream)")
    _need(cfg.es.select_model == 0 or cfg.es.select_model >= cfg.es.dream_models, "es.select_model",
          f"must be 0 (M's own dream) or a member C does not train in (>= es.dream_models={cfg.es.dream_models})")
    _need(not cfg.es.scale_inputs or cfg.es.mode == "dream", "es.scale_inputs", "is supported in dream mode only")
    _need(all(t > 0 for t in cfg.es.taus), "es.taus", "temperatures must be > 0")
    _need(cfg.es.temperature > 0, "es.temperature", "must be > 0")
    _need(cfg.es.real_max_steps >= 0, "es.real_max_steps", "must be >= 0 (0: env.max_steps)")
    _need(cfg.es.select_trials >= 0, "es.select_trials", "must be >= 0 (0: off)")
    _need(cfg.es.select_top >= 1, "es.select_top", "must be >= 1")
    _need(0.0 < cfg.es.c_mean <= 1.0, "es.c_mean", "must be in (0, 1]")
    _need(cfg.es.eigen_every >= 0, "es.eigen_every", "must be >= 0 (1: every generation, 0: Hansen's schedule)")
    _need(cfg.es.eigen_every == 1 or cfg.es.strategy == "CMA_ES", "es.eigen_every",
          f"is a CMA_ES option (es.strategy={cfg.es.strategy!r} keeps no eigendecomposition)")
    _need(cfg.es.real_stall_steps >= 0, "es.real_stall_steps", "must be >= 0 (0: off)")


def check_iterate(cfg: Config) -> None:
    """iterate.*: the iterative-training rounds (paper section 5)."""
    _need(cfg.iterate.rounds >= 0, "iterate.rounds", "must be >= 0 (0: off)")
    _need(cfg.iterate.episodes >= 1, "iterate.episodes", "must be >= 1")
    _need(cfg.iterate.tau > 0, "iterate.tau", "must be > 0")
    _need(0.0 <= cfg.iterate.epsilon <= 1.0, "iterate.epsilon", "must be in [0, 1]")
    _need(cfg.iterate.mdnrnn_steps >= 0, "iterate.mdnrnn_steps", "must be >= 0")
