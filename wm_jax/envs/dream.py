"""The dream: M as a pure-JAX environment (gymnax shape); the batched rollouts ES evaluates are in dream_batch.

``reset(key, params) -> (obs, state)`` and ``step(key, state, action, params) -> (obs, state, reward, done,
info)`` are pure functions. Everything that may change between runs is *data* in :class:`DreamParams` (M's
weights, τ, the step cap, the initial-state bank), so one compiled program serves every checkpoint and τ can
be vmapped. ``step`` does not auto-reset: after ``done`` the state keeps evolving and callers mask it.

Rules (as the original): TakeCover ("takecover") earns 1 per step taken and ends when the done logit > 0
(``done_mode="threshold"``) or with probability sigmoid(logit - log done_pos_weight) / done_horizon
(``"bernoulli"``: the calibrated probability of death within M's done horizon, spread over its steps);
CarRacing earns the reward head's prediction. Both end at ``max_steps``. The return of an episode of length T
counts steps 0..T-1 (the step that ends it included), nothing after.

Sampling z' (the paper's τ-scaled mixture): component k ~ softmax(logits / τ) picked by inverse CDF with one
uniform per z dimension on M's component-major raw head (``mdnrnn.head_raw``: no gathers, no log-softmax;
equal in law to ``mdnrnn.sample_z``), then z' = μ_k + σ_k·√τ·ε.

Dynamics ensemble (``DreamParams.dyn``, ``es.dream_models``; ours): C reads the state of M (``mdn``, the model it
also reads in the real env), but z', the reward and the end may come from other models trained the same way on
the same data: model 0 is M, models 1..E-1 are ``dyn`` (stacked [E-1, ...] weights; each runs its own LSTM on
the same z and actions). In ``dream_batch.rollout`` trial i of every candidate runs in model i mod E's dream, so a
controller scores well only where the models agree, not where one model's errors flatter it. Every step runs
all E models on every trial (plain matmuls over the whole batch) and each trial keeps its model's prediction:
E times the cost of the single-model step. ``dyn=None``: M alone (the original dream). ``held_out(params)``
runs every episode in models 1..E-1 instead: a dream the controller did not train in (``es.select_model``).

Dropout worlds (``DreamParams.head_dropout`` = ``mdnrnn.head_dropout`` p > 0; ours, after Wellmer & Kwok 2021): M
was trained with dropout on its head's input h, and each dream episode draws one inverted-dropout mask at reset
(``DreamState.head_mask``) that every model's head applies for the whole episode: each episode runs in a slightly
different world. C reads the unmasked h, as in the real game.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from wm_jax.envs.spec import env_spec
from wm_jax.models import mdnrnn
from wm_jax.models.latent import reparameterize
from wm_jax.models.mdnrnn import LSTMState


@struct.dataclass
class DreamParams:
    mdn: dict  # M's weights (mdnrnn.init_params layout)
    tau: jax.Array  # [] sampling temperature τ
    max_steps: jax.Array  # [] int32 episode cap (cfg.es.dream_max_steps)
    init_mu: jax.Array  # [N, Z] V's mu of real episode starts (the initial-state bank)
    init_logvar: jax.Array  # [N, Z] V's logvar of the same frames
    done_bias: jax.Array  # [] added to the done logit before bernoulli sampling (see make_params)
    done_scale: jax.Array  # [] the bernoulli probability is multiplied by this (es.done_scale / M's done horizon)
    dyn: Any = None  # None, or models 1..E-1 of the dynamics ensemble stacked [E-1, ...] (see the module doc)
    kind: str = struct.field(pytree_node=False, default="takecover")  # reward rule: "takecover" | "carracing"
    done_mode: str = struct.field(pytree_node=False, default="threshold")  # "threshold" | "bernoulli"
    # Trial i runs in model first_model + i mod (E - first_model): 0 = every model in turn; 1 = the others only,
    # C still reading M (``held_out``: a dream the controller was not trained in).
    first_model: int = struct.field(pytree_node=False, default=0)
    head_dropout: float = struct.field(pytree_node=False, default=0.0)  # p of each episode's head mask (0: none)


@struct.dataclass
class DreamState:
    z: jax.Array  # [Z] current latent
    lstm: LSTMState  # c, h: [H] M's state after the inputs so far
    dyn: LSTMState  # c, h: [E-1, H] the other dynamics models' states ([0] for M alone)
    t: jax.Array  # [] int32 steps taken
    done: jax.Array  # [] bool episode has ended
    head_mask: jax.Array  # [H] the episode's dropout mask on the head's input ([0] without head_dropout)


class DreamObs(NamedTuple):
    z: jax.Array  # [Z]
    lstm: LSTMState  # c, h: [H]


class StepNoise(NamedTuple):
    """The randomness of one step, drawn from its key (shared by all candidates: common random numbers)."""

    u_comp: jax.Array  # [Z] uniform, picks the mixture component
    eps: jax.Array  # [Z] standard normal
    u_done: jax.Array  # [] uniform, for done_mode="bernoulli"


def make_params(mdn: dict, init_mu: jax.Array, init_logvar: jax.Array, tau: float = 1.0, max_steps: int = 2100,
                kind: str = "takecover", done_mode: str = "threshold", done_pos_weight: float = 1.0,
                done_horizon: int = 1, done_scale: float = 1.0, dyn: list[dict] | None = None,
                head_dropout: float = 0.0) -> DreamParams:
    """`done_pos_weight`: the weight M's done loss gave episode ends (cfg.mdnrnn.done_pos_weight). Weighting the
    positives by w multiplies the odds M predicts by w, so bernoulli sampling uses sigmoid(logit - log w), the
    calibrated probability; the threshold rule (logit > 0, the original's) is unchanged.
    `done_horizon` (cfg.mdnrnn.done_horizon = k): M's head predicts death within the next k steps, q; a constant
    per-step hazard h gives q ≈ k·h, so bernoulli sampling ends a step with probability q / k.
    `done_scale` (cfg.es.done_scale = s, beyond the paper): bernoulli sampling ends a step with s·q / k instead,
    a harsher (s > 1) or kinder (s < 1) dream; the threshold rule ignores it.
    `dyn`: dynamics models 1..E-1 of the ensemble (model 0 is M), each shaped like `mdn` (None or []: M alone).
    `head_dropout` (cfg.mdnrnn.head_dropout): each episode's heads read h through its own dropout mask (0: none)."""
    if done_pos_weight <= 0:
        raise ValueError(f"done_pos_weight must be > 0, got {done_pos_weight}")
    if done_horizon < 1:
        raise ValueError(f"done_horizon must be >= 1, got {done_horizon}")
    if not done_scale > 0:
        raise ValueError(f"done_scale must be > 0, got {done_scale}")
    if not 0.0 <= head_dropout < 1.0:
        raise ValueError(f"head_dropout must be in [0, 1), got {head_dropout}")
    env_spec(kind)  # ValueError naming the known environments
    if done_mode not in ("threshold", "bernoulli"):
        raise ValueError(f"done_mode must be 'threshold' or 'bernoulli', got {done_mode!r}")
    stacked = None
    if dyn:
        shapes = jax.tree.map(jnp.shape, mdn)
        for e, member in enumerate(dyn):
            if jax.tree.map(jnp.shape, member) != shapes:
                got = jax.tree.map(jnp.shape, member)
                raise ValueError(f"dynamics model {e + 1} has weights {got}, M has {shapes}")
        stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *dyn)
    init_mu, init_logvar = jnp.asarray(init_mu, jnp.float32), jnp.asarray(init_logvar, jnp.float32)
    if init_mu.ndim != 2 or init_mu.shape != init_logvar.shape:
        raise ValueError(f"initial-state bank must be mu, logvar [N, Z] of equal shape, got {init_mu.shape}, "
                         f"{init_logvar.shape}")
    return DreamParams(mdn, jnp.asarray(tau, jnp.float32), jnp.asarray(max_steps, jnp.int32), init_mu, init_logvar,
                       jnp.asarray(-np.log(done_pos_weight), jnp.float32),
                       jnp.asarray(done_scale / done_horizon, jnp.float32), stacked, kind, done_mode,
                       head_dropout=float(head_dropout))


def sizes(params: DreamParams) -> tuple[int, int, int]:
    """(z_dim, lstm hidden, mixtures) read off the bank and M's weights."""
    z_dim = params.init_mu.shape[-1]
    hidden, _ = mdnrnn.sizes(params.mdn)
    mixtures = (params.mdn["head"]["w"].shape[-1] - 2) // (3 * z_dim)
    return z_dim, hidden, mixtures


def n_dynamics(params: DreamParams) -> int:
    """E, the models of the dynamics ensemble (1: M alone)."""
    return 1 if params.dyn is None else 1 + params.dyn["head"]["w"].shape[0]


def trial_models(params: DreamParams, trials: int) -> jax.Array:
    """The dynamics model each of `trials` trials runs in [trials] (see DreamParams.first_model)."""
    return params.first_model + jnp.arange(trials) % (n_dynamics(params) - params.first_model)


def held_out(params: DreamParams) -> DreamParams:
    """`params` whose episodes all run in models 1..E-1 (``dyn``) while C reads M's state, as in the real game: a
    controller that exploits M's own errors scores there about what it scores in the game (ours)."""
    if params.dyn is None:
        raise ValueError("a held-out dream needs another dynamics model beside M (DreamParams.dyn is None)")
    return params.replace(first_model=1)


def _restart_flag(params: DreamParams, action_dim: int) -> bool:
    z_dim, _, _ = sizes(params)
    _, n_in = mdnrnn.sizes(params.mdn)
    if n_in not in (z_dim + action_dim, z_dim + action_dim + 1):
        raise ValueError(f"M's input size {n_in} fits neither z {z_dim} + action {action_dim} nor + restart flag")
    return n_in == z_dim + action_dim + 1


def reset(key: jax.Array, params: DreamParams) -> tuple[DreamObs, DreamState]:
    """Draw an initial state: a bank entry, z0 = mu + exp(logvar/2)·ε, zero LSTM state (and the episode's head
    mask from ``fold_in(key, 1)`` when ``params.head_dropout`` > 0)."""
    k_idx, k_eps = jax.random.split(key)
    z_dim, hidden, _ = sizes(params)
    i = jax.random.randint(k_idx, (), 0, params.init_mu.shape[0])
    z0 = reparameterize(params.init_mu[i], params.init_logvar[i], jax.random.normal(k_eps, (z_dim,)))
    dyn0 = mdnrnn.zero_state(0) if params.dyn is None else mdnrnn.zero_state(hidden, (n_dynamics(params) - 1,))
    mask = jnp.zeros((0,))
    if params.head_dropout > 0:
        mask = mdnrnn.dropout_mask(jax.random.fold_in(key, 1), params.head_dropout, (hidden,))
    state = DreamState(z0, mdnrnn.zero_state(hidden), dyn0, jnp.zeros((), jnp.int32), jnp.zeros((), bool), mask)
    return DreamObs(z0, state.lstm), state


def step_noise(key: jax.Array, z_dim: int) -> StepNoise:
    k1, k2, k3 = jax.random.split(key, 3)
    return StepNoise(jax.random.uniform(k1, (z_dim,)), jax.random.normal(k2, (z_dim,)), jax.random.uniform(k3, ()))


def sample_next_z(raw: mdnrnn.MDNRaw, tau: jax.Array, u_comp: jax.Array, eps: jax.Array) -> jax.Array:
    """z' [..., Z] from M's raw head (component-major [..., K, Z] blocks) with τ, by inverse CDF on u_comp [..., Z].

    Component k ~ softmax(logits / τ) over K (unnormalised: compare u·Σ with the running sum; the reductions
    over K are K-1 elementwise ops on Z-vectors), then z' = μ_k + σ_k·√τ·ε with only σ_k exponentiated.
    Same law as ``mdnrnn.sample_z``.
    """
    k = raw.logits.shape[-2]
    e = jnp.exp((raw.logits - jnp.max(raw.logits, axis=-2, keepdims=True)) / tau)  # [..., K, Z]
    cdf = jnp.cumsum(e, axis=-2)
    idx = jnp.minimum(jnp.sum(cdf < (u_comp * cdf[..., -1, :])[..., None, :], axis=-2), k - 1)  # [..., Z]
    onehot = (jnp.arange(k)[:, None] == idx[..., None, :]).astype(raw.mu.dtype)
    mu = jnp.sum(onehot * raw.mu, axis=-2)
    sigma = jnp.exp(jnp.sum(onehot * raw.log_sigma, axis=-2))
    return mu + sigma * jnp.sqrt(tau) * eps


def step_with_noise(noise: StepNoise, state: DreamState, action: jax.Array, params: DreamParams,
                    model: jax.Array | int = 0) -> tuple[DreamObs, DreamState, jax.Array, jax.Array, dict]:
    """One dream step given its noise; action [A] is the env action (CarRacing [3]; TakeCover [1] in {-1,0,1}).
    `model`: which model of the dynamics ensemble predicts z', the reward and the end (0: M)."""
    z_dim = state.z.shape[-1]
    parts = [state.z, action.astype(jnp.float32)]
    if _restart_flag(params, action.shape[-1]):
        parts.append((state.t == 0).astype(jnp.float32)[None])
    x = jnp.concatenate(parts, -1)
    lstm = mdnrnn.lstm_step(params.mdn, state.lstm, x)
    seen = (lambda h: h * state.head_mask) if params.head_dropout > 0 else (lambda h: h)  # noqa: E731
    raw = mdnrnn.head_raw(params.mdn, seen(lstm.h), z_dim)
    dyn_state = state.dyn
    if params.dyn is not None:
        dyn_state = jax.vmap(mdnrnn.lstm_step, in_axes=(0, 0, None))(params.dyn, state.dyn, x)  # [E-1, H]
        raw_d = jax.vmap(mdnrnn.head_raw, in_axes=(0, 0, None))(params.dyn, seen(dyn_state.h), z_dim)
        raw = jax.tree.map(lambda m, d: jnp.concatenate([m[None], d])[model], raw, raw_d)
    z_next = sample_next_z(raw, params.tau, noise.u_comp, noise.eps)
    reward_pred, done_logit = raw.reward, raw.done_logit
    reward = jnp.ones((), jnp.float32) if env_spec(params.kind).dream_reward == "alive" else reward_pred
    if params.done_mode == "threshold":
        p_end = (done_logit > 0).astype(jnp.float32)
    else:
        p_end = jax.nn.sigmoid(done_logit + params.done_bias) * params.done_scale
    ended = noise.u_done < p_end  # u in [0, 1): always below 1, never below 0
    t = state.t + 1
    done = ended | (t >= params.max_steps)
    new = DreamState(z_next, lstm, dyn_state, t, done, state.head_mask)
    return DreamObs(z_next, lstm), new, reward, done, {"done_logit": done_logit, "end_prob": p_end}


def step(key: jax.Array, state: DreamState, action: jax.Array,
         params: DreamParams) -> tuple[DreamObs, DreamState, jax.Array, jax.Array, dict]:
    """gymnax-shaped step: obs (z', M's state), new state, reward [], done [] bool, info."""
    return step_with_noise(step_noise(key, state.z.shape[-1]), state, action, params)
