"""``wm-jax dream-score``: trained controllers' returns in M's dream and in a held-out model's dream.

A controller trained in M's dream also learns M's mistakes, so its return there says little about the real game.
A second model trained the same way on the same data (``wm-jax train-mdnrnn --member e``: own initialisation and
batch order, ``<run>/mdnrnn_<e>``) makes different mistakes: in its dream (z', the end from it, C still reading
M's state as in the game; ``dream.held_out``) an exploit of M's errors stops paying. This command scores
controllers (folders holding params.npz, e.g. ``<run>/sweep/tau_1``) in both dreams with the same episode keys;
it is how ``es.select_model`` was chosen (README, held-out selection). Output: a table on stdout and
``--out`` (default ``<run_dir>/dream_score.json``): {controller: {τ: {"own", "held_out"}}}.
"""

from __future__ import annotations

import functools



def score(cfg, controllers: dict[str, dict], taus, trials: int, seed: int, mdn: dict, bank, held: dict) -> dict:
    """{name: {τ: {"own": mean return in M's dream, "held_out": in `held`'s dream}}} for controllers {name:
    params}, every controller and dream on the same `trials` episode keys."""
    import jax
    import jax.numpy as jnp

    from wm_jax.envs import dream
    from wm_jax.run import dream_params

    if trials < 1:
        raise ValueError(f"--trials must be >= 1, got {trials}")
    dreams = {"own": dream_params(cfg, mdn, bank), "held_out": dream.held_out(dream_params(cfg, mdn, bank,
                                                                                                  [held]))}
    roll = _mean_return(cfg.controller.inputs, cfg.env.id, cfg.es.dream_chunk, trials)
    key = jax.random.PRNGKey(seed)
    return {name: {f"{t:g}": {which: float(roll(p, key, dp.replace(tau=jnp.float32(t))))
                             for which, dp in dreams.items()} for t in taus}
            for name, p in controllers.items()}


@functools.lru_cache(maxsize=8)
def _mean_return(inputs: str, env_name: str, chunk: int, trials: int):
    """jit(controller params, key, dream params) -> mean return over `trials` episodes; one per shape of call."""
    import jax

    from wm_jax.envs import dream_batch

    return jax.jit(lambda p, k, dp: dream_batch.rollout(jax.tree.map(lambda x: x[None], p), k, dp, trials,
                                                        inputs=inputs, env_name=env_name, chunk=chunk,
                                                        compact=3).returns.mean())
