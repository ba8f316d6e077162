"""One spec per environment: action size, how C's raw outputs become actions, the dream's reward rule, frames.

Config (``cfg.action_dim``), the agent, the controller, the vector env, the runner and the dream all read
these facts here, so a new environment is one entry in ``SPECS``. No JAX at import (collection workers).

An environment is named by its id (``EnvConfig.id``): ``carracing``, ``takecover``, or ``atari/<game>`` for each
game of ``ATARI_GAMES`` (``env.name=atari env.atari_game=pong``). Atari actions are discrete: the stored action and
M's input is a one-hot float vector over the game's minimal action set, and C outputs one logit per action
(``squash_action``: the one-hot of the argmax).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np


class EnvSpec(NamedTuple):
    """Facts about one environment that every stage shares."""

    name: str
    action_dim: int  # A: the float action fed to the real env and to M, [A]
    dream_reward: str  # "alive": +1 per step survived (TakeCover); "model": M's reward head (CarRacing)
    frame: str  # preprocessing of the raw observation (wm_jax.envs.frames): "carracing", "doom" or "atari"
    discrete: bool = False  # actions are one-hot vectors over A choices (Atari)


# Atari 100k games: id suffix -> (ALE ROM name, the minimal action set's meanings, in ALE's order). The sizes are
# facts of the ROMs (tests/test_atari.py checks them against ale-py), kept here so no worker imports ALE to know A.
ATARI_GAMES: dict[str, tuple[str, tuple[str, ...]]] = {
    "pong": ("Pong", ("NOOP", "FIRE", "RIGHT", "LEFT", "RIGHTFIRE", "LEFTFIRE")),
    "freeway": ("Freeway", ("NOOP", "UP", "DOWN")),
    "boxing": ("Boxing", ("NOOP", "FIRE", "UP", "RIGHT", "LEFT", "DOWN", "UPRIGHT", "UPLEFT", "DOWNRIGHT",
                          "DOWNLEFT", "UPFIRE", "RIGHTFIRE", "LEFTFIRE", "DOWNFIRE", "UPRIGHTFIRE", "UPLEFTFIRE",
                          "DOWNRIGHTFIRE", "DOWNLEFTFIRE")),
    "breakout": ("Breakout", ("NOOP", "FIRE", "RIGHT", "LEFT")),
}


SPECS: dict[str, EnvSpec] = {
    "carracing": EnvSpec("carracing", action_dim=3, dream_reward="model", frame="carracing"),
    "takecover": EnvSpec("takecover", action_dim=1, dream_reward="alive", frame="doom"),
    **{f"atari/{game}": EnvSpec(f"atari/{game}", action_dim=len(meanings), dream_reward="model", frame="atari",
                                discrete=True) for game, (_, meanings) in ATARI_GAMES.items()},
}


def env_id(name: str, atari_game: str = "") -> str:
    """The id of env.name `name` (``atari/<game>`` for Atari, else the name itself)."""
    return f"atari/{atari_game}" if name == "atari" else name


def env_spec(name: str) -> EnvSpec:
    """The spec of env `name`; ValueError naming the known ones otherwise."""
    try:
        return SPECS[name]
    except KeyError:
        raise ValueError(f"unknown env.name {name!r}; known: {', '.join(sorted(SPECS))}") from None


def squash_action(raw: Any, env_name: str, xp: Any = None) -> Any:
    """C's raw outputs [..., A] -> the env action [..., A] (``xp``: jax.numpy by default, or numpy).

    CarRacing: steer tanh ∈ [-1, 1], gas (tanh + 1) / 2 ∈ [0, 1], brake clip(tanh, 0, 1).
    TakeCover: tanh in thirds -> -1 (left), 0 (stay), +1 (right). Atari: one-hot of the argmax (first on ties).
    """
    if xp is None:
        import jax.numpy as xp
    spec = env_spec(env_name)
    if spec.discrete:
        return (xp.arange(spec.action_dim) == xp.argmax(raw, axis=-1)[..., None]).astype(xp.float32)
    a = xp.tanh(raw)
    if spec.name == "carracing":
        return xp.stack([a[..., 0], (a[..., 1] + 1.0) / 2.0, xp.clip(a[..., 2], 0.0, 1.0)], axis=-1)
    third = 1.0 / 3.0
    return xp.where(a < -third, -1.0, xp.where(a > third, 1.0, 0.0)).astype(xp.float32)


def random_action(env_name: str, rng: np.random.Generator) -> list[float]:
    """One uniform random action (TakeCover -1/0/+1; CarRacing steer U[-1, 1], gas U[0, 1], brake U[0, 1]; Atari
    the one-hot of a uniform choice)."""
    spec = env_spec(env_name)
    if spec.discrete:
        return one_hot(int(rng.integers(spec.action_dim)), spec.action_dim)
    if spec.name == "carracing":
        return [rng.uniform(-1, 1), rng.uniform(0, 1), rng.uniform(0, 1)]
    return [float(rng.integers(-1, 2))]


def one_hot(index: int, n: int) -> list[float]:
    """The one-hot action [n] of choice `index`."""
    return [float(i == index) for i in range(n)]
