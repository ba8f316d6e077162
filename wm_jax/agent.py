"""The batched World Models agent: frames → V (z) → C action → M step, one jitted call for all envs.

Order per step (as the original): z_t = V(frame_t) (a posterior sample mu + sigma * eps, as the original's
real-env wrapper and as M saw in training, or the mean with ``eval.z_sample=false``); a_t = C([z_t, h_t]);
h_{t+1} = M(h_t, [z_t, a_t (, restart_t)]). Every slot of a :class:`~wm_jax.envs.vector.VectorEnv` is a
row of the batch; a slot whose episode just began has ``first = True``, which zeroes its LSTM state
before use (and is M's restart flag when the model was trained with one). Each row reads the controller
of its candidate (``index``), so the same compiled step serves evaluation (one controller) and the
real-environment ES (a population of controllers).
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from wm_jax.envs.spec import env_spec
from wm_jax.models import controller as ctrl
from wm_jax.models import mdnrnn
from wm_jax.models.latent import reparameterize
from wm_jax.models.mdnrnn import LSTMState


class AgentSpec(NamedTuple):
    """Static sizes and switches (hashable: part of the compiled function)."""

    env_name: str  # "carracing" or "takecover"
    z_dim: int  # Z, V's latent size
    hidden: int  # H, M's LSTM size
    inputs: str  # what C reads: "z", "zh", "zch"
    restart_flag: bool  # M takes a restart flag (1 at an episode's first step) as an extra input
    z_sample: bool = False  # z = mu + sigma * noise (cfg.eval.z_sample); False: z = mu, noise ignored

    @property
    def action_dim(self) -> int:
        return env_spec(self.env_name).action_dim


class AgentParams(NamedTuple):
    """Weights of the three models. `controllers` has a leading candidate axis P on every leaf."""

    vae: Any  # V's params (wm_jax.models.vae)
    mdnrnn: dict  # M's weights (wm_jax.models.mdnrnn)
    controllers: dict  # C's params stacked: leaves [P, ...]


def spec_from_config(cfg) -> AgentSpec:
    return AgentSpec(cfg.env.id, cfg.vae.z_dim, cfg.mdnrnn.hidden, cfg.controller.inputs, cfg.mdnrnn.restart_flag,
                     cfg.eval.z_sample)


def policy_step(spec: AgentSpec, params: AgentParams, state: LSTMState, frames: jax.Array, first: jax.Array,
                index: jax.Array, noise: jax.Array | None = None) -> tuple[jax.Array, LSTMState]:
    """One step of N agents.

    Args:
      state: LSTMState with c, h [N, H] (h_t before this step; ignored where `first`).
      frames: uint8 [N, 64, 64, 3], the observations frame_t.
      first: bool [N], True at an episode's first step (state is zeroed; M's restart flag).
      index: int32 [N], which controller (row of `params.controllers`) drives each slot.
      noise: float32 [N, Z] standard normal, needed when `spec.z_sample` (z = mu + exp(logvar / 2) * noise).
    Returns:
      actions float32 [N, A] (env format: CarRacing steer/gas/brake, TakeCover -1/0/+1) and h_{t+1} state.
    """
    from wm_jax.models.vae import encode

    keep = (1.0 - first.astype(jnp.float32))[:, None]
    state = LSTMState(state.c * keep, state.h * keep)
    mu, logvar = encode(params.vae, frames)
    z = mu.astype(jnp.float32)
    if spec.z_sample:
        if noise is None:
            raise ValueError("AgentSpec.z_sample needs noise [N, Z]")
        z = reparameterize(z, logvar.astype(jnp.float32), noise)
    cparams = jax.tree.map(lambda x: x[index], params.controllers)  # [N, ...]
    actions = jax.vmap(lambda p, zz, s: ctrl.policy(p, zz, s, spec.inputs, spec.env_name))(cparams, z, state)
    parts = [z, actions]
    if spec.restart_flag:
        parts.append(first.astype(jnp.float32)[:, None])
    new_state = mdnrnn.lstm_step(params.mdnrnn, state, jnp.concatenate(parts, axis=-1))
    return actions, new_state


# `spec` (a NamedTuple) is a static argument: jit's own cache holds one program per (spec, shapes).
policy_step_jit = jax.jit(policy_step, static_argnums=0)


def make_policy(spec: AgentSpec):
    """:func:`policy_step` jitted, with `spec` bound: every caller shares one compilation per spec and shape."""
    return functools.partial(policy_step_jit, spec)


# ---------------------------------------------------------------- parameters


def init_vae_params(seed: int, z_dim: int) -> Any:
    """V's parameter tree at its real size with random weights N(0, 1/fan_in), biases 0 (numpy, from `seed`).

    Host-side on purpose: XLA takes 10-50 s on this CPU to compile flax's initialisers for the whole VAE,
    while only the shapes are needed (``jax.eval_shape``). For smoke runs, tests and benchmarks only.
    """
    from wm_jax.models import vae

    shapes = jax.eval_shape(functools.partial(vae.init_params, z_dim=z_dim), jax.random.key(0))
    rng = np.random.default_rng([int(seed), 0xAE])

    def leaf(s: jax.ShapeDtypeStruct) -> np.ndarray:
        if len(s.shape) < 2:
            return np.zeros(s.shape, np.float32)
        return (rng.standard_normal(s.shape) / np.sqrt(np.prod(s.shape[:-1]))).astype(np.float32)

    return jax.tree.map(leaf, shapes)


def init_agent_params(seed: int, spec: AgentSpec, ctrl_hidden: int = 0, bias: bool = True,
                      ctrl_scale: float = 1.0, population: int = 1) -> AgentParams:
    """Random V, M and C at the sizes of `spec` (benchmarks, tests, untrained ablations), all from `seed`."""
    m, c = _init_m_c(jax.random.key(seed), spec, ctrl_hidden, bias, ctrl_scale, population)
    return AgentParams(init_vae_params(seed, spec.z_dim), m, c)


@functools.partial(jax.jit, static_argnums=(1, 2, 3, 4, 5))
def _init_m_c(key: jax.Array, spec: AgentSpec, ctrl_hidden: int, bias: bool, ctrl_scale: float,
              population: int) -> tuple[dict, dict]:
    km, kc = jax.random.split(key)
    m = mdnrnn.init_params(km, spec.z_dim, spec.action_dim, spec.hidden, restart_flag=spec.restart_flag)
    feat = ctrl.feature_dim(spec.inputs, spec.z_dim, spec.hidden)
    cs = [ctrl.init_controller(k, feat, ctrl.output_dim(spec.env_name), ctrl_hidden, bias, ctrl_scale)
          for k in jax.random.split(kc, population)]
    return m, stack_controllers(cs)


def stack_controllers(params_list: list[dict]) -> dict:
    """[P] controller pytrees → one pytree with leaves [P, ...]."""
    return jax.tree.map(lambda *xs: jnp.stack([jnp.asarray(x, jnp.float32) for x in xs]), *params_list)


def load_models(cfg, run_dir: str | Path) -> tuple[Any, dict]:
    """V and M for the agent: trained weights from `run_dir`, or random initial weights where the config says
    so (``eval.vae_untrained``, ``eval.mdnrnn_untrained``: the "M left untrained" ablation). Random weights
    come from ``cfg.seed``, so reruns are identical."""
    spec = spec_from_config(cfg)
    km = jax.random.fold_in(jax.random.key(cfg.seed), 1)
    run_dir = Path(run_dir)
    if cfg.eval.vae_untrained:
        v = init_vae_params(cfg.seed, spec.z_dim)
    else:
        from wm_jax.io import load_vae

        v, z_dim = load_vae(run_dir)
        if z_dim != spec.z_dim:
            raise ValueError(f"{run_dir}/vae has z_dim {z_dim}, config vae.z_dim is {spec.z_dim}")
    if cfg.eval.mdnrnn_untrained:
        m = jax.jit(mdnrnn.init_params, static_argnums=(1, 2, 3, 4, 5))(km, spec.z_dim, spec.action_dim, spec.hidden,
                                                                      cfg.mdnrnn.mixtures, spec.restart_flag)
    else:
        from wm_jax.io import load_mdnrnn

        m = load_mdnrnn(run_dir)
        hidden, n_in = mdnrnn.sizes(m)
        want = mdnrnn.input_dim(spec.z_dim, spec.action_dim, spec.restart_flag)
        if (hidden, n_in) != (spec.hidden, want):
            raise ValueError(f"{run_dir}/mdnrnn has hidden {hidden}, input {n_in}; the config expects "
                             f"hidden {spec.hidden}, input {want} (mdnrnn.hidden / vae.z_dim / mdnrnn.restart_flag)")
    return v, m


# ---------------------------------------------------------------- the host-side agent (wm_jax.runner plays it)


class AgentPolicy:
    """Stateful host wrapper: keeps each slot group's LSTM state between calls to the jitted step.

    `params.controllers` holds P candidates; `act` is told which candidate drives each slot. With
    ``spec.z_sample`` each episode draws its z noise from a generator seeded by the episode's seed, so an
    episode's numbers do not depend on the slot, worker or group that plays it.
    """

    def __init__(self, spec: AgentSpec, params: AgentParams, seed_offset: int = 0x5A):
        self.spec, self.params = spec, params
        self.step = make_policy(spec)
        self.states: dict[int, LSTMState] = {}
        self.rngs: dict[int, np.random.Generator] = {}
        self.offset = seed_offset
        self.calls = 0

    def begin(self, slot: int, seed: int) -> None:
        """An episode starts in `slot` (the `first` flag resets its LSTM state); its z noise is seeded here."""
        self.rngs[slot] = np.random.default_rng([int(seed), self.offset])

    def _noise(self, slots: np.ndarray) -> np.ndarray | None:
        if not self.spec.z_sample:
            return None
        z = self.spec.z_dim
        return np.stack([self.rngs[s].standard_normal(z, np.float32) if s in self.rngs else np.zeros(z, np.float32)
                         for s in (int(s) for s in slots)])

    def act(self, group: int, frames: np.ndarray, first: np.ndarray, index: np.ndarray,
            slots: np.ndarray) -> np.ndarray:
        """frames uint8 [n, 64, 64, 3], first bool [n], index int [n] for one group's slots -> actions [n, A]."""
        if group not in self.states:
            self.states[group] = mdnrnn.zero_state(self.spec.hidden, (len(frames),))
        actions, self.states[group] = self.step(self.params, self.states[group], frames, first,
                                                np.asarray(index, np.int32), self._noise(slots))
        self.calls += 1
        return np.asarray(actions)
