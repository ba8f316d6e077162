"""Batched dream rollouts: P controllers × T trials (× τ) of the dream env in one compiled loop, as the ES
evaluates them (``wm_jax.envs.dream`` is the env itself: ``reset``, ``step``, ``DreamParams``).

* ``rollout``: one τ; a while_loop over scanned chunks that exits once every episode has ended, optionally on a
  batch that shrinks as episodes end (``compact``).
* ``rollout_taus``: n_tau temperatures in one flat batch of episode slots that shrinks as they end, whichever τ
  they belong to (the τ sweep with es.dream_compact); ``compact_sizes`` gives its batch sizes.
* ``episode``: one recorded episode of one controller (GIFs, tests).
* ``tau_axes``: vmap in_axes of DreamParams batched over τ.
"""

from __future__ import annotations

import functools
import itertools
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from wm_jax.envs.dream import DreamParams, DreamState, reset, step_noise, step_with_noise, trial_models
from wm_jax.models import controller as ctrl


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
            compact_ratio: float = 0.5, compact_multiple: int = 1, unroll: int = 1) -> RolloutResult:
    """Evaluate P controllers (leading axis of every leaf of `ctrl_params`) on `trials` dream episodes each.

    Common random numbers: every candidate sees the same trial keys (same initial states, same noise), so
    the noise is drawn once per trial and broadcast over the population. The loop runs `chunk` steps per
    iteration of a while_loop and stops once every episode has ended (`early_exit`) or at the cap.
    `constrain`, if given, is applied to [P, ...] arrays (e.g. a sharding constraint on the population axis).

    `compact` = k > 0 (needs `early_exit`): the P·T episodes run as a flat batch of slots that shrinks up to k
    times by `compact_ratio` (``compact_sizes``): once at most the next size's count of slots is alive (checked
    every chunk), the live ones are gathered into the smaller batch and the loop goes on there (``rollout_taus``;
    every size a multiple of `compact_multiple`, e.g. the device count). `unroll`: steps per iteration of the
    compiled scan over a chunk (lax.scan's unroll; es.unroll): the same steps, fewer loop iterations.
    Same episodes, same noise (each slot keeps its trial's key), so the same returns up to float rounding; a batch
    of episodes whose lengths spread out costs about the area under its survival curve instead of P·T times its
    longest episode.
    """
    if not compact:
        return _rollout_full(ctrl_params, key, params, trials, inputs=inputs, env_name=env_name, chunk=chunk,
                             early_exit=early_exit, constrain=constrain or (lambda x: x), unroll=unroll)
    if not early_exit:
        raise ValueError("compact > 0 needs early_exit=True (the batch shrinks as episodes end)")
    if jnp.ndim(params.done_scale):
        raise ValueError("a single-τ rollout takes a scalar done_scale")
    n = jax.tree.leaves(ctrl_params)[0].shape[0] * trials
    one = params.replace(tau=jnp.reshape(params.tau, (1,)))
    res = rollout_taus(jax.tree.map(lambda x: x[None], ctrl_params), key[None], one, trials, inputs=inputs,
                       env_name=env_name, chunk=chunk, constrain=constrain,
                       sizes=compact_sizes(n, compact, compact_ratio, compact_multiple), unroll=unroll)
    return RolloutResult(*(x[0] for x in res))


class Tally(NamedTuple):
    """Running totals of a batch of episodes (leaves [P, T] in ``rollout``, [slots] in ``rollout_taus``)."""
    ret: jax.Array  # float32 return so far
    length: jax.Array  # int32 steps taken before (and including) done
    alive: jax.Array  # bool: not ended yet

    @classmethod
    def zeros(cls, shape: tuple[int, ...]) -> Tally:
        return cls(jnp.zeros(shape, jnp.float32), jnp.zeros(shape, jnp.int32), jnp.ones(shape, bool))

    def add(self, reward: jax.Array, done: jax.Array, constrain) -> Tally:
        """One step: living episodes gain `reward` and a step; those `done` stop."""
        ret = self.ret + jnp.where(self.alive, reward, 0.0)
        length = self.length + self.alive.astype(jnp.int32)
        alive = self.alive & ~done
        return Tally(constrain(ret), constrain(length), constrain(alive))

    def take(self, rows: jax.Array) -> Tally:
        """The episodes at `rows` (a gather: the batch shrinks to len(rows))."""
        return Tally(self.ret[rows], self.length[rows], self.alive[rows])


class Loop(NamedTuple):
    """``rollout``'s while_loop carry."""
    t: jax.Array  # [] int32 steps run
    state: DreamState  # leaves [P, T, ...]
    tally: Tally  # [P, T]


def _chunked(cond, one_step, chunk: int, carry, unroll: int = 1):
    """while cond(carry): `chunk` steps of `one_step` (scanned, `unroll` steps per iteration): the exit test runs
    once per chunk."""
    return jax.lax.while_loop(cond, lambda c: jax.lax.scan(one_step, c, None, length=chunk, unroll=unroll)[0],
                              carry)


def _rollout_full(ctrl_params: Any, key: jax.Array, params: DreamParams, trials: int, *, inputs: str,
                  env_name: str, chunk: int, early_exit: bool, constrain, unroll: int = 1) -> RolloutResult:
    """``rollout`` on the whole [P, T] batch (no compaction)."""
    z_dim = params.init_mu.shape[-1]
    n_pop = jax.tree.leaves(ctrl_params)[0].shape[0]
    state0, trial_keys, models = _trial_starts(key, params, trials)
    state0 = jax.tree.map(lambda x: constrain(jnp.broadcast_to(x, (n_pop, *x.shape))), state0)
    policy = jax.vmap(lambda p, z, s: ctrl.policy(p, z, s, inputs, env_name), in_axes=(0, 0, 0))
    step_pt = jax.vmap(jax.vmap(step_with_noise, in_axes=(0, 0, 0, None, 0)), in_axes=(None, 0, 0, None, None))

    def one_step(c: Loop, _):
        noise = jax.vmap(lambda k: step_noise(jax.random.fold_in(k, c.t), z_dim))(trial_keys)  # [T, ...]
        action = policy(ctrl_params, c.state.z, c.state.lstm)  # [P, T, A]
        _, state, reward, done, _ = step_pt(noise, c.state, action, params, models)
        tally = c.tally.add(reward, done, constrain)
        return Loop(c.t + 1, jax.tree.map(constrain, state), tally), None

    def cond(c: Loop):
        keep = c.t < params.max_steps
        return keep & jnp.any(c.tally.alive) if early_exit else keep

    tally0 = Tally(*(constrain(x) for x in Tally.zeros((n_pop, trials))))
    end = _chunked(cond, one_step, chunk, Loop(jnp.zeros((), jnp.int32), state0, tally0), unroll)
    return RolloutResult(end.tally.ret, end.tally.length, end.t, end.t * (n_pop * trials))


def _trial_starts(key: jax.Array, params: DreamParams, trials: int) -> tuple[DreamState, jax.Array, jax.Array]:
    """Per trial: the initial state [T, ...], the step-noise key [T] and the dynamics model it runs in [T]."""
    k_reset, k_steps = jax.random.split(key)
    _, state0 = jax.vmap(reset, in_axes=(0, None))(jax.random.split(k_reset, trials), params)
    return state0, jax.random.split(k_steps, trials), trial_models(params, trials)


class Slots(NamedTuple):
    """``rollout_taus``'s batch of episode slots: what each slot carries (leaves [B, ...], B the current size)."""
    state: DreamState  # the episode's dream state
    ctrl: Any  # its controller's params
    tau: jax.Array  # [B] int32 which τ (row of params.tau)
    trial: jax.Array  # [B] int32 which trial (its key draws the noise)
    index: jax.Array  # [B] int32 its place in the flat [τ·P·T] result


class TauLoop(NamedTuple):
    """``rollout_taus``'s while_loop carry at one batch size."""
    t: jax.Array  # [] int32 steps run (shared by every slot)
    slots: Slots
    tally: Tally  # [B]
    stop: jax.Array  # [] int32 leave this size once at most `stop` slots are alive


def rollout_taus(ctrl_params: Any, keys: jax.Array, params: DreamParams, trials: int, *, inputs: str,
                 env_name: str, sizes: list[int], chunk: int = 50, constrain=None, unroll: int = 1) -> RolloutResult:
    """n_tau rollouts -- for each τ i, P controllers ``ctrl_params[i]`` on `trials` episodes of key ``keys[i]`` in
    the dream at ``params.tau[i]`` -- as one flat batch of n_tau·P·T episode slots that shrinks as episodes end,
    whichever τ they belong to (the τ sweep's cool dreams keep their episodes alive to the cap while the hot ones'
    end early: shrinking each τ's batch separately would wait for the coolest).

    `sizes`: the batch sizes to step through (``compact_sizes``; sizes[0] = n_tau·P·T): the loop moves to the next
    size once at most that many slots are alive, gathering the live ones first. Every slot carries its episode's
    state, its controller, its τ, its trial (whose key draws its noise) and its place in the result, so each τ's
    returns and lengths are those of ``rollout(ctrl_params[i], keys[i], params at tau[i], trials)`` up to float
    rounding. Returns returns, lengths [n_tau, P, T]; steps_run [n_tau] (the shared loop's, equal for every τ);
    slot_steps [n_tau] (slot-steps computed on each τ's episodes). `constrain` applies to [slots, ...] arrays;
    `unroll` as in ``rollout``.
    """
    constrain = constrain or (lambda x: x)
    n_tau, n_pop = jax.tree.leaves(ctrl_params)[0].shape[:2]
    n = n_tau * n_pop * trials
    if sizes[0] != n or any(b >= a for a, b in itertools.pairwise(sizes)):
        raise ValueError(f"batch sizes {sizes} must start at {n_tau}·{n_pop}·{trials} = {n} and decrease")
    state0, trial_keys, models = jax.vmap(lambda k: _trial_starts(k, params, trials))(keys)  # [τ, T, ...]
    one_step = _tau_step(params, trial_keys, models, inputs, env_name, constrain)
    slots = jax.tree.map(constrain, _first_slots(state0, ctrl_params, trials))
    t, tally = jnp.zeros((), jnp.int32), Tally.zeros((n,))
    ret_all, len_all = jnp.zeros((n,), jnp.float32), jnp.zeros((n,), jnp.int32)
    slot_steps = jnp.zeros((n_tau,), jnp.int32)
    for level, size in enumerate(sizes):
        last = level == len(sizes) - 1
        stop = 0 if last else sizes[level + 1]
        end = _chunked(lambda c: (c.t < params.max_steps) & (jnp.sum(c.tally.alive) > c.stop), one_step, chunk,
                       TauLoop(t, slots, tally, jnp.int32(stop)), unroll)
        slot_steps = slot_steps + (end.t - t) * jnp.zeros((n_tau,), jnp.int32).at[end.slots.tau].add(1)
        t, slots, tally = end.t, end.slots, end.tally
        # ended slots are final here
        ret_all, len_all = ret_all.at[slots.index].set(tally.ret), len_all.at[slots.index].set(tally.length)
        if last:
            break
        keep = jnp.argsort(~tally.alive, stable=True)[:stop]  # every live slot (at most `stop` of them) first
        slots, tally = jax.tree.map(lambda x, keep=keep: constrain(x[keep]), slots), tally.take(keep)
    shape = (n_tau, n_pop, trials)
    return RolloutResult(ret_all.reshape(shape), len_all.reshape(shape), jnp.broadcast_to(t, (n_tau,)), slot_steps)


def _first_slots(state0: DreamState, ctrl_params: Any, trials: int) -> Slots:
    """The full batch: slot i is τ i // (P·T), candidate (i // T) % P, trial i % T, at place i of the result.
    state0: leaves [τ, T, ...]; ctrl_params: leaves [τ, P, ...]."""
    n_tau, n_pop = jax.tree.leaves(ctrl_params)[0].shape[:2]
    slot_tau = jnp.repeat(jnp.arange(n_tau), n_pop * trials)
    slot_pop = jnp.tile(jnp.repeat(jnp.arange(n_pop), trials), n_tau)
    slot_trial = jnp.tile(jnp.arange(trials), n_tau * n_pop)
    return Slots(jax.tree.map(lambda x: x[slot_tau, slot_trial], state0),
                 jax.tree.map(lambda x: x[slot_tau, slot_pop], ctrl_params), slot_tau, slot_trial,
                 jnp.arange(n_tau * n_pop * trials))


def _tau_step(params: DreamParams, trial_keys: jax.Array, models: jax.Array, inputs: str, env_name: str,
              constrain):
    """``rollout_taus``'s scan step: every slot takes one step in the dream of its own τ, with its trial's noise.
    trial_keys, models: [τ, T]."""
    z_dim = params.init_mu.shape[-1]
    policy = jax.vmap(lambda p, z, s: ctrl.policy(p, z, s, inputs, env_name))

    def per_slot(tau_idx: jax.Array) -> DreamParams:  # the τ-batched fields gathered for each slot
        scale = params.done_scale[tau_idx] if jnp.ndim(params.done_scale) else params.done_scale
        return params.replace(tau=params.tau[tau_idx], done_scale=scale)

    def one_step(c: TauLoop, _):
        s = c.slots
        noise = jax.vmap(jax.vmap(lambda k: step_noise(jax.random.fold_in(k, c.t), z_dim)))(trial_keys)  # [τ, T]
        noise = jax.tree.map(lambda x: x[s.tau, s.trial], noise)  # [B, ...]
        slot_params = per_slot(s.tau)
        step_b = jax.vmap(step_with_noise, in_axes=(0, 0, 0, tau_axes(slot_params), 0))
        _, state, reward, done, _ = step_b(noise, s.state, policy(s.ctrl, s.state.z, s.state.lstm), slot_params,
                                           models[s.tau, s.trial])
        tally = c.tally.add(reward, done, constrain)
        return TauLoop(c.t + 1, s._replace(state=jax.tree.map(constrain, state)), tally, c.stop), None

    return one_step


@functools.partial(jax.jit, static_argnames=("steps", "inputs", "env_name", "trials", "trial"))
def episode(ctrl_params: dict, key: jax.Array, params: DreamParams, steps: int, *, inputs: str,
            env_name: str, trials: int = 1, trial: int = 0) -> tuple[jax.Array, jax.Array, jax.Array]:
    """One recorded dream episode of a single controller: trial `trial` of `rollout(..., trials)` with this key.
    Jitted: every τ of a sweep (τ is data in `params`) and every controller of one size share one program.

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
