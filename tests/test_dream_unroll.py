"""es.unroll: the dream's scanned chunk unrolled 4 steps per loop iteration plays the same episodes as unroll 1."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wm_jax.config import ConfigError, load_config
from wm_jax.envs import dream, dream_batch
from wm_jax.es import ESProgram, with_taus
from wm_jax.models import controller as C
from wm_jax.models import mdnrnn

Z, H, K, A = 3, 8, 2, 3  # tiny CarRacing-shaped dream
TRIALS, POP, CAP = 4, 3, 23  # a cap that is no multiple of the unroll: the loop's last iteration runs past it


@pytest.fixture(scope="module")
def world():
    mdn = mdnrnn.init_params(jax.random.PRNGKey(0), Z, A, H, K)
    mdn["head"]["w"] = mdn["head"]["w"].at[:, -1].mul(3.0)  # episodes end at varied steps
    mdn["head"]["b"] = mdn["head"]["b"].at[-1].set(-0.6)
    bank = jax.random.normal(jax.random.PRNGKey(1), (5, Z)), jnp.full((5, Z), -2.0)
    params = dream.make_params(mdn, *bank, tau=1.0, max_steps=CAP, kind="carracing")
    ctrl = jax.vmap(lambda k: C.init_controller(k, Z + H, A, scale=1.0))(jax.random.split(jax.random.PRNGKey(2), POP))
    return params, ctrl


@pytest.mark.parametrize("compact", [0, 2])
def test_unrolled_rollout_plays_the_same_episodes(world, compact):
    params, ctrl = world
    run = jax.jit(lambda c, k, p, u: dream_batch.rollout(c, k, p, TRIALS, inputs="zh", env_name="carracing",
                                                         chunk=6, compact=compact, unroll=u), static_argnums=3)
    key = jax.random.PRNGKey(5)
    one, four = run(ctrl, key, params, 1), run(ctrl, key, params, 4)
    assert len(np.unique(np.asarray(one.lengths))) > 2  # episodes of varied lengths: the comparison has teeth
    np.testing.assert_array_equal(np.asarray(four.lengths), np.asarray(one.lengths))
    np.testing.assert_allclose(np.asarray(four.returns), np.asarray(one.returns), rtol=1e-5, atol=1e-5)
    assert int(four.steps_run) == int(one.steps_run) and int(four.slot_steps) == int(one.slot_steps)
    scans = str(jax.make_jaxpr(lambda c, k, p: run.__wrapped__(c, k, p, 4))(ctrl, key, params))
    assert "unroll=4" in scans  # the option reached the compiled loop (else the equality above says nothing)


def _es(unroll: int):
    cfg = load_config(None, ["env.name=carracing", "controller.inputs=zh", "es.population=8", "es.trials=2",
                             f"es.dream_max_steps={CAP}", "es.dream_chunk=6", f"es.unroll={unroll}"])
    tmpl = C.controller_from_config(jax.random.PRNGKey(0), cfg.controller, "carracing", Z, H)
    return ESProgram(cfg, tmpl, devices=jax.devices()[:1])


def test_es_generation_with_unroll_4_equals_unroll_1(world):
    params, _ = world
    dp = with_taus(params, (1.0, 1.3))
    out = []
    for unroll in (1, 4):
        prog = _es(unroll)
        carry, m = prog.run(prog.init(jax.random.PRNGKey(0), 2), dp, 2)
        out.append((m, prog.mean_params(carry)))
    (m1, mean1), (m4, mean4) = out
    np.testing.assert_array_equal(np.asarray(m4["steps_run"]), np.asarray(m1["steps_run"]))
    np.testing.assert_allclose(np.asarray(m4["mean_return"]), np.asarray(m1["mean_return"]), rtol=1e-5, atol=1e-5)
    for k in mean1:
        np.testing.assert_allclose(np.asarray(mean4[k]), np.asarray(mean1[k]), rtol=1e-4, atol=1e-5)


def test_unroll_below_1_is_a_config_error():
    with pytest.raises(ConfigError, match="es.unroll"):
        _es(0)
