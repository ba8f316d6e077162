"""The dream env and the controller: purity, alive-mask accounting, early exit, sampling, C's shapes/actions."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wm_jax.config import load_config
from wm_jax.envs import dream, dream_batch
from wm_jax.envs.spec import squash_action
from wm_jax.models import controller as C
from wm_jax.models import mdnrnn

Z, H, K, A = 3, 8, 2, 3  # tiny CarRacing-shaped dream: reward head + done head
TRIALS, POP, CAP = 4, 3, 24


@pytest.fixture(scope="module")
def world():
    mdn = mdnrnn.init_params(jax.random.PRNGKey(0), Z, A, H, K)
    # Scale the done column so episodes end at varied steps (about a third of steps have logit > 0).
    mdn["head"]["w"] = mdn["head"]["w"].at[:, -1].mul(3.0)
    mdn["head"]["b"] = mdn["head"]["b"].at[-1].set(-0.3)
    bank = jax.random.normal(jax.random.PRNGKey(1), (5, Z)), jnp.full((5, Z), -2.0)
    params = dream.make_params(mdn, *bank, tau=1.0, max_steps=CAP, kind="carracing")
    ctrl = jax.vmap(lambda k: C.init_controller(k, Z + H, A, scale=1.0))(jax.random.split(jax.random.PRNGKey(2), POP))
    roll = jax.jit(lambda c, k, p, early: dream_batch.rollout(c, k, p, TRIALS, inputs="zh", env_name="carracing",
                                                              chunk=5, early_exit=early), static_argnums=3)
    return params, ctrl, roll


def test_step_is_pure_and_traced_once(world):
    params, _, _ = world
    step = jax.jit(chex.assert_max_traces(dream.step, n=1))
    _, s0 = dream.reset(jax.random.PRNGKey(3), params)
    a = jnp.array([0.1, 0.5, 0.0])
    o1, s1, r1, d1, _ = step(jax.random.PRNGKey(4), s0, a, params)
    o2, s2, r2, d2, _ = step(jax.random.PRNGKey(4), s0, a, params)
    chex.assert_trees_all_equal((o1, s1, r1, d1), (o2, s2, r2, d2))
    chex.assert_tree_all_finite((o1, r1))
    o3, *_ = step(jax.random.PRNGKey(5), s0, a, params)
    assert not np.allclose(o1.z, o3.z)
    # τ and weights are data: a new τ reuses the compiled step (assert_max_traces would raise otherwise).
    step(jax.random.PRNGKey(4), s0, a, params.replace(tau=jnp.float32(0.5)))
    assert int(s1.t) == 1 and s1.z.shape == (Z,) and s1.lstm.h.shape == (H,)


def test_reset_draws_from_the_bank(world):
    params, _, _ = world
    obs, s = dream.reset(jax.random.PRNGKey(7), params)
    # z0 = mu_i + exp(logvar/2)·ε with logvar = -2: within a few σ=0.37 of some bank entry.
    dist = np.abs(np.asarray(params.init_mu) - np.asarray(obs.z)).max(axis=1)
    assert dist.min() < 5 * np.exp(-1.0)
    assert np.all(np.asarray(s.lstm.c) == 0) and not bool(s.done)


def _reference_returns(params, ctrl, key):
    """Python loop over the gymnax-shaped step, one (candidate, trial) at a time: return & length."""
    k_reset, k_steps = jax.random.split(key)
    reset_keys, trial_keys = jax.random.split(k_reset, TRIALS), jax.random.split(k_steps, TRIALS)
    step = jax.jit(dream.step_with_noise)
    pol = jax.jit(lambda p, z, s: C.policy(p, z, s, "zh", "carracing"))
    noise_at = jax.jit(lambda k, i: dream.step_noise(jax.random.fold_in(k, i), Z))
    rets, lens = np.zeros((POP, TRIALS)), np.zeros((POP, TRIALS), int)
    for p in range(POP):
        cp = jax.tree.map(lambda x: x[p], ctrl)
        for t in range(TRIALS):
            _, s = dream.reset(reset_keys[t], params)
            for i in range(CAP):
                noise = noise_at(trial_keys[t], i)
                _, s, r, d, _ = step(noise, s, pol(cp, s.z, s.lstm), params)
                rets[p, t] += float(r)
                lens[p, t] += 1
                if bool(d):
                    break
    return rets, lens


def test_alive_mask_accounting_matches_python_loop(world):
    params, ctrl, roll = world
    key = jax.random.PRNGKey(11)
    res = roll(ctrl, key, params, True)
    ref_ret, ref_len = _reference_returns(params, ctrl, key)
    np.testing.assert_array_equal(np.asarray(res.lengths), ref_len)
    np.testing.assert_allclose(np.asarray(res.returns), ref_ret, rtol=1e-4, atol=1e-4)
    assert len(np.unique(ref_len)) > 2  # episodes really end at different steps
    assert ref_len.min() < CAP  # and some end before the cap, so the mask matters


def test_hand_computed_returns(world):
    params, ctrl, roll = world
    key = jax.random.PRNGKey(12)
    # Done logit always > 0: every episode is one step; TakeCover earns exactly 1.
    b = params.mdn["head"]["b"].at[-1].set(50.0)
    w = params.mdn["head"]["w"].at[:, -1].set(0.0)
    dying = params.replace(mdn={**params.mdn, "head": {"w": w, "b": b}}, kind="takecover")
    res = roll(ctrl, key, dying, True)
    np.testing.assert_array_equal(np.asarray(res.lengths), 1)
    np.testing.assert_array_equal(np.asarray(res.returns), 1.0)
    assert int(res.steps_run) == 5  # one chunk, then the early exit
    # Done logit always < 0: the cap ends everything at CAP steps (return CAP), checked after 5 chunks.
    immortal = dying.replace(mdn={**params.mdn, "head": {"w": w, "b": b.at[-1].set(-50.0)}})
    res = roll(ctrl, key, immortal, True)
    np.testing.assert_array_equal(np.asarray(res.lengths), CAP)
    np.testing.assert_array_equal(np.asarray(res.returns), float(CAP))
    assert int(res.steps_run) == 25


def test_early_exit_equals_full_length(world):
    params, ctrl, roll = world
    key = jax.random.PRNGKey(13)
    # A done bias of -0.3 (instead of -1) makes every episode short, so the early exit has work to skip.
    params = params.replace(mdn={**params.mdn, "head": {**params.mdn["head"],
                                                        "b": params.mdn["head"]["b"].at[-1].set(-0.3)}})
    early, full = roll(ctrl, key, params, True), roll(ctrl, key, params, False)
    assert np.asarray(early.lengths).max() < 20 and len(np.unique(np.asarray(early.lengths))) > 1
    np.testing.assert_array_equal(np.asarray(early.returns), np.asarray(full.returns))
    np.testing.assert_array_equal(np.asarray(early.lengths), np.asarray(full.lengths))
    assert int(early.steps_run) < int(full.steps_run) == 25


def _raw(logits_zk, mu_zk, log_sigma_zk):
    """MDNRaw (component-major [K, Z]) from per-dimension [Z, K] arrays."""
    t = lambda a: jnp.swapaxes(jnp.asarray(a, jnp.float32), -1, -2)  # noqa: E731
    return mdnrnn.MDNRaw(t(logits_zk), t(mu_zk), t(log_sigma_zk), jnp.zeros(()), jnp.zeros(()))


def test_sampler_picks_component_by_inverse_cdf():
    # Two components with π = (0.25, 0.75) in both z dims; u < 0.25 picks 0, else 1; τ scales σ by √τ.
    raw = _raw(jnp.log(jnp.array([[0.25, 0.75]] * 2)), [[-1.0, 2.0]] * 2, jnp.log(jnp.array([[0.1, 0.2]] * 2)))
    z = dream.sample_next_z(raw, jnp.float32(1.0), jnp.array([0.2, 0.3]), jnp.array([1.0, 1.0]))
    np.testing.assert_allclose(z, [-1.0 + 0.1, 2.0 + 0.2], rtol=1e-6)
    z = dream.sample_next_z(raw, jnp.float32(4.0), jnp.array([0.2, 0.3]), jnp.array([1.0, -1.0]))
    # τ = 4: π ∝ (0.25, 0.75)^(1/4) → p0 = 0.4065, so u = 0.3 now picks component 0; σ·√4.
    np.testing.assert_allclose(z, [-1.0 + 0.2, -1.0 - 0.2], rtol=1e-5)


def test_sampler_matches_mdnrnn_sample_z_in_law():
    key = jax.random.PRNGKey(0)
    logits, mu, ls = jnp.array([[0.0, 1.0, -1.0]]), jnp.array([[-3.0, 0.0, 3.0]]), jnp.log(jnp.full((1, 3), 0.1))
    raw = _raw(logits, mu, ls)
    out = mdnrnn.MDNOutput(jax.nn.log_softmax(logits), mu, ls, jnp.zeros(()), jnp.zeros(()))
    keys = jax.random.split(key, 4000)
    ours = jax.jit(jax.vmap(lambda k: dream.sample_next_z(raw, 1.3, *dream.step_noise(k, 1)[:2])))(keys)
    theirs = jax.jit(jax.vmap(lambda k: mdnrnn.sample_z(k, out, 1.3)))(keys)
    for c in (-3.0, 0.0, 3.0):  # component frequencies agree within sampling error
        assert abs(float(jnp.mean(jnp.abs(ours - c) < 1)) - float(jnp.mean(jnp.abs(theirs - c) < 1))) < 0.04


def test_controller_param_counts():
    car = load_config(None, ["env.name=carracing", "controller.inputs=zh"])
    p = C.controller_from_config(jax.random.PRNGKey(0), car.controller, "carracing", 32, 256)
    assert C.num_params(p) == 867 == (32 + 256) * 3 + 3
    doom = load_config(None, ["controller.inputs=zch", "controller.bias=false"])
    p = C.controller_from_config(jax.random.PRNGKey(0), doom.controller, "takecover", 64, 512)
    assert C.num_params(p) == 1088 and set(p) == {"w"}
    hid = load_config(None, ["env.name=carracing", "controller.inputs=z", "controller.hidden=40"])
    p = C.controller_from_config(jax.random.PRNGKey(0), hid.controller, "carracing", 32, 256)
    assert C.num_params(p) == 32 * 40 + 40 + 40 * 3 + 3


def test_features_and_action_mapping():
    s = mdnrnn.LSTMState(jnp.full((2,), 5.0), jnp.full((2,), 7.0))
    np.testing.assert_array_equal(C.features(jnp.ones(1), s, "zch"), [1, 5, 5, 7, 7])
    np.testing.assert_array_equal(C.features(jnp.ones(1), s, "zh"), [1, 7, 7])
    raw = jnp.array([[0.5, 0.0, -2.0], [-1.0, 3.0, 1.0]])
    a = squash_action(raw, "carracing")
    t = np.tanh(np.asarray(raw))
    np.testing.assert_allclose(a[:, 0], t[:, 0], rtol=1e-6)
    np.testing.assert_allclose(a[:, 1], (t[:, 1] + 1) / 2, rtol=1e-6)
    np.testing.assert_allclose(a[:, 2], [0.0, t[1, 2]], rtol=1e-6)
    # TakeCover: tanh(raw) < -1/3 → -1 (left), > 1/3 → +1 (right), else 0; atanh(1/3) = 0.3466.
    raw = jnp.array([[-0.40], [-0.30], [0.0], [0.30], [0.40]])
    np.testing.assert_array_equal(squash_action(raw, "takecover")[:, 0], [-1, 0, 0, 0, 1])
    lin = {"w": jnp.array([[1.0], [2.0]]), "b": jnp.array([0.5])}
    np.testing.assert_allclose(C.act(lin, jnp.array([1.0, 1.0])), [3.5])


def second_model(params):
    """A second M (other weights, episodes end at other steps) and rebuild(dyn): the world's dream with models dyn
    beside M."""
    m2 = mdnrnn.init_params(jax.random.PRNGKey(9), Z, A, H, K)
    m2["head"]["b"] = m2["head"]["b"].at[-1].set(-0.5)
    return m2, lambda dyn: dream.make_params(params.mdn, params.init_mu, params.init_logvar, tau=1.0, max_steps=CAP,
                                             kind="carracing", dyn=dyn)


def test_dynamics_ensemble_runs_each_trial_in_its_models_dream(world):
    """es.dream_models: trial i runs in model i mod E's dream (model 0 is M) while C reads M. An ensemble {M, M}
    equals the plain dream; in {M, M2} the even trials equal M's dream and the odd ones M2's (same trial keys; C
    here reads z only, so M2's dream alone is the reference), and M2's dream differs from M's."""
    params, ctrl, roll = world
    key = jax.random.PRNGKey(21)
    m2, rebuild = second_model(params)
    plain = roll(ctrl, key, params, True)
    twice = roll(ctrl, key, rebuild([params.mdn]), True)
    np.testing.assert_allclose(np.asarray(twice.returns), np.asarray(plain.returns), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(twice.lengths), np.asarray(plain.lengths))
    ctrl_z = {**ctrl, "w": ctrl["w"].at[:, Z:].set(0.0)}  # [P, Z + H, A]: C ignores M's state
    ens = rebuild([m2])
    assert dream.n_dynamics(ens) == 2 and dream.n_dynamics(params) == 1
    both = roll(ctrl_z, key, ens, True)
    only_m = roll(ctrl_z, key, params, True)
    only_m2 = roll(ctrl_z, key, params.replace(mdn=m2), True)
    for got, want in ((both.returns[:, 0::2], only_m.returns[:, 0::2]),
                      (both.returns[:, 1::2], only_m2.returns[:, 1::2])):
        np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(both.lengths[:, 1::2]), np.asarray(only_m2.lengths[:, 1::2]))
    assert not np.allclose(np.asarray(only_m2.returns), np.asarray(only_m.returns))
    # The recorded episode of trial 1 runs in model 1 too.
    c0 = jax.tree.map(lambda x: x[0], ctrl_z)
    _, r, alive = dream_batch.episode(c0, key, ens, CAP, inputs="zh", env_name="carracing", trials=TRIALS, trial=1)
    np.testing.assert_allclose(float(jnp.sum(r * alive)), float(both.returns[0, 1]), rtol=1e-4, atol=1e-4)


def test_held_out_dream_runs_every_trial_in_the_other_model(world):
    """dream.held_out (es.select_model): every trial runs in model 1's dream while C reads M -- with C blind to
    M's state that is M2's own dream, trial for trial; in {M, M} it is M's dream. No other model: an error."""
    params, ctrl, roll = world
    key = jax.random.PRNGKey(23)
    m2, rebuild = second_model(params)
    ctrl_z = {**ctrl, "w": ctrl["w"].at[:, Z:].set(0.0)}
    held = dream.held_out(rebuild([m2]))
    np.testing.assert_array_equal(np.asarray(dream.trial_models(held, 4)), [1, 1, 1, 1])
    got, want = roll(ctrl_z, key, held, True), roll(ctrl_z, key, params.replace(mdn=m2), True)
    np.testing.assert_allclose(np.asarray(got.returns), np.asarray(want.returns), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(np.asarray(got.lengths), np.asarray(want.lengths))
    assert not np.allclose(np.asarray(got.returns), np.asarray(roll(ctrl_z, key, params, True).returns))
    same = roll(ctrl, key, dream.held_out(rebuild([params.mdn])), True)  # C reads M here: M's dream exactly
    np.testing.assert_allclose(np.asarray(same.returns), np.asarray(roll(ctrl, key, params, True).returns),
                               rtol=1e-5, atol=1e-5)
    _, r, alive = dream_batch.episode(jax.tree.map(lambda x: x[0], ctrl_z), key, held, CAP, inputs="zh",
                                env_name="carracing", trials=TRIALS, trial=0)
    np.testing.assert_allclose(float(jnp.sum(r * alive)), float(got.returns[0, 0]), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="held-out dream needs another dynamics model"):
        dream.held_out(params)


def test_dynamics_ensemble_rejects_a_model_of_another_shape(world):
    params, _, _ = world
    other = mdnrnn.init_params(jax.random.PRNGKey(9), Z, A, H + 1, K)
    with pytest.raises(ValueError, match="dynamics model 2 has weights"):
        dream.make_params(params.mdn, params.init_mu, params.init_logvar, kind="carracing", dyn=[params.mdn, other])


def test_compacted_rollout_plays_the_same_episodes_on_fewer_slots(world):
    levels = 3  # 12 slots -> 6 -> 3 -> 1 (dream_batch.compact_sizes)
    params, ctrl, roll = world
    run = jax.jit(lambda c, k, p, n: dream_batch.rollout(c, k, p, TRIALS, inputs="zh", env_name="carracing", chunk=2,
                                                         compact=n), static_argnums=3)
    # A done bias of -0.6: episodes end after 3-10 steps, so the batch of 12 halves on the way
    params = params.replace(mdn={**params.mdn, "head": {**params.mdn["head"],
                                                        "b": params.mdn["head"]["b"].at[-1].set(-0.6)}})
    for seed in range(3):
        key = jax.random.PRNGKey(30 + seed)
        plain, res = run(ctrl, key, params, 0), run(ctrl, key, params, levels)
        np.testing.assert_array_equal(np.asarray(res.lengths), np.asarray(plain.lengths))
        np.testing.assert_allclose(np.asarray(res.returns), np.asarray(plain.returns), rtol=1e-5, atol=1e-5)
        assert int(res.steps_run) == int(plain.steps_run)
        assert int(plain.slot_steps) == POP * TRIALS * int(plain.steps_run)
        assert len(np.unique(np.asarray(plain.lengths))) > 2
        assert int(res.slot_steps) < int(plain.slot_steps)  # ended episodes stopped costing steps


def test_compaction_needs_the_early_exit(world):
    params, ctrl, _ = world
    with pytest.raises(ValueError, match="early_exit"):
        dream_batch.rollout(ctrl, jax.random.PRNGKey(0), params, TRIALS, inputs="zh", env_name="carracing",
                      early_exit=False, compact=1)


def test_compact_sizes_shrink_by_the_ratio_in_device_multiples():
    assert dream_batch.compact_sizes(12, 3) == [12, 6, 3, 1]
    assert dream_batch.compact_sizes(2560, 4, 0.75, 4) == [2560, 1920, 1440, 1080, 808]
    assert dream_batch.compact_sizes(8, 5, 0.5, 4) == [8, 4]  # 2 slots would not split over 4 devices
    assert dream_batch.compact_sizes(3, 2, 0.2) == [3]
    assert dream_batch.compact_sizes(64, 0) == [64]


def test_one_batch_across_taus_plays_each_taus_own_episodes(world):
    """rollout_taus: three τ, each with its own key, controllers and end-probability scale (long, medium, short
    episodes), in one batch that shrinks by 3/4 whichever τ the ended slots belong to. Each τ's lengths and returns
    are those of its own uncompacted rollout, on fewer slot-steps than the three rollouts computed."""
    params, _, _ = world
    params = dream.make_params(params.mdn, params.init_mu, params.init_logvar, max_steps=CAP, kind="carracing",
                               done_mode="bernoulli")
    taus, scales = jnp.array([0.5, 1.0, 1.6]), jnp.array([0.03, 0.15, 0.6])
    keys = jax.random.split(jax.random.PRNGKey(40), 3)
    ctrls = jax.vmap(lambda k: jax.vmap(lambda kk: C.init_controller(kk, Z + H, A, scale=1.0))(
        jax.random.split(k, POP)))(jax.random.split(jax.random.PRNGKey(41), 3))  # [3, POP, ...]
    sizes = dream_batch.compact_sizes(3 * POP * TRIALS, 3, 0.75)
    flat = jax.jit(lambda c, k, p: dream_batch.rollout_taus(c, k, p, TRIALS, inputs="zh", env_name="carracing",
                                                            sizes=sizes, chunk=2))
    res = flat(ctrls, keys, params.replace(tau=taus, done_scale=scales))
    one = jax.jit(lambda c, k, p: dream_batch.rollout(c, k, p, TRIALS, inputs="zh", env_name="carracing", chunk=2))
    refs = [one(jax.tree.map(lambda x: x[i], ctrls), keys[i], params.replace(tau=taus[i], done_scale=scales[i]))
            for i in range(3)]
    for i, ref in enumerate(refs):
        np.testing.assert_array_equal(np.asarray(res.lengths[i]), np.asarray(ref.lengths))
        np.testing.assert_allclose(np.asarray(res.returns[i]), np.asarray(ref.returns), rtol=1e-5, atol=1e-5)
    mean_len = [float(r.lengths.mean()) for r in refs]
    assert mean_len[0] > 2 * mean_len[2] and int(refs[0].steps_run) > int(refs[2].steps_run)  # τ differ
    assert np.all(np.asarray(res.steps_run) == max(int(r.steps_run) for r in refs))
    assert int(res.slot_steps.sum()) < sum(int(r.slot_steps) for r in refs)
    with pytest.raises(ValueError, match="must start at"):
        dream_batch.rollout_taus(ctrls, keys, params.replace(tau=taus), TRIALS, inputs="zh", env_name="carracing",
                           sizes=[12, 6])


def test_dropout_dream_holds_one_mask_per_episode_and_c_reads_the_unmasked_state(world):
    """head_dropout: reset draws the episode's mask (same start as without it), every step keeps it, the dropped
    units never reach the head, C's observation is M's unmasked state, and the batched loop carries each trial's
    mask exactly as the python loop does."""
    params, ctrl, roll = world
    drop = dream.make_params(params.mdn, params.init_mu, params.init_logvar, tau=1.0, max_steps=CAP, kind="carracing",
                             head_dropout=0.5)
    _, s_a = dream.reset(jax.random.PRNGKey(3), drop)
    _, s_plain = dream.reset(jax.random.PRNGKey(3), params)
    mask = np.asarray(s_a.head_mask)
    assert set(np.unique(mask)) == {0.0, 2.0} and s_plain.head_mask.shape == (0,)
    assert not np.array_equal(mask, dream.reset(jax.random.PRNGKey(4), drop)[1].head_mask)  # per episode
    np.testing.assert_array_equal(s_a.z, s_plain.z)
    noise, a = dream.step_noise(jax.random.PRNGKey(5), Z), jnp.array([0.1, 0.5, 0.0])
    step = jax.jit(dream.step_with_noise)
    obs, s1, *_ = step(noise, s_a, a, drop)
    obs_plain, *_ = step(noise, s_plain, a, params)
    np.testing.assert_array_equal(s1.head_mask, mask)
    np.testing.assert_allclose(obs.lstm.h, obs_plain.lstm.h, rtol=1e-6)
    loud = {**params.mdn, "head": {**params.mdn["head"],
                                   "w": jnp.where(jnp.asarray(mask == 0)[:, None], 1e3, params.mdn["head"]["w"])}}
    np.testing.assert_array_equal(step(noise, s_a, a, drop.replace(mdn=loud))[0].z, obs.z)
    assert not np.allclose(step(noise, s_plain, a, params.replace(mdn=loud))[0].z, obs_plain.z)
    key = jax.random.PRNGKey(11)
    res = roll(ctrl, key, drop, True)
    ref_ret, ref_len = _reference_returns(drop, ctrl, key)
    np.testing.assert_array_equal(np.asarray(res.lengths), ref_len)
    np.testing.assert_allclose(np.asarray(res.returns), ref_ret, rtol=1e-5, atol=1e-5)
    assert not np.allclose(np.asarray(res.returns), np.asarray(roll(ctrl, key, params, True).returns))
    with pytest.raises(ValueError, match="head_dropout"):
        dream.make_params(params.mdn, params.init_mu, params.init_logvar, head_dropout=1.0)
