"""A trained run, loaded for use from Python: its config, V, M, C and the dream they make.

    run = load_run("checkpoints/quick")
    out = run.rollout(run.controller, jax.random.key(0), tau=1.15, trials=64)   # out.returns [64]
    returns = run.sweep_tau(run.controller, jnp.array([0.5, 1.0, 1.15]), jax.random.key(1))  # [3, trials]

Everything here is inference: it reads weights through :mod:`wm_jax.io` and imports no training code. τ and
the weights are data (``DreamParams``), so one compiled program serves every temperature and every run of
the same sizes; ``sweep_tau`` vmaps the dream over τ.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from wm_jax.config import Config, ConfigError, load_saved_config
from wm_jax.envs import dream, dream_batch
from wm_jax.io import CONTROLLER_DIR, VAE_DIR, controller_config, load_bank, load_controller, load_mdnrnn, load_vae

MDNParams = dict  # M's weights (wm_jax.models.mdnrnn.init_params layout)
CtrlParams = dict  # C's arrays {"w": [F, A], "b": [A]} (or a population: a leading axis [P, ...] on each)


def dream_params(cfg: Config, mdn: MDNParams, bank: tuple[np.ndarray, np.ndarray],
                 dyn: list[MDNParams] | None = None, tau: float | None = None) -> dream.DreamParams:
    """The dream of M (`mdn`) started from the initial-state `bank` (mu, logvar [N, Z]) with the config's rules;
    `dyn`: dynamics-ensemble models 1.. (None: M alone); `tau` (default es.temperature)."""
    return dream.make_params(mdn, bank[0], bank[1], tau=cfg.es.temperature if tau is None else tau,
                             max_steps=cfg.es.dream_max_steps, kind=cfg.env.id, done_mode=cfg.es.done_mode,
                             done_pos_weight=cfg.mdnrnn.done_pos_weight, done_horizon=cfg.mdnrnn.done_horizon,
                             done_scale=cfg.es.done_scale, dyn=dyn, head_dropout=cfg.mdnrnn.head_dropout)


def load_dynamics(cfg: Config) -> list[MDNParams] | None:
    """Models 1..E-1 of the dream's dynamics ensemble (es.dream_models = E; model 0 is M) from <run>/mdnrnn_<e>;
    None for M alone."""
    if cfg.es.dream_models == 1:
        return None
    try:
        return [load_mdnrnn(cfg.run_dir, member=e) for e in range(1, cfg.es.dream_models)]
    except FileNotFoundError as e:
        raise ConfigError(f"config key 'es.dream_models={cfg.es.dream_models}': {e}") from None


def load_dream_inputs(cfg: Config) -> tuple[MDNParams, tuple[np.ndarray, np.ndarray]]:
    """M's weights and the initial-state bank (es.initial_states episode starts) of the run in cfg.run_dir."""
    return load_mdnrnn(cfg.run_dir), load_bank(cfg.data_dir, cfg.es.initial_states)


@functools.partial(jax.jit, static_argnames=("trials", "inputs", "env_name", "chunk"))
def dream_rollout(controllers: CtrlParams, key: jax.Array, params: dream.DreamParams, trials: int, *,
                  inputs: str, env_name: str, chunk: int = 50) -> dream_batch.RolloutResult:
    """P controllers (leading axis of every leaf) x `trials` dream episodes each, one compiled program.

    Common random numbers: every controller meets the same trials (initial states, noise). Returns
    ``RolloutResult``: returns, lengths [P, trials]; the loop stops once every episode has ended.
    """
    return dream_batch.rollout(controllers, key, params, trials, inputs=inputs, env_name=env_name, chunk=chunk)


@functools.partial(jax.jit, static_argnames=("trials", "inputs", "env_name", "chunk"))
def dream_sweep_tau(controller: CtrlParams, taus: jax.Array, key: jax.Array, params: dream.DreamParams,
                    trials: int, *, inputs: str, env_name: str, chunk: int = 50) -> jax.Array:
    """Returns [n_tau, trials] of one controller in the dream at each τ of `taus` [n_tau] (vmapped over τ; the
    same trial keys at every τ)."""
    one = jax.tree.map(lambda x: x[None], controller)

    def at(tau: jax.Array) -> jax.Array:
        res = dream_batch.rollout(one, key, params.replace(tau=tau), trials, inputs=inputs, env_name=env_name,
                                  chunk=chunk)
        return res.returns[0]

    return jax.vmap(at)(jnp.asarray(taus, jnp.float32))


@dataclass(frozen=True)
class Run:
    """A run folder's trained models (load with :func:`load_run`)."""

    path: Path
    config: Config
    mdnrnn: MDNParams
    bank: tuple[np.ndarray, np.ndarray]  # (mu, logvar) [N, Z]: the dream's initial states
    controller: CtrlParams | None = None  # C of <run>/controller (None when not trained yet)
    vae: dict | None = None  # V's flax params (None when absent)
    dynamics: list[MDNParams] | None = None  # dynamics-ensemble models 1.. (es.dream_models > 1)

    def dream_params(self, tau: float | None = None) -> dream.DreamParams:
        """M as a pure-JAX environment (``wm_jax.envs.dream.reset/step``) at `tau` (default es.temperature)."""
        return dream_params(self.config, self.mdnrnn, self.bank, self.dynamics, tau)

    def rollout(self, controllers: CtrlParams, key: jax.Array, *, tau: float | None = None,
                trials: int = 16) -> dream_batch.RolloutResult:
        """Dream episodes of one controller (returns, lengths [trials]) or a population (leaves with a leading
        axis P: [P, trials]) at `tau`; one compiled program per sizes, whatever τ."""
        single = _is_single(controllers)
        pop = jax.tree.map(lambda x: jnp.asarray(x)[None], controllers) if single else controllers
        res = dream_rollout(pop, key, self.dream_params(tau), trials, inputs=self.config.controller.inputs,
                            env_name=self.config.env.id, chunk=self.config.es.dream_chunk)
        return res._replace(returns=res.returns[0], lengths=res.lengths[0]) if single else res

    def sweep_tau(self, controller: CtrlParams, taus: Sequence[float] | jax.Array, key: jax.Array, *,
                  trials: int = 16) -> jax.Array:
        """Returns [n_tau, trials] of `controller` in the dream at each τ, vmapped over τ in one program."""
        return dream_sweep_tau(controller, jnp.asarray(taus, jnp.float32), key, self.dream_params(), trials,
                               inputs=self.config.controller.inputs, env_name=self.config.env.id,
                               chunk=self.config.es.dream_chunk)

    def decode(self, z: jax.Array) -> jax.Array:
        """V's decoder: z [N, Z] -> frames float [N, 64, 64, 3] in [0, 1]."""
        from wm_jax.models.vae import decode_jit

        if self.vae is None:
            raise FileNotFoundError(f"{self.path}: no V checkpoint ({self.path / VAE_DIR}); run `wm-jax train-vae`")
        return decode_jit(self.vae, z)


def _is_single(controllers: CtrlParams) -> bool:
    """Whether `controllers` is one controller (C's own ranks) rather than a population (one more axis)."""
    w = controllers["w"] if "w" in controllers else controllers["w1"]
    return jnp.ndim(w) == 2


def default_controller(path: Path, cfg: Config) -> Path:
    """<path>/controller, or the temperature sweep's controller at es.temperature when only that exists."""
    own, swept = path / CONTROLLER_DIR, path / "sweep" / f"tau_{cfg.es.temperature:g}"
    return swept if not (own / "params.npz").is_file() and (swept / "params.npz").is_file() else own


def load_run(path: str | os.PathLike, controller: str | os.PathLike | None = None) -> Run:
    """Load a run folder: its config.json, M, the dream's initial-state bank, and V and C where present.

    `controller`: a controller folder to load (e.g. ``<path>/sweep/tau_1.3``); default ``<path>/controller``, or
    when the run only has a temperature sweep (``make run``), the sweep's controller at es.temperature. Its
    config.json's ``controller.*`` shape options are used."""
    path = Path(path)
    cfg = load_saved_config(path)
    cfg = cfg.replace(root=str(path.parent), name=path.name)  # the folder wherever it was moved
    cpath = Path(controller) if controller is not None else default_controller(path, cfg)
    ctrl = None
    if (cpath / "params.npz").is_file() or cpath.suffix == ".npz":
        cfg = controller_config(cfg, cpath)
        ctrl = load_controller(cpath)
    elif controller is not None:
        raise FileNotFoundError(f"no controller params.npz in {cpath}")
    vae = load_vae(path)[0] if (path / VAE_DIR).is_dir() else None
    return Run(path=path, config=cfg, mdnrnn=load_mdnrnn(path), bank=load_bank(cfg.data_dir, cfg.es.initial_states),
               controller=ctrl, vae=vae, dynamics=load_dynamics(cfg))

