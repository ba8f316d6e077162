"""One spec per environment: action size, how C's raw outputs become actions, the dream's reward rule, frames.

Config (``cfg.action_dim``), the agent, the controller, the vector env, the runner and the dream all read
these facts here, so a new environment is one entry in ``SPECS``. No JAX at import (collection workers).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np


class EnvSpec(NamedTuple):
    """Facts about one environment that every stage shares."""

    name: str
    action_dim: int  # A: the float action fed to the real env and to M, [A]
    dream_reward: str  # "alive": +1 per step survived (TakeCover); "model": M's reward head (CarRacing)
    frame: str  # preprocessing of the raw observation (wm_jax.envs.frames): "carracing" or "doom"


SPECS: dict[str, EnvSpec] = {
    "carracing": EnvSpec("carracing", action_dim=3, dream_reward="model", frame="carracing"),
    "takecover": EnvSpec("takecover", action_dim=1, dream_reward="alive", frame="doom"),
}


def env_spec(name: str) -> EnvSpec:
    """The spec of env `name`; ValueError naming the known ones otherwise."""
    try:
        return SPECS[name]
    except KeyError:
        raise ValueError(f"unknown env.name {name!r}; known: {', '.join(sorted(SPECS))}") from None


def squash_action(raw: Any, env_name: str, xp: Any = None) -> Any:
    """C's raw outputs [..., A] -> the env action [..., A] (``xp``: jax.numpy by default, or numpy).

    CarRacing: steer tanh ∈ [-1, 1], gas (tanh + 1) / 2 ∈ [0, 1], brake clip(tanh, 0, 1).
    TakeCover: tanh in thirds -> -1 (left), 0 (stay), +1 (right).
    """
    if xp is None:
        import jax.numpy as xp
    a = xp.tanh(raw)
    if env_spec(env_name).name == "carracing":
        return xp.stack([a[..., 0], (a[..., 1] + 1.0) / 2.0, xp.clip(a[..., 2], 0.0, 1.0)], axis=-1)
    third = 1.0 / 3.0
    return xp.where(a < -third, -1.0, xp.where(a > third, 1.0, 0.0)).astype(xp.float32)


def random_action(env_name: str, rng: np.random.Generator) -> list[float]:
    """One uniform random action (TakeCover -1/0/+1; CarRacing steer U[-1, 1], gas U[0, 1], brake U[0, 1])."""
    if env_spec(env_name).name == "carracing":
        return [rng.uniform(-1, 1), rng.uniform(0, 1), rng.uniform(0, 1)]
    return [float(rng.integers(-1, 2))]
