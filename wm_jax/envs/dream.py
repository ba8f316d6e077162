"""The dream: M as a pure-JAX environment (gymnax shape), and the batched rollout ES evaluates.

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
the same z and actions). In ``rollout`` trial i of every candidate runs in model i mod E's dream, so a
controller scores well only where the models agree, not where one model's errors flatter it. Every step runs
all E models on every trial (plain matmuls over the whole batch) and each trial keeps its model's prediction:
E times the cost of the single-model step. ``dyn=None``: M alone (the original dream). ``held_out(params)``
runs every episode in models 1..E-1 instead: a dream the controller did not train in (``es.select_model``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct

from wm_jax.models import controller as ctrl
from wm_jax.models import mdnrnn
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


@struct.dataclass
class DreamState:
    z: jax.Array  # [Z] current latent
    lstm: LSTMState  # c, h: [H] M's state after the inputs so far
    dyn: LSTMState  # c, h: [E-1, H] the other dynamics models' states ([0] for M alone)
    t: jax.Array  # [] int32 steps taken
    done: jax.Array  # [] bool episode has ended


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
                done_horizon: int = 1, done_scale: float = 1.0, dyn: list[dict] | None = None) -> DreamParams:
    """`done_pos_weight`: the weight M's done loss gave episode ends (cfg.mdnrnn.done_pos_weight). Weighting the
    positives by w multiplies the odds M predicts by w, so bernoulli sampling uses sigmoid(logit - log w), the
    calibrated probability; the threshold rule (logit > 0, the original's) is unchanged.
    `done_horizon` (cfg.mdnrnn.done_horizon = k): M's head predicts death within the next k steps, q; a constant
    per-step hazard h gives q ≈ k·h, so bernoulli sampling ends a step with probability q / k.
    `done_scale` (cfg.es.done_scale = s, beyond the paper): bernoulli sampling ends a step with s·q / k instead,
    a harsher (s > 1) or kinder (s < 1) dream; the threshold rule ignores it.
    `dyn`: dynamics models 1..E-1 of the ensemble (model 0 is M), each shaped like `mdn` (None or []: M alone)."""
    if done_pos_weight <= 0:
        raise ValueError(f"done_pos_weight must be > 0, got {done_pos_weight}")
    if done_horizon < 1:
        raise ValueError(f"done_horizon must be >= 1, got {done_horizon}")
    if not done_scale > 0:
        raise ValueError(f"done_scale must be > 0, got {done_scale}")
    if kind not in ("takecover", "carracing"):
        raise ValueError(f"dream kind must be 'takecover' or 'carracing', got {kind!r}")
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
                       jnp.asarray(done_scale / done_horizon, jnp.float32), stacked, kind, done_mode)


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
    """Draw an initial state: a bank entry, z0 = mu + exp(logvar/2)·ε, zero LSTM state."""
    k_idx, k_eps = jax.random.split(key)
    z_dim, hidden, _ = sizes(params)
    i = jax.random.randint(k_idx, (), 0, params.init_mu.shape[0])
    z0 = params.init_mu[i] + jnp.exp(0.5 * params.init_logvar[i]) * jax.random.normal(k_eps, (z_dim,))
    dyn0 = mdnrnn.zero_state(0) if params.dyn is None else mdnrnn.zero_state(hidden, (n_dynamics(params) - 1,))
    state = DreamState(z0, mdnrnn.zero_state(hidden), dyn0, jnp.zeros((), jnp.int32),
                       jnp.zeros((), bool))
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
    raw = mdnrnn.head_raw(params.mdn, lstm.h, z_dim)
    dyn_state = state.dyn
    if params.dyn is not None:
        dyn_state = jax.vmap(mdnrnn.lstm_step, in_axes=(0, 0, None))(params.dyn, state.dyn, x)  # [E-1, H]
        raw_d = jax.vmap(mdnrnn.head_raw, in_axes=(0, 0, None))(params.dyn, dyn_state.h, z_dim)
        raw = jax.tree.map(lambda m, d: jnp.concatenate([m[None], d])[model], raw, raw_d)
    z_next = sample_next_z(raw, params.tau, noise.u_comp, noise.eps)
    reward_pred, done_logit = raw.reward, raw.done_logit
    reward = jnp.ones((), jnp.float32) if params.kind == "takecover" else reward_pred
    if params.done_mode == "threshold":
        p_end = (done_logit > 0).astype(jnp.float32)
    else:
        p_end = jax.nn.sigmoid(done_logit + params.done_bias) * params.done_scale
    ended = noise.u_done < p_end  # u in [0, 1): always below 1, never below 0
    t = state.t + 1
    done = ended | (t >= params.max_steps)
    new = DreamState(z_next, lstm, dyn_state, t, done)
    return DreamObs(z_next, lstm), new, reward, done, {"done_logit": done_logit, "end_prob": p_end}


def step(key: jax.Array, state: DreamState, action: jax.Array,
         params: DreamParams) -> tuple[DreamObs, DreamState, jax.Array, jax.Array, dict]:
    """gymnax-shaped step: obs (z', M's state), new state, reward [], done [] bool, info."""
    return step_with_noise(step_noise(key, state.z.shape[-1]), state, action, params)


# ---------------------------------------------------------------- batched rollout (population × trials)


class RolloutResult(NamedTuple):
    returns: jax.Array  # [P, T] episode returns
    lengths: jax.Array  # [P, T] int32 steps taken before (and including) done
    steps_run: jax.Array  # [] int32 steps the loop executed (a multiple of the chunk, ≤ cap rounded up)
    slot_steps: jax.Array  # [] int32 episode-steps computed, ended episodes' included (P·T·steps_run uncompacted)


def tau_axes(params: DreamParams) -> DreamParams:
    """vmap in_axes for DreamParams batched over τ: ``tau`` [n_tau], and ``done_scale`` when it is a vector too
    (one end-probability factor per τ; the benchmark's spread of episode lengths). Everything else is shared."""
    return params.replace(mdn=None, tau=0, max_steps=None, init_mu=None, init_logvar=None, done_bias=None,
                          done_scale=0 if jnp.ndim(params.done_scale) else None, dyn=None)


def compact_sizes(n: int, levels: int, ratio: float = 0.5, multiple: int = 1) -> list[int]:
    """The batch sizes a compacting rollout steps through: `n`, then up to `levels` smaller ones, each the previous
    times `ratio` rounded down to a multiple of `multiple` (the device count: every size splits evenly); it stops
    early where the next size would be 0 or no smaller."""
    sizes = [n]
    for _ in range(levels):
        nxt = int(sizes[-1] * ratio) // multiple * multiple
        if nxt <= 0 or nxt >= sizes[-1]:
            break
        sizes.append(nxt)
    return sizes


def rollout(ctrl_params: Any, key: jax.Array, params: DreamParams, trials: int, *, inputs: str, env_name: str,
            chunk: int = 50, early_exit: bool = True, constrain=None, compact: int = 0,
            compact_ratio: float = 0.5) -> RolloutResult:
    """Evaluate P controllers (leading axis of every leaf of `ctrl_params`) on `trials` dream episodes each.

    Common random numbers: every candidate sees the same trial keys (same initial states, same noise), so
    the noise is drawn once per trial and broadcast over the population. The loop runs `chunk` steps per
    iteration of a while_loop and stops once every episode has ended (`early_exit`) or at the cap.
    `constrain`, if given, is applied to [P, ...] arrays (e.g. a sharding constraint on the population axis).

    `compact` = k > 0 (needs `early_exit`): the P·T episodes run as a flat batch of slots that shrinks up to k
    times by `compact_ratio` (``compact_sizes``): once at most the next size's count of slots is alive (checked
    every chunk), the live ones are gathered into the smaller batch and the loop goes on there (``rollout_taus``).
    Same episodes, same noise (each slot keeps its trial's key), so the same returns up to float rounding; a batch
    of episodes whose lengths spread out costs about the area under its survival curve instead of P·T times its
    longest episode.
    """
    if compact:
        if not early_exit:
            raise ValueError("compact > 0 needs early_exit=True (the batch shrinks as episodes end)")
        n = jax.tree.leaves(ctrl_params)[0].shape[0] * trials
        one = params.replace(tau=jnp.reshape(params.tau, (1,)))
        if jnp.ndim(params.done_scale):
            raise ValueError("a single-τ rollout takes a scalar done_scale")
        res = rollout_taus(jax.tree.map(lambda x: x[None], ctrl_params), key[None], one, trials, inputs=inputs,
                           env_name=env_name, chunk=chunk, constrain=constrain,
                           sizes=compact_sizes(n, compact, compact_ratio))
        return RolloutResult(res.returns[0], res.lengths[0], res.steps_run[0], res.slot_steps[0])
    constrain = constrain or (lambda x: x)
    z_dim = params.init_mu.shape[-1]
    n_pop = jax.tree.leaves(ctrl_params)[0].shape[0]
    state0, trial_keys, models = _trial_starts(key, params, trials)
    state0 = jax.tree.map(lambda x: constrain(jnp.broadcast_to(x, (n_pop, *x.shape))), state0)

    policy = jax.vmap(lambda p, z, s: ctrl.policy(p, z, s, inputs, env_name), in_axes=(0, 0, 0))
    step_pt = jax.vmap(jax.vmap(step_with_noise, in_axes=(0, 0, 0, None, 0)), in_axes=(None, 0, 0, None, None))

    def one_step(carry, _):
        t, state, ret, length, alive = carry
        noise = jax.vmap(lambda k: step_noise(jax.random.fold_in(k, t), z_dim))(trial_keys)  # [T, ...]
        action = policy(ctrl_params, state.z, state.lstm)  # [P, T, A]
        _, state, reward, done, _ = step_pt(noise, state, action, params, models)
        ret = ret + jnp.where(alive, reward, 0.0)
        length = length + alive.astype(jnp.int32)
        alive = alive & ~done
        state = jax.tree.map(constrain, state)
        return (t + 1, state, constrain(ret), constrain(length), constrain(alive)), None

    def chunk_body(carry):
        carry, _ = jax.lax.scan(one_step, carry, None, length=chunk)
        return carry

    def cond(carry):
        t, _, _, _, alive = carry
        keep = t < params.max_steps
        return keep & jnp.any(alive) if early_exit else keep

    zeros = constrain(jnp.zeros((n_pop, trials), jnp.float32))
    carry = (jnp.zeros((), jnp.int32), state0, zeros, constrain(jnp.zeros((n_pop, trials), jnp.int32)),
             constrain(jnp.ones((n_pop, trials), bool)))
    t, _, ret, length, _ = jax.lax.while_loop(cond, chunk_body, carry)
    return RolloutResult(ret, length, t, t * (n_pop * trials))


def _trial_starts(key: jax.Array, params: DreamParams, trials: int) -> tuple[DreamState, jax.Array, jax.Array]:
    """Per trial: the initial state [T, ...], the step-noise key [T] and the dynamics model it runs in [T]."""
    k_reset, k_steps = jax.random.split(key)
    _, state0 = jax.vmap(reset, in_axes=(0, None))(jax.random.split(k_reset, trials), params)
    return state0, jax.random.split(k_steps, trials), trial_models(params, trials)


def rollout_taus(ctrl_params: Any, keys: jax.Array, params: DreamParams, trials: int, *, inputs: str,
                 env_name: str, sizes: list[int], chunk: int = 50, constrain=None) -> RolloutResult:
    """n_tau rollouts -- for each τ i, P controllers ``ctrl_params[i]`` on `trials` episodes of key ``keys[i]`` in
    the dream at ``params.tau[i]`` -- as one flat batch of n_tau·P·T episode slots that shrinks as episodes end,
    whichever τ they belong to (the τ sweep's cool dreams keep their episodes alive to the cap while the hot ones'
    end early: shrinking each τ's batch separately would wait for the coolest).

    `sizes`: the batch sizes to step through (``compact_sizes``; sizes[0] = n_tau·P·T): the loop moves to the next
    size once at most that many slots are alive, gathering the live ones first. Every slot carries its episode's
    state, its controller, its τ, its trial (whose key draws its noise) and its place in the result, so each τ's
    returns and lengths are those of ``rollout(ctrl_params[i], keys[i], params at tau[i], trials)`` up to float
    rounding. Returns returns, lengths [n_tau, P, T]; steps_run [n_tau] (the shared loop's, equal for every τ);
    slot_steps [n_tau] (slot-steps computed on each τ's episodes). `constrain` applies to [slots, ...] arrays.
    """
    constrain = constrain or (lambda x: x)
    z_dim = params.init_mu.shape[-1]
    n_tau, n_pop = jax.tree.leaves(ctrl_params)[0].shape[:2]
    n = n_tau * n_pop * trials
    if sizes[0] != n or any(b >= a for a, b in zip(sizes, sizes[1:])):
        raise ValueError(f"batch sizes {sizes} must start at {n_tau}·{n_pop}·{trials} = {n} and decrease")
    state0, trial_keys, models = jax.vmap(lambda k: _trial_starts(k, params, trials))(keys)  # [τ, T, ...]
    slot_tau = jnp.repeat(jnp.arange(n_tau), n_pop * trials)  # slot i: τ i // (P·T), candidate (i // T) % P,
    slot_pop = jnp.tile(jnp.repeat(jnp.arange(n_pop), trials), n_tau)  # trial i % T
    slot_trial = jnp.tile(jnp.arange(trials), n_tau * n_pop)
    slots = (jax.tree.map(lambda x: x[slot_tau, slot_trial], state0),
             jax.tree.map(lambda x: x[slot_tau, slot_pop], ctrl_params), slot_tau, slot_trial, jnp.arange(n))
    slots = jax.tree.map(constrain, slots)
    policy = jax.vmap(lambda p, z, s: ctrl.policy(p, z, s, inputs, env_name))

    def per_slot(tau_idx: jax.Array) -> DreamParams:  # the τ-batched fields gathered for each slot
        scale = params.done_scale[tau_idx] if jnp.ndim(params.done_scale) else params.done_scale
        return params.replace(tau=params.tau[tau_idx], done_scale=scale)

    def one_step(carry, _):
        t, (state, cp, tau_idx, trial, idx), ret, length, alive, stop = carry
        noise = jax.vmap(jax.vmap(lambda k: step_noise(jax.random.fold_in(k, t), z_dim)))(trial_keys)  # [τ, T]
        noise = jax.tree.map(lambda x: x[tau_idx, trial], noise)  # [B, ...]
        slot_params = per_slot(tau_idx)
        step_b = jax.vmap(step_with_noise, in_axes=(0, 0, 0, tau_axes(slot_params), 0))
        _, state, reward, done, _ = step_b(noise, state, policy(cp, state.z, state.lstm), slot_params,
                                           models[tau_idx, trial])
        ret = ret + jnp.where(alive, reward, 0.0)
        length = length + alive.astype(jnp.int32)
        alive = alive & ~done
        return (t + 1, (jax.tree.map(constrain, state), cp, tau_idx, trial, idx), constrain(ret), constrain(length),
                constrain(alive), stop), None

    def chunk_body(carry):
        carry, _ = jax.lax.scan(one_step, carry, None, length=chunk)
        return carry

    def cond(carry):
        t, _, _, _, alive, stop = carry
        return (t < params.max_steps) & (jnp.sum(alive) > stop)

    t = jnp.zeros((), jnp.int32)
    ret_all, len_all = jnp.zeros((n,), jnp.float32), jnp.zeros((n,), jnp.int32)
    ret, length, alive = jnp.zeros((n,), jnp.float32), jnp.zeros((n,), jnp.int32), jnp.ones((n,), bool)
    slot_steps = jnp.zeros((n_tau,), jnp.int32)
    for level, size in enumerate(sizes):
        last = level == len(sizes) - 1
        stop = 0 if last else sizes[level + 1]
        t0 = t
        t, slots, ret, length, alive, _ = jax.lax.while_loop(
            cond, chunk_body, (t, slots, ret, length, alive, jnp.int32(stop)))
        slot_steps = slot_steps + (t - t0) * jnp.zeros((n_tau,), jnp.int32).at[slots[2]].add(1)
        idx = slots[4]
        ret_all, len_all = ret_all.at[idx].set(ret), len_all.at[idx].set(length)  # ended slots are final here
        if last:
            break
        keep = jnp.argsort(~alive, stable=True)[:stop]  # every live slot (at most `stop` of them) first
        slots = jax.tree.map(lambda x: constrain(x[keep]), slots)
        ret, length, alive = ret[keep], length[keep], alive[keep]
    shape = (n_tau, n_pop, trials)
    return RolloutResult(ret_all.reshape(shape), len_all.reshape(shape), jnp.broadcast_to(t, (n_tau,)), slot_steps)


def episode(ctrl_params: dict, key: jax.Array, params: DreamParams, steps: int, *, inputs: str,
            env_name: str, trials: int = 1, trial: int = 0) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One recorded dream episode of a single controller: trial `trial` of `rollout(..., trials)` with this key.

    Returns z [steps + 1, Z] (row 0 = z0), rewards [steps], alive [steps] (True for steps that count).
    """
    z_dim = params.init_mu.shape[-1]
    k_reset, k_steps = jax.random.split(key)
    _, state = reset(jax.random.split(k_reset, trials)[trial], params)
    trial_key = jax.random.split(k_steps, trials)[trial]
    model = trial_models(params, trials)[trial]

    def body(carry, t):
        state, alive = carry
        noise = step_noise(jax.random.fold_in(trial_key, t), z_dim)
        action = ctrl.policy(ctrl_params, state.z, state.lstm, inputs, env_name)
        _, state, reward, done, _ = step_with_noise(noise, state, action, params, model)
        return (state, alive & ~done), (state.z, reward, alive)

    (_, _), (zs, rewards, alive) = jax.lax.scan(body, (state, jnp.ones((), bool)), jnp.arange(steps))
    return jnp.concatenate([state.z[None], zs], 0), rewards, alive
