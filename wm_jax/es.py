"""The ES generation in the dream: ask → rollouts (population × trials) → tell, one compiled program.

Everything runs over a leading **τ axis** (size 1 for ordinary training): the τ sweep is the same program
vmapped over temperatures, so train-controller and sweep-temperature share one code path.

* ``ESProgram(cfg, template, ...)`` builds the evosax strategy (any distribution-based algorithm by name;
  ``std_init`` = cfg.es.sigma_init), and jits
  - ``init(key, n_tau) -> ESCarry`` (ES state, PRNG key, generation; leading τ axis on every leaf),
  - ``run(carry, dream_params, n)`` → n generations (``lax.scan``) of ``vmap`` over τ → (carry, metrics [n, τ]);
    with es.dream_compact the rollouts of every τ run as one batch that shrinks as episodes end
    (``generation_taus``, ``dream_batch.rollout_taus``), ask and tell still per τ,
  - ``evaluate(ctrl_params [τ, ...], key, dream_params, trials)`` → mean return [τ].
* Common random numbers: every candidate of a generation sees the same trial keys.
* Fitness = −mean return + weight_decay · mean(w²) (evosax minimises; the original's L2 term).
* Search space (es.scale_inputs): with ``input_rms`` the ES state holds θ = w · RMS of each input row; candidates
  become weights before the rollout, and every public method takes and returns weights, never θ.
* Sharding: the population axis is constrained to the mesh axis ``"data"`` (wm_jax.parallel) inside the
  rollout, so with several devices each holds P / n_devices candidates; the ES state stays replicated.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax.sharding import NamedSharding, PartitionSpec

from wm_jax.config import Config, ConfigError
from wm_jax.envs import dream, dream_batch
from wm_jax.envs.dream_batch import tau_axes
from wm_jax.parallel import AXIS, make_mesh, replicate


@struct.dataclass
class ESCarry:
    es_state: Any  # evosax state, leading [τ] axis on every leaf
    key: jax.Array  # [τ, 2] uint32 PRNG keys (the same for every τ at init: common random numbers across τ)
    generation: jax.Array  # [τ] int32 generations done


METRIC_KEYS = ("mean_return", "best_return", "worst_return", "best_fitness", "mean_length", "steps_run",
               "alive_steps", "slot_steps", "std")


def lazy_eigen_every(n: int, c_1: float, c_mu: float) -> int:
    """Hansen's lazy-update interval: decompose C every max(1, ⌊1 / (10·n·(c_1 + c_μ))⌋) generations."""
    return max(1, int(1.0 / (10.0 * n * (c_1 + c_mu))))


@functools.cache
def lazy_cma_class() -> type:
    """evosax's CMA_ES with the covariance decomposed only every `eigen_every` asks (``es.eigen_every``)."""
    from evosax.algorithms import CMA_ES
    from evosax.algorithms.distribution_based.cma_es import eigen_decomposition

    class LazyEigenCMAES(CMA_ES):
        """CMA_ES whose ask decomposes C (an O(n³) eigh) only when generation_counter % eigen_every == 0 and
        otherwise samples with the B, D its state holds; tell is evosax's (it already reads the stored B, D).
        eigen_every = 1 samples the same population as CMA_ES. Under vmap the cond becomes a select that runs the eigh
        every time, so ESProgram asks it one τ at a time (``jax.custom_batching.sequential_vmap``)."""

        def __init__(self, population_size: int, solution, eigen_every: int):
            super().__init__(population_size=population_size, solution=solution)
            self.eigen_every = int(eigen_every)

        def _ask(self, key, state, params):
            c, b, d = jax.lax.cond(state.generation_counter % self.eigen_every == 0, eigen_decomposition,
                                   lambda _: (state.C, state.B, state.D), state.C)
            z = jax.random.normal(key, (self.population_size, self.num_dims))
            population = state.mean + state.std * ((z @ jnp.diag(d).T) @ b.T)
            return population, state.replace(C=c, B=b, D=d)

    return LazyEigenCMAES


def make_strategy(es_cfg, template: dict):
    """(strategy, strategy params) for cfg.es.strategy with the controller pytree as solution template."""
    from evosax.algorithms import algorithms
    from evosax.algorithms.distribution_based.base import DistributionBasedAlgorithm

    if es_cfg.strategy not in algorithms:
        raise ConfigError(f"config key 'es.strategy': unknown evosax algorithm {es_cfg.strategy!r}; "
                          f"known: {', '.join(sorted(algorithms))}")
    cls = algorithms[es_cfg.strategy]
    if not issubclass(cls, DistributionBasedAlgorithm):
        raise ConfigError(f"config key 'es.strategy': {es_cfg.strategy} is population-based; only "
                          "distribution-based evosax algorithms (a mean to start from) are supported")
    strategy = cls(population_size=es_cfg.population, solution=template)
    params = strategy.default_params
    if es_cfg.strategy == "CMA_ES" and es_cfg.eigen_every != 1:
        every = es_cfg.eigen_every or lazy_eigen_every(strategy.num_dims, float(params.c_1), float(params.c_mu))
        strategy = lazy_cma_class()(population_size=es_cfg.population, solution=template, eigen_every=every)
    if hasattr(params, "std_init"):
        params = params.replace(std_init=jnp.asarray(es_cfg.sigma_init, jnp.float32))
    if es_cfg.c_mean != 1.0:
        if not hasattr(params, "c_mean"):
            raise ConfigError(f"config key 'es.c_mean': {es_cfg.strategy} has no mean learning rate (c_mean)")
        params = params.replace(c_mean=jnp.asarray(es_cfg.c_mean, jnp.float32))
    return strategy, params


def input_row_scale(template: dict, input_rms: np.ndarray) -> dict:
    """Per-parameter factors w = θ · factor for es.scale_inputs: 1 / RMS on each input row of the first layer
    ("w" or "w1", [F, out]); other parameters are searched as they are."""
    first = "w1" if "w1" in template else "w"
    n_in = np.shape(template[first])[0]
    rms = np.asarray(input_rms, np.float32).reshape(-1)
    if rms.shape != (n_in,) or not np.all(np.isfinite(rms)) or np.any(rms <= 0):
        raise ValueError(f"input RMS must be {n_in} finite positive values (C's inputs), got shape {rms.shape}")
    return {first: jnp.asarray(1.0 / rms)[:, None]}


def with_taus(params: dream.DreamParams, taus) -> dream.DreamParams:
    """Copy of `params` with a [n_tau] temperature vector."""
    return params.replace(tau=jnp.asarray(taus, jnp.float32).reshape(-1))


class ESProgram:
    """Compiled ES generations for one config; see the module docstring."""

    def __init__(self, cfg: Config, template: dict, devices: list | None = None, chunk: int | None = None,
                 early_exit: bool = True, input_rms: np.ndarray | None = None):
        self.cfg = cfg
        self.template = template
        # es.scale_inputs: the ES searches θ = w · RMS (per input row of w); None: θ = w
        self.row_scale = None if input_rms is None else input_row_scale(template, input_rms)
        self.strategy, self.es_params = make_strategy(cfg.es, template)
        self.inputs, self.env_name = cfg.controller.inputs, cfg.env.id
        self.chunk, self.early_exit = chunk or cfg.es.dream_chunk, early_exit
        self.compact = cfg.es.dream_compact if early_exit else 0
        if cfg.es.unroll < 1:
            raise ConfigError(f"config key 'es.unroll': must be >= 1 (dream steps per scan iteration), "
                              f"got {cfg.es.unroll}")
        devices = jax.devices() if devices is None else list(devices)
        if cfg.es.population % len(devices):  # population not divisible: run unsharded rather than fail
            import warnings

            warnings.warn(f"es.population={cfg.es.population} is not divisible by {len(devices)} devices; "
                          "running the ES on one device", stacklevel=2)
            devices = devices[:1]
        self.mesh = make_mesh(devices)
        self.n_devices = len(devices)
        # Sharded on CPU devices, ask runs one τ at a time (vmap over τ becomes a loop): CMA-ES's ask is a batched
        # LAPACK eigh (lapack_ssyevd_ffi on [τ, D, D]) that jaxlib 0.10 fans out over XLA:CPU's intra-op pool and
        # then blocks on. Every device runs it (the ES state is replicated) on that one pool, no larger than the
        # device count on forced host devices: when each pool thread holds a device's eigh (or a collective
        # waiting for the device whose eigh is stuck), the batch chunks never run and the process hangs idle (gdb
        # stacks: ParallelBatchMap -> BlockingCounter::Wait). One matrix per call runs inline; the same eigh per
        # τ, so the same numbers. Single device or accelerators: the batched call. A lazy-eigen CMA-ES
        # (es.eigen_every) asks one τ at a time too: vmapped, its cond would become a select that runs the eigh
        # every generation (the τ axis is there even for one τ).
        lazy = getattr(self.strategy, "eigen_every", 1) > 1
        sequential = lazy or (self.n_devices > 1 and devices[0].platform == "cpu")
        self._ask = jax.custom_batching.sequential_vmap(self.strategy.ask) if sequential else self.strategy.ask
        self.replicated = NamedSharding(self.mesh, PartitionSpec())
        self._run = jax.jit(self._run_impl, static_argnums=(2,))
        self._eval = jax.jit(self._eval_impl, static_argnums=(3,))
        self._init = jax.jit(self._init_impl, static_argnums=(1,))

    # ---- pure pieces (single τ) ----
    def _constrain(self, x: jax.Array) -> jax.Array:
        if self.n_devices == 1:
            return x
        spec = PartitionSpec(AXIS, *([None] * (x.ndim - 1)))
        return jax.lax.with_sharding_constraint(x, NamedSharding(self.mesh, spec))

    def to_controller(self, theta: dict) -> dict:
        """Search-space parameters (any leading batch axes) -> the controller's weights."""
        if self.row_scale is None:
            return theta
        return {k: v * self.row_scale[k] if k in self.row_scale else v for k, v in theta.items()}

    def to_search(self, params: dict) -> dict:
        """The controller's weights -> search-space parameters (inverse of to_controller)."""
        if self.row_scale is None:
            return params
        return {k: v / self.row_scale[k] if k in self.row_scale else v for k, v in params.items()}

    def rollout(self, pop: dict, key: jax.Array, params: dream.DreamParams, trials: int) -> dream_batch.RolloutResult:
        """One τ's rollout (es.dream_compact = 0, or the benchmark's profile)."""
        return dream_batch.rollout(pop, key, params, trials, inputs=self.inputs, env_name=self.env_name,
                                   chunk=self.chunk, early_exit=self.early_exit, constrain=self._constrain,
                                   compact=self.compact, compact_ratio=self.cfg.es.dream_compact_ratio,
                                   compact_multiple=self.n_devices, unroll=self.cfg.es.unroll)

    def _rollout_taus(self, pop: dict, keys: jax.Array, params: dream.DreamParams,
                      trials: int) -> dream_batch.RolloutResult:
        """Every τ's candidates (leaves [τ, P, ...]) in one compacting batch (dream_batch.rollout_taus), each batch
        size still split evenly over the devices."""
        n_tau, n_pop = jax.tree.leaves(pop)[0].shape[:2]
        sizes = dream_batch.compact_sizes(n_tau * n_pop * trials, self.compact, self.cfg.es.dream_compact_ratio,
                                          self.n_devices)
        return dream_batch.rollout_taus(pop, keys, params, trials, inputs=self.inputs, env_name=self.env_name,
                                        sizes=sizes, chunk=self.chunk, constrain=self._constrain,
                                        unroll=self.cfg.es.unroll)

    def fitness(self, pop: dict, returns: jax.Array) -> jax.Array:
        """−mean return over trials + weight_decay · mean(θ²): [P]."""
        fit = -returns.mean(axis=1)
        if self.cfg.es.weight_decay:
            flat = jax.vmap(lambda p: jnp.concatenate([x.ravel() for x in jax.tree.leaves(p)]))(pop)
            fit = fit + self.cfg.es.weight_decay * jnp.mean(flat**2, axis=1)
        return fit

    def _metrics(self, returns: jax.Array, lengths: jax.Array, steps_run: jax.Array, slot_steps: jax.Array,
                 es_state) -> dict:
        cand = returns.mean(axis=1)
        return {
            "mean_return": cand.mean(), "best_return": cand.max(), "worst_return": cand.min(),
            "best_fitness": es_state.best_fitness, "mean_length": lengths.mean(),
            "steps_run": steps_run, "alive_steps": lengths.sum(), "slot_steps": slot_steps,
            "std": jnp.mean(getattr(es_state, "std", jnp.nan)),
        }

    def generation(self, carry: tuple, params: dream.DreamParams) -> tuple[tuple, dict]:
        """One generation for one τ: carry = (es_state, key, generation)."""
        es_state, key, gen = carry
        key, k_ask, k_roll, k_tell = jax.random.split(key, 4)
        pop, es_state = self._ask(k_ask, es_state, self.es_params)
        pop = jax.tree.map(self._constrain, pop)
        weights = self.to_controller(pop)
        res = self.rollout(weights, k_roll, params, self.cfg.es.trials)
        fit = self.fitness(weights, res.returns)
        es_state, _ = self.strategy.tell(k_tell, pop, fit, es_state, self.es_params)
        return (es_state, key, gen + 1), self._metrics(*res, es_state)

    def generation_taus(self, carry: tuple, params: dream.DreamParams) -> tuple[tuple, dict]:
        """One generation for every τ (leaves [τ, ...]) with one compacting rollout across all of them: ask and
        tell per τ (vmap), the τ·P·T dream episodes in one batch that shrinks as they end, whatever their τ. The
        same keys, candidates and episodes as ``generation`` vmapped over τ."""
        es_state, key, gen = carry
        keys = jax.vmap(lambda k: jax.random.split(k, 4))(key)  # [τ, 4, 2]
        key, k_ask, k_roll, k_tell = (keys[:, i] for i in range(4))
        pop, es_state = jax.vmap(self._ask, in_axes=(0, 0, None))(k_ask, es_state, self.es_params)
        weights = self.to_controller(pop)
        res = self._rollout_taus(weights, k_roll, params, self.cfg.es.trials)
        fit = jax.vmap(self.fitness)(weights, res.returns)
        es_state, _ = jax.vmap(self.strategy.tell, in_axes=(0, 0, 0, 0, None))(k_tell, pop, fit, es_state,
                                                                               self.es_params)
        return (es_state, key, gen + 1), jax.vmap(self._metrics)(*res, es_state)

    def _init_impl(self, key: jax.Array, n_tau: int, mean: dict) -> ESCarry:
        k_init, k_run = jax.random.split(key)
        state = self.strategy.init(k_init, self.to_search(mean), self.es_params)
        # strong dtypes (evosax seeds some fields with Python floats → weak types, which would make the second
        # call of `run` recompile for its own output's signature)
        state = jax.tree.map(lambda x: jnp.broadcast_to(jnp.asarray(x), (n_tau, *jnp.shape(x))).astype(
            jnp.asarray(x).dtype), state)
        return ESCarry(state, jnp.broadcast_to(k_run, (n_tau, *k_run.shape)), jnp.zeros((n_tau,), jnp.int32))

    def _run_impl(self, carry: ESCarry, params: dream.DreamParams, n: int) -> tuple[ESCarry, dict]:
        if self.compact:  # one batch across τ, so a shrink need not wait for the coolest τ's episodes
            gen = self.generation_taus
        else:
            gen = jax.vmap(self.generation, in_axes=((0, 0, 0), tau_axes(params)))
        batch = self.cfg.es.population * self.cfg.es.trials

        def body(c, _):
            c, m = gen(c, params)
            if not self.compact:  # vmap runs the τ's loops as one: each computes as long as the longest
                longest = jnp.broadcast_to(jnp.max(m["steps_run"]), m["steps_run"].shape)
                m = {**m, "steps_run": longest, "slot_steps": longest * batch}
            return c, m

        (state, key, g), metrics = jax.lax.scan(body, (carry.es_state, carry.key, carry.generation), None, length=n)
        return ESCarry(state, key, g), metrics

    def _eval_impl(self, ctrl_params: dict, key: jax.Array, params: dream.DreamParams, trials: int) -> jax.Array:
        if self.compact:
            n_tau = jax.tree.leaves(ctrl_params)[0].shape[0]
            res = self._rollout_taus(jax.tree.map(lambda x: x[:, None], ctrl_params),
                                     jnp.broadcast_to(key, (n_tau, *key.shape)), params, trials)
            return res.returns.mean(axis=(1, 2))

        def one(p, par):
            res = self.rollout(jax.tree.map(lambda x: x[None], p), key, par, trials)
            return res.returns.mean()

        return jax.vmap(one, in_axes=(0, tau_axes(params)))(ctrl_params, params)

    # ---- public, jitted ----
    def init(self, key: jax.Array, n_tau: int = 1, mean: dict | None = None) -> ESCarry:
        """A fresh ES state per τ, its search distribution centred on `mean` (a controller pytree; default: the
        template, i.e. the controller's initialisation; ``es.init`` passes a trained controller here)."""
        mean = self.template if mean is None else jax.tree.map(jnp.asarray, mean)
        return replicate(self._init(key, n_tau, mean), self.mesh)  # multi-process safe (wm_jax.parallel.put)

    def run(self, carry: ESCarry, params: dream.DreamParams, n: int = 1) -> tuple[ESCarry, dict]:
        """n generations; params.tau must be a [n_tau] vector (see with_taus). Metrics: dict of [n, n_tau]."""
        return self._run(replicate(carry, self.mesh), params, n)

    def compile_run(self, carry: ESCarry, params: dream.DreamParams, n: int = 1):
        """`run(carry, params, n)` compiled ahead for these shapes (a jax ``Compiled``: call it as
        ``compiled(carry, params)`` with `carry` placed as ``self.replicated``; ``memory_analysis()`` gives its
        buffers' bytes before it runs, as the scaling benchmark checks)."""
        return self._run.lower(jax.device_put(carry, self.replicated), params, n).compile()

    def evaluate(self, ctrl_params: dict, key: jax.Array, params: dream.DreamParams, trials: int) -> jax.Array:
        """Mean dream return [n_tau] of one controller per τ (leaves [n_tau, ...]) over `trials` episodes."""
        return self._eval(ctrl_params, key, params, trials)

    def mean_params(self, carry: ESCarry) -> dict:
        """The ES means as controller pytrees, leaves [n_tau, ...]."""
        return self.to_controller(jax.vmap(self.strategy.get_mean)(carry.es_state))

    def best_params(self, carry: ESCarry) -> dict:
        """The best single candidate seen by the ES (evosax's archive), leaves [n_tau, ...]."""
        return self.to_controller(jax.vmap(self.strategy._unravel_solution)(carry.es_state.best_solution))


def carry_to_tree(carry: ESCarry) -> dict:
    """Checkpointable dict (orbax StandardSave) of an ESCarry."""
    from flax.serialization import to_state_dict

    return {"es_state": to_state_dict(carry.es_state), "key": carry.key, "generation": carry.generation}


def carry_from_tree(template: ESCarry, tree: dict) -> ESCarry:
    """Inverse of carry_to_tree; `template` gives the structure (e.g. ESProgram.init(key, n_tau))."""
    from flax.serialization import from_state_dict

    def like(t, x):
        return jnp.asarray(np.asarray(x), dtype=jnp.asarray(t).dtype).reshape(jnp.shape(t))

    state = from_state_dict(template.es_state, tree["es_state"])
    state = jax.tree.map(like, template.es_state, state)
    return ESCarry(state, like(template.key, tree["key"]), like(template.generation, tree["generation"]))


_PROGRAMS: dict = {}


def get_program(cfg: Config, template: dict, devices: list | None = None, early_exit: bool = True,
                input_rms: np.ndarray | None = None) -> ESProgram:
    """A cached ESProgram: the same (ES/controller/env config, template shapes, devices, input RMS) reuses compiled
    code. `input_rms` [F]: see es.scale_inputs (None: the ES searches the weights themselves)."""
    shapes = tuple((k, tuple(np.shape(v))) for k, v in sorted(template.items()))
    rms = None if input_rms is None else np.asarray(input_rms, np.float32)
    devs = tuple(jax.devices() if devices is None else devices)
    es = cfg.es  # only the fields the compiled program depends on
    key = (es.strategy, es.population, es.trials, es.sigma_init, es.c_mean, es.eigen_every, es.weight_decay,
           es.dream_chunk, es.dream_compact, es.dream_compact_ratio, es.unroll, cfg.controller, cfg.env.id, shapes,
           devs, early_exit,
           None if rms is None else rms.tobytes())
    if key not in _PROGRAMS:
        _PROGRAMS[key] = ESProgram(cfg, template, devices=list(devs), early_exit=early_exit, input_rms=rms)
    return _PROGRAMS[key]
