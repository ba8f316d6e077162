"""wm-jax: World Models (Ha & Schmidhuber, 2018) as a JAX-accelerated, end-to-end trainer.

The public API, importable from the package (``import wm_jax``); names load lazily, so ``import wm_jax`` itself
imports neither JAX nor the games.

Configs
    ``load_config(path, overrides)`` -> :class:`Config` (frozen, validated; ``ConfigError`` names a bad key)
The pipeline's stages (each ``stage(cfg, ...) -> StageResult``, resumable, writes into ``cfg.run_dir``)
    ``collect``, ``train_vae``, ``evaluate_vae``, ``encode``, ``train_mdnrnn``, ``train_controller``,
    ``sweep_temperature``, ``collect_agent``, ``dream_check``, ``dream_score``, ``evaluate``
A trained run, and the dream as a pure JAX function
    ``load_run(path) -> Run``: ``.config``, ``.vae``, ``.mdnrnn``, ``.controller``, ``.bank``;
    ``Run.rollout(controllers, key, tau=, trials=)``, ``Run.sweep_tau(controller, taus, key, trials=)``,
    ``Run.dream_params(tau)``, ``Run.decode(z)``; ``dream_params``, ``dream_rollout``, ``dream_sweep_tau``
Weights on disk
    ``load_vae``, ``load_mdnrnn``, ``load_controller``, ``save_controller``
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API: dict[str, str] = {
    **dict.fromkeys(("Config", "ConfigError", "load_config"), "wm_jax.config"),
    **dict.fromkeys(("StageResult", "collect", "train_vae", "evaluate_vae", "encode", "train_mdnrnn",
                     "train_controller", "sweep_temperature", "collect_agent", "dream_check", "dream_score",
                     "evaluate"), "wm_jax.stages"),
    **dict.fromkeys(("Run", "load_run", "dream_params", "dream_rollout", "dream_sweep_tau"), "wm_jax.run"),
    **dict.fromkeys(("load_vae", "load_mdnrnn", "load_controller", "save_controller"), "wm_jax.io"),
}
__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module 'wm_jax' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_API})
