"""Environments: host-side adapters of the real games (carracing.py, takecover.py) and M's dream (dream.py).

Importing this package imports neither JAX nor the games; :func:`make_env` imports the one it needs, so
collection workers stay free of JAX.
"""

from __future__ import annotations

import numpy as np

POLICY_STREAM = 0x5EED  # second word of the policy rng's seed, so it never equals the env's own stream


def make_env(env_cfg):
    """``EnvConfig`` -> adapter with ``reset(seed) -> uint8 [64, 64, 3]``,
    ``step(action float32 [A]) -> (frame, reward, terminated, truncated)``, ``close()``, ``action_dim``."""
    if env_cfg.name == "carracing":
        from wm_jax.envs.carracing import CarRacingEnv

        return CarRacingEnv(env_cfg.max_steps, env_cfg.carracing_fast_render, env_cfg.frame_size)
    if env_cfg.name == "takecover":
        from wm_jax.envs.takecover import TakeCoverEnv

        return TakeCoverEnv(env_cfg.max_steps, env_cfg.frame_size, screen_flashes=env_cfg.doom_screen_flashes,
                            skill=env_cfg.doom_skill)
    if env_cfg.name == "atari":
        from wm_jax.envs.atari import AtariEnv

        return AtariEnv(env_cfg.atari_game, env_cfg.max_steps, env_cfg.frame_size, frameskip=env_cfg.atari_frameskip,
                        noop_max=env_cfg.atari_noop_max, sticky=env_cfg.atari_sticky,
                        fire_reset=env_cfg.atari_fire_reset)
    raise ValueError(f"unknown env.name {env_cfg.name!r}")


def make_policy(env_cfg, kind: str = "random"):
    """The collection policy of `env_cfg`: ``reset(rng)``, then ``policy(frame) -> action float32 [A]``.
    `kind`: 'random' (the original's, or for CarRacing ``env.carracing_policy``); TakeCover 'long_hold'
    (``data.long_hold_episodes``) or 'sweep' (``data.sweep_episodes``); CarRacing 'follow' (``data.follow_episodes``);
    Atari 'random' only (a uniform action, held 1..``env.atari_repeat_max`` steps)."""
    if env_cfg.name == "carracing":
        from wm_jax.envs.carracing import BrownianPolicy, FollowPolicy, RandomLinearPolicy

        if kind == "follow":
            return FollowPolicy(env_cfg.carracing_excursion,
                                (env_cfg.carracing_excursion_min, env_cfg.carracing_excursion_max))
        if kind != "random":
            raise ValueError(f"unknown CarRacing collection policy {kind!r}: 'random' or 'follow'")
        return BrownianPolicy() if env_cfg.carracing_policy == "brownian" else RandomLinearPolicy()
    if env_cfg.name == "takecover":
        from wm_jax.envs.takecover import RepeatPolicy, SweepPolicy

        if kind == "sweep":
            return SweepPolicy(env_cfg.doom_sweep_min, env_cfg.doom_sweep_max, env_cfg.doom_sweep_random_leg)
        if kind == "long_hold":
            return RepeatPolicy(env_cfg.doom_long_repeat_min, env_cfg.doom_long_repeat_max)
        if kind != "random":
            raise ValueError(f"unknown TakeCover collection policy {kind!r}: 'random', 'long_hold' or 'sweep'")
        return RepeatPolicy(env_cfg.doom_repeat_min, env_cfg.doom_repeat_max)
    if env_cfg.name == "atari":
        from wm_jax.envs.atari import UniformPolicy
        from wm_jax.envs.spec import env_spec

        if kind != "random":
            raise ValueError(f"unknown Atari collection policy {kind!r}: 'random'")
        return UniformPolicy(env_spec(env_cfg.id).action_dim, env_cfg.atari_repeat_max)
    raise ValueError(f"unknown env.name {env_cfg.name!r}")


def policy_rng(seed: int) -> np.random.Generator:
    """The collection policy's rng for the episode with environment seed `seed` (deterministic)."""
    return np.random.default_rng([int(seed) % 2**63, POLICY_STREAM])
