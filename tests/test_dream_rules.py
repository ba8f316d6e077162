"""The dream's rules on the toy M of test_es (only 'right' survives): done modes, and the diagnostics that score
fixed policies (``wm-jax dream-check``) and trained controllers (``wm-jax dream-score``) in a dream."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_es import BANK, CAP, H, OVERRIDES, Z, toy_m

from wm_jax.config import load_config
from wm_jax.envs import dream


def test_toy_m_rules():
    p = dream.make_params(toy_m(), *BANK, tau=1.0, max_steps=CAP)
    _, s = jax.jit(dream.reset)(jax.random.PRNGKey(0), p)
    step = jax.jit(dream.step)
    for a, dies in ((1.0, False), (0.0, True), (-1.0, True)):
        _, _, r, d, info = step(jax.random.PRNGKey(1), s, jnp.array([a]), p)
        assert bool(d) == dies and float(r) == 1.0


def test_bernoulli_done_is_calibrated_for_the_pos_weight():
    """Standing still, the toy M's done logit is 2. A done head trained with positives weighted w predicts
    odds x w, so the dream samples death with sigmoid(2 - log w): 0.881 for w = 1, 0.5 for w = e^2."""
    keys = jax.random.split(jax.random.PRNGKey(3), 20_000)
    for w, want in ((1.0, 0.8808), (float(np.exp(2.0)), 0.5)):
        p = dream.make_params(toy_m(), *BANK, tau=1.0, max_steps=CAP, done_mode="bernoulli", done_pos_weight=w)
        _, s = dream.reset(jax.random.PRNGKey(0), p)
        done = jax.jit(jax.vmap(lambda k: dream.step(k, s, jnp.array([0.0]), p)[3]))(keys)
        assert abs(float(done.mean()) - want) < 0.015, (w, float(done.mean()))


def test_bernoulli_done_spreads_over_the_done_horizon():
    """A head trained to predict death within the next k steps gives q; the dream ends a step with q / k
    (here q = sigmoid(2) = 0.881 for w = 1: 0.220 for k = 4). The threshold rule ignores k."""
    keys = jax.random.split(jax.random.PRNGKey(4), 20_000)
    p = dream.make_params(toy_m(), *BANK, tau=1.0, max_steps=CAP, done_mode="bernoulli", done_horizon=4)
    _, s = dream.reset(jax.random.PRNGKey(0), p)
    done = jax.jit(jax.vmap(lambda k: dream.step(k, s, jnp.array([0.0]), p)[3]))(keys)
    assert abs(float(done.mean()) - 0.8808 / 4) < 0.012, float(done.mean())
    p = dream.make_params(toy_m(), *BANK, tau=1.0, max_steps=CAP, done_horizon=4)
    assert bool(dream.step(keys[0], s, jnp.array([0.0]), p)[3])
    with pytest.raises(ValueError, match="done_horizon"):
        dream.make_params(toy_m(), *BANK, done_horizon=0)


def test_done_scale_multiplies_the_bernoulli_end_probability():
    """es.done_scale = s: the dream ends a step with s·q / k (q = 0.881, k = 4, s = 2: 0.440); 0 is refused."""
    keys = jax.random.split(jax.random.PRNGKey(5), 20_000)
    p = dream.make_params(toy_m(), *BANK, tau=1.0, max_steps=CAP, done_mode="bernoulli", done_horizon=4,
                          done_scale=2.0)
    _, s = dream.reset(jax.random.PRNGKey(0), p)
    done = jax.jit(jax.vmap(lambda k: dream.step(k, s, jnp.array([0.0]), p)[3]))(keys)
    assert abs(float(done.mean()) - 2 * 0.8808 / 4) < 0.015, float(done.mean())
    with pytest.raises(ValueError, match="done_scale"):
        dream.make_params(toy_m(), *BANK, done_scale=0.0)


def test_dream_score_compares_m_with_a_held_out_model(tmp_path):
    """wm-jax dream-score: a controller that goes right lives to the cap in toy M's dream; in a held-out copy of M
    it scores the same, in a model where 'right' is deadly it dies on the first step."""
    from wm_jax.train.dream_score import score

    cfg = load_config(None, [*OVERRIDES, f"root={tmp_path}", "name=score"])
    right = {"w": jnp.zeros((Z + H, 1)), "b": jnp.array([5.0])}  # [z, h] -> action +1 (right) always
    stay = {"w": jnp.zeros((Z + H, 1)), "b": jnp.array([0.0])}
    deadly = toy_m()
    deadly["head"]["w"] = deadly["head"]["w"].at[0, -1].set(10.0)  # done logit 2 + 10·h₀: 'right' dies now
    res = score(cfg, {"right": right, "stay": stay}, (1.0, 0.5), 16, 0, toy_m(), BANK, toy_m())
    assert res["right"] == {"1": {"own": CAP, "held_out": CAP}, "0.5": {"own": CAP, "held_out": CAP}}
    assert res["stay"]["1"] == {"own": 1.0, "held_out": 1.0}
    res = score(cfg, {"right": right}, (1.0,), 16, 0, toy_m(), BANK, deadly)
    assert res["right"]["1"] == {"own": CAP, "held_out": 1.0}


def test_dream_check_ranks_fixed_policies_by_the_dream_rules():
    from wm_jax.train.dream_check import check, returns_fn

    cfg = load_config(None, [*OVERRIDES, "name=check"])
    returns_fn.cache_clear()
    program = returns_fn(cfg.env.name, cfg.es.dream_max_steps)  # the one check builds and uses
    res = check(cfg, (1.0, 0.5), episodes=64, seed=0, mdn=toy_m(), bank=BANK)
    assert program._cache_size() == 1  # one compile for all 7 policies and both τ
    for tau in ("1", "0.5"):  # toy M: only 'right' survives (to the cap); any other action dies on its step
        r = res[tau]
        assert r["right"] == {"mean": CAP, "std": 0.0}
        assert r["stay"]["mean"] == r["left"]["mean"] == 1.0
        assert r["sweep50"]["mean"] == r["sweep120"]["mean"] == 1.0  # sweeps start with 'left'
        # random survives a step only by drawing 'right' (p = 1/3): return ~ geometric, mean 1.5, std 0.87;
        # 64 episodes put the sample mean within 1.5 ± 0.33 (3 standard errors)
        assert 1.17 < r["random"]["mean"] < 1.83, r["random"]
        assert 0.5 < r["random"]["std"] < 1.3, r["random"]  # geometric(2/3) std 0.87: the episodes do differ
    _, hazard = check(cfg, (1.0,), episodes=8, seed=0, mdn=toy_m(), bank=BANK, with_hazard=True)
    # threshold rule: every live step of 'stay' fires (1,000 per 1,000); 'right' never does; CAP < 100, so only
    # the first bucket has live steps
    assert hazard["1"]["stay"] == [1000.0] + [None] * 5 and hazard["1"]["right"] == [0.0] + [None] * 5
    # a second dynamics model where nobody dies: episode i runs in model i mod 2, as ES trials do, so half the
    # 'stay' episodes live to the cap
    safe = toy_m()
    safe["head"]["b"] = safe["head"]["b"].at[-1].set(-50.0)
    ens = check(cfg, (1.0,), episodes=8, seed=0, mdn=toy_m(), bank=BANK, dyn=[safe])["1"]
    assert ens["stay"]["mean"] == (1.0 + CAP) / 2 and ens["right"]["mean"] == CAP
