"""``wm-jax dream-check``: score fixed reference policies inside M's dream, before spending compute on ES.

A dream worth training in ranks simple policies as the real environment does. In real TakeCover (100 episodes
each, the evaluation seeds 10000..10099, ``wm-jax evaluate --policy NAME``): stay 157 ± 47, always left 186 ± 50,
always right 174 ± 48, random 219 ± 98, and sweeping left/right alternately every N steps: N = 50: 526 ± 259,
80: 703 ± 366, 100: 759 ± 432, 120: 764 ± 498, 150: 537 ± 443. A dream that rewards standing still over sweeping
will teach the controller to stand still. The sweeps also set the bar for a controller: moving blind already scores
~760, so only a controller above that reacts to the fireballs it sees.

Policies (:mod:`wm_jax.envs.reference`; TakeCover action -1 left, 0 stay, +1 right): ``stay``, ``left``,
``right``, ``sweep50``, ``sweep100``, ``sweep120`` (left first), ``random`` (uniform in {-1, 0, 1} each step).
CarRacing: ``coast`` (no input), ``gas`` (straight, full gas), ``random`` (uniform steer, gas, brake). Each
policy runs `--episodes` dream episodes per τ (same keys for every policy) with the run's done rule and cap; the
mean ± std of the dream returns goes to stdout and ``<run_dir>/dream_check.json``.

The JSON also holds each policy's dream hazard by time (``hazard``: deaths per 1,000 steps in the buckets
``HAZARD_EDGES``, the probability the done rule gives each live step: the calibrated bernoulli probability, or 1
where the threshold rule fires; null where no episode is alive). Real TakeCover gets harder with time (sweep100,
16 real episodes: no death before step 200, then 2.4 / 2.1 / 3.6 per 1,000 steps over 400-800 / 800-1,400 /
1,400-2,100), so a dream whose late buckets sit far below that is kind where random-policy data never went.
"""

from __future__ import annotations

import functools

import numpy as np

from wm_jax.metrics import HAZARD_EDGES, hazard_per_1000


def policies(env_name: str) -> dict:
    """name -> f(t, key) -> env action; pure JAX so a policy's whole dream episode is one scan. The fixed ones
    come from :mod:`wm_jax.envs.reference` (the same definitions ``wm-jax evaluate --policy NAME`` plays)."""
    import jax
    import jax.numpy as jnp

    from wm_jax.envs import reference
    from wm_jax.envs.spec import env_spec

    out = {name: functools.partial(_fixed, reference.get(env_name, name)) for name in reference.names(env_name)}
    spec = env_spec(env_name)
    if spec.discrete:
        out["random"] = lambda t, k: jax.nn.one_hot(jax.random.randint(k, (), 0, spec.action_dim), spec.action_dim)
    elif env_name == "takecover":
        out["random"] = lambda t, k: jax.random.randint(k, (1,), -1, 2).astype(jnp.float32)
    else:
        out["random"] = lambda t, k: jax.random.uniform(k, (3,), minval=jnp.array([-1.0, 0, 0]), maxval=1.0)
    return out


def _fixed(f, t, key):
    """A reference policy f(t, xp) as a dream policy f(t, key): jax.numpy, no randomness."""
    import jax.numpy as jnp

    return f(t, jnp)


@functools.lru_cache(maxsize=None)
def returns_fn(env_name: str, max_steps: int):
    """Jitted f(keys, dp) -> (dream returns [P, E], hazard sums [P, E, B], live steps [P, E, B]) of the P
    policies of ``policies(env_name)`` (in its order) over E = len(keys) episodes each (one scan of max_steps
    per episode; the same keys for every policy); B time buckets start at ``HAZARD_EDGES``. With a dynamics
    ensemble in dp (es.dream_models), episode i runs in model i mod E's dream, as ES trials do.

    One program for every policy (a batched ``lax.switch`` picks each episode's action) and dp (with its τ) an
    argument: one compile serves every policy, τ and call with the same shapes."""
    import jax
    import jax.numpy as jnp

    from wm_jax.envs import dream

    edges = jnp.asarray(HAZARD_EDGES)
    branches = tuple(policies(env_name).values())

    def episode(policy, key, model, dp):
        k0, k1 = jax.random.split(key)
        _, state = dream.reset(k0, dp)

        def body(carry, t):
            state, alive, ret, k = carry
            k, ka, ks = jax.random.split(k, 3)
            noise = dream.step_noise(ks, state.z.shape[-1])
            action = jax.lax.switch(policy, branches, t, ka)
            _, state, r, done, info = dream.step_with_noise(noise, state, action, dp, model)
            p = info["end_prob"]  # the step's chance to end the episode, by the dream's own rule
            bucket = (jnp.sum(t >= edges) - 1 == jnp.arange(len(HAZARD_EDGES))).astype(jnp.float32)
            out = (alive * p * bucket, alive * bucket)
            return (state, alive * (1.0 - done.astype(jnp.float32)), ret + alive * r, k), out

        init = (state, jnp.float32(1), jnp.float32(0), k1)
        (_, _, ret, _), (hz, live) = jax.lax.scan(body, init, jnp.arange(max_steps))
        return ret, hz.sum(0), live.sum(0)

    per_policy = jax.vmap(episode, in_axes=(None, 0, 0, None))  # E episodes of one policy
    batched = jax.vmap(per_policy, in_axes=(0, None, None, None))  # every policy on the same keys

    @jax.jit
    def f(keys, dp):
        return batched(jnp.arange(len(branches)), keys, dream.trial_models(dp, keys.shape[0]), dp)

    return f


def check(cfg, taus, episodes: int, seed: int, mdn=None, bank=None, dyn=None, with_hazard: bool = False):
    """{τ: {policy: {mean, std}}} in the run's dream (M and, with es.dream_models > 1, the other dynamics models)
    or in that of the given `mdn`, `bank` and `dyn` (models 1..E-1; None: M alone); with `with_hazard`, also
    {τ: {policy: deaths per 1,000 live steps by bucket of HAZARD_EDGES}}."""
    import jax
    import jax.numpy as jnp

    from wm_jax.run import dream_params, load_dream_inputs, load_dynamics

    if mdn is None or bank is None:
        mdn, bank = load_dream_inputs(cfg)
        dyn = load_dynamics(cfg)  # the dream ES trains in: M and the other dynamics models (es.dream_models)
    dp0 = dream_params(cfg, mdn, bank, dyn)
    keys = jax.random.split(jax.random.PRNGKey(seed), episodes)
    names = list(policies(cfg.env.id))
    f = returns_fn(cfg.env.id, cfg.es.dream_max_steps)
    out, hazard = {}, {}
    for tau in taus:
        rets, hz, live = f(keys, dp0.replace(tau=jnp.float32(tau)))
        res = {name: (rets[i], hz[i], live[i]) for i, name in enumerate(names)}
        out[f"{tau:g}"] = {name: {"mean": float(np.mean(r[0])), "std": float(np.std(r[0]))}
                           for name, r in res.items()}
        hazard[f"{tau:g}"] = {name: hazard_per_1000(r[1], r[2]) for name, r in res.items()}
    return (out, hazard) if with_hazard else out
