"""Fixed, model-free reference policies, defined once for the dream (``wm-jax dream-check``, jax) and the real
environment (``wm-jax evaluate --policy NAME``, numpy).

A policy is ``f(t, xp) -> action`` of the step index alone (``xp`` is ``numpy`` or ``jax.numpy``; ``t`` a
scalar or traced int), so the same definition runs inside a jitted dream scan and in the host loop.

TakeCover (-1 left, 0 stay, +1 right): ``stay``, ``left``, ``right`` and ``sweepN``: left for N steps, then right
for N steps, and so on. Sweeping is the best blind policy we measured: the monsters aim at where the player is,
so a player that keeps moving is missed by most fireballs until it stops against a wall. The best sweep period
sets the bar a controller must clear to show it reacts to what it sees (measured real scores in
``wm_jax.train.dream_check``). CarRacing: ``coast`` (no input) and ``gas`` (straight ahead, full gas).
Atari: one policy per action of the game's minimal set, that action every step (``noop``, ``up``, ``fire``, ...;
Freeway's ``up`` crosses the road blindly, about 21 points a game).
The uniform random policy is not here: it needs a generator (``wm_jax.runner.RandomPolicy``, and
``dream_check`` draws its own).
"""

from __future__ import annotations

import re
from typing import Callable

from wm_jax.envs.spec import ATARI_GAMES, one_hot

Policy = Callable[[object, object], object]

_FIXED = {
    "takecover": {"stay": (0.0,), "left": (-1.0,), "right": (1.0,)},
    "carracing": {"coast": (0.0, 0.0, 0.0), "gas": (0.0, 1.0, 0.0)},
    **{f"atari/{game}": {m.lower(): tuple(one_hot(i, len(meanings))) for i, m in enumerate(meanings)}
       for game, (_, meanings) in ATARI_GAMES.items()},
}
SWEEPS = (50, 100, 120)  # the sweep periods dream-check scores (any sweepN works with ``evaluate``)


def names(env_name: str) -> list[str]:
    """The reference policies dream-check scores for `env_name`."""
    fixed = list(_FIXED[env_name])
    return fixed + ([f"sweep{n}" for n in SWEEPS] if env_name == "takecover" else [])


def get(env_name: str, name: str) -> Policy:
    """The policy `name` for `env_name`; ValueError naming the valid ones otherwise."""
    if env_name not in _FIXED:
        raise ValueError(f"no reference policies for env '{env_name}' (known: {sorted(_FIXED)})")
    if name in _FIXED[env_name]:
        action = _FIXED[env_name][name]
        return lambda t, xp: xp.asarray(action, dtype=xp.float32)
    m = re.fullmatch(r"sweep([1-9][0-9]*)", name)
    if m and env_name == "takecover":
        period = int(m.group(1))
        return lambda t, xp: xp.where((t // period) % 2 == 1, 1.0, -1.0).astype(xp.float32).reshape(1)
    raise ValueError(f"unknown reference policy '{name}' for {env_name}: one of {names(env_name)}"
                     + (" or sweepN (N >= 1)" if env_name == "takecover" else ""))
