"""M (wm_jax.models.mdnrnn, wm_jax.train.mdnrnn): NLL, temperature sampling, scan/VJP equivalences, training."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_sequences import write_synthetic

from wm_jax.config import load_config
from wm_jax.models import lstm as LSTM
from wm_jax.models import mdnrnn as M
from wm_jax.parallel import make_mesh, replicate, shard_batch

# ---------------------------------------------------------------- NLL and sampling


def _mixture(log_w, mu, log_sigma) -> M.MDNOutput:
    log_w = jnp.asarray(log_w, jnp.float32)
    z_shape = log_w.shape[:-1]
    return M.MDNOutput(jax.nn.log_softmax(log_w, -1), jnp.asarray(mu, jnp.float32),
                       jnp.asarray(log_sigma, jnp.float32), jnp.zeros(z_shape[:-1]), jnp.zeros(z_shape[:-1]))


def test_nll_matches_numpy_density():
    rng = np.random.default_rng(0)
    logits, mu, ls = rng.normal(size=(2, 3, 4)), rng.normal(size=(2, 3, 4)), 0.5 * rng.normal(size=(2, 3, 4))
    z = rng.normal(size=(2, 3))
    w = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    sd = np.exp(ls)
    dens = (w * np.exp(-0.5 * ((z[..., None] - mu) / sd) ** 2) / (sd * np.sqrt(2 * np.pi))).sum(-1)
    got = jax.jit(M.mdn_nll)(_mixture(logits, mu, ls), jnp.asarray(z, jnp.float32))
    np.testing.assert_allclose(np.asarray(got), -np.log(dens), rtol=1e-5, atol=1e-5)
    # the head's columns: (logits, mu, log_sigma) blocks, each component-major [K, Z], then reward, done
    p = {"head": {"w": jnp.zeros((1, 3 * 2 * 3 + 2)), "b": jnp.arange(3 * 2 * 3 + 2, dtype=jnp.float32)}}
    out = jax.jit(M.mdn_head, static_argnums=2)(p, jnp.zeros((1,)), 3)
    np.testing.assert_allclose(out.mu, np.arange(6, 12).reshape(2, 3).T)  # MDNOutput is [Z, K]
    np.testing.assert_allclose(out.log_sigma, np.arange(12, 18).reshape(2, 3).T)
    np.testing.assert_allclose(out.log_pi[0], np.log(np.exp([0, 3]) / np.exp([0, 3]).sum()), rtol=1e-5)
    assert float(out.reward) == 18 and float(out.done_logit) == 19
    np.testing.assert_allclose(np.exp(out.log_pi).sum(-1), 1.0, rtol=1e-6)


_sample_many = jax.jit(jax.vmap(M.sample_z, in_axes=(0, None, None)))  # one compile: all callers use Z=2, K=3
N_SAMPLES = 20_000


def test_low_temperature_picks_the_likeliest_component_mean():
    w = np.log([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]])
    mu = np.array([[-3.0, 1.0, 4.0], [2.0, -1.0, 0.5]])
    out = _mixture(w, mu, np.full((2, 3), np.log(0.1)))
    z = np.asarray(_sample_many(jax.random.split(jax.random.key(0), N_SAMPLES), out, 0.01))
    np.testing.assert_allclose(z, np.broadcast_to([1.0, 2.0], z.shape), atol=0.05)


def test_unit_temperature_matches_mixture_moments():
    w = np.array([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]])
    mu = np.array([[-3.0, 1.0, 4.0], [2.0, -1.0, 0.5]])
    sd = np.array([[0.5, 1.0, 0.3], [0.2, 2.0, 1.0]])
    out = _mixture(np.log(w), mu, np.log(sd))
    n = N_SAMPLES
    z = np.asarray(_sample_many(jax.random.split(jax.random.key(1), n), out, 1.0))
    mean = (w * mu).sum(-1)
    var = (w * (sd**2 + mu**2)).sum(-1) - mean**2
    assert np.all(np.abs(z.mean(0) - mean) < 5 * np.sqrt(var / n)), (z.mean(0), mean)
    np.testing.assert_allclose(z.var(0), var, rtol=0.05)
    # τ scales both the mixture logits and σ: at τ = 2 the variance of a 1-component mixture doubles
    one = _mixture(np.zeros((2, 3)), np.zeros((2, 3)), np.zeros((2, 3)))  # three equal N(0, 1): one Gaussian
    z2 = np.asarray(_sample_many(jax.random.split(jax.random.key(2), n), one, 2.0))
    np.testing.assert_allclose(z2.var(0), [2.0, 2.0], rtol=0.05)


def test_component_choice_is_independent_per_dimension_and_tau_vmaps():
    out = _mixture(np.array([[0.0, 0.0, -40.0]] * 2), np.array([[-5.0, 5.0, 0.0]] * 2), np.full((2, 3), np.log(0.1)))
    z = np.asarray(_sample_many(jax.random.split(jax.random.key(3), N_SAMPLES), out, 1.0)) > 0
    for a in (False, True):
        for b in (False, True):
            assert abs(np.mean((z[:, 0] == a) & (z[:, 1] == b)) - 0.25) < 0.02
    taus = jnp.array([0.01, 1.0])
    zt = jax.jit(jax.vmap(M.sample_z, in_axes=(None, None, 0)))(jax.random.key(4), out, taus)
    np.testing.assert_allclose(zt[1], _sample_many(jax.random.key(4)[None], out, 1.0)[0], rtol=1e-6)


# ---------------------------------------------------------------- scan and gradient equivalences

B, T, Z, A, H, K = 3, 7, 4, 1, 8, 2
_step = jax.jit(M.lstm_step)


@jax.jit
def _step_scores(params, s, keep, x, z_next, reward, done, head_mask=1.0):
    """One hand-written training step: reset, LSTM, head (on h · head_mask); per-sample NLL (mean over Z), squared
    error, logit."""
    s = M.lstm_step(params, M.LSTMState(s.c * keep, s.h * keep), x)
    out = M.mdn_head(params, s.h * head_mask, Z)
    return s, M.mdn_nll(out, z_next).mean(-1), (out.reward - reward) ** 2, out.done_logit


@pytest.fixture(scope="module")
def params():
    return jax.jit(M.init_params, static_argnums=(1, 2, 3, 4, 5))(jax.random.key(0), Z, A, H, K, True)


def _batch(key, b=B, t=T):
    ks = jax.random.split(key, 5)
    return {"mu": jax.random.normal(ks[0], (b, t + 1, Z)), "logvar": jax.random.normal(ks[1], (b, t + 1, Z)) - 2,
            "actions": jax.random.normal(ks[2], (b, t, A)), "rewards": jax.random.normal(ks[3], (b, t)),
            "dones": (jax.random.uniform(ks[4], (b, t)) > 0.7).astype(jnp.float32),
            "mask": jnp.ones((b, t)).at[0, 5:].set(0.0),
            "restart": jnp.zeros((b, t)).at[:, 0].set(1.0).at[1, 4].set(1.0)}


def test_unroll_equals_step_loop_with_resets(params):
    x = jax.random.normal(jax.random.key(1), (B, T, Z + A + 1))
    reset = jnp.zeros((B, T)).at[2, 3].set(1.0)
    s0 = M.LSTMState(jax.random.normal(jax.random.key(2), (B, H)), jax.random.normal(jax.random.key(3), (B, H)))
    both = jax.jit(lambda p, s, x, r: (LSTM.unroll(p, s, x, r), LSTM.unroll(p, s, x, r, scan_unroll=3)[1]))
    (final, hs), hs3 = both(params, s0, x, reset)
    s, loop = s0, []
    for t in range(T):
        keep = (1.0 - reset[:, t])[:, None]
        s = _step(params, M.LSTMState(s.c * keep, s.h * keep), x[:, t])
        loop.append(s.h)
    np.testing.assert_allclose(hs, jnp.stack(loop, 1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(final.c, s.c, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(hs3, hs, rtol=1e-5, atol=1e-6)


def test_custom_vjp_equals_autodiff(params):
    ks = jax.random.split(jax.random.key(5), 6)
    w_h = params["lstm"]["w_h"]
    xp = jax.random.normal(ks[0], (T, B, 4 * H))
    keep = jnp.ones((T, B)).at[3, 1].set(0.0)
    h0, c0 = jax.random.normal(ks[1], (B, H)), jax.random.normal(ks[2], (B, H))
    cot = (jax.random.normal(ks[3], (T, B, H)), jax.random.normal(ks[4], (B, H)), jax.random.normal(ks[5], (B, H)))

    def obj(fn):
        def f(w, x, h, c):
            return sum((o * ct).sum() for o, ct in zip(fn(w, x, keep, h, c), cot))
        return f

    g_custom, g_ref = jax.jit(lambda *a: (jax.grad(obj(M.lstm_scan), (0, 1, 2, 3))(*a),
                                          jax.grad(obj(M.lstm_scan_reference), (0, 1, 2, 3))(*a)))(w_h, xp, h0, c0)
    for a, b in zip(g_custom, g_ref):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    batch = _batch(jax.random.key(6))
    loss = lambda p, cg: M.sequence_loss(p, batch, jax.random.key(7), restart_flag=True,  # noqa: E731
                                         done_pos_weight=10.0, custom_grad=cg, head_dropout=0.25)[0]
    ga, gb = jax.jit(lambda p: (jax.grad(loss)(p, True), jax.grad(loss)(p, False)))(params)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), ga, gb)
    assert float(jnp.abs(ga["lstm"]["w_h"]).max()) > 0


@pytest.mark.parametrize("t", [T, 70])  # one backward chunk; five chunks of 14 steps
def test_scan_with_projection_inside_equals_projected_scan_and_its_autodiff(params, t):
    """lstm_scan_inputs (x @ W_x + b formed step by step in the scan, weight gradients per backward chunk) ==
    lstm_scan_reference of the projected inputs, in outputs and in the gradients of W_x, b, W_h, x, h0, c0."""
    ks = jax.random.split(jax.random.key(9), 6)
    lp = params["lstm"]
    x = jax.random.normal(ks[0], (t, B, Z + A + 1))
    keep = jnp.ones((t, B)).at[3, 1].set(0.0).at[5, 0].set(0.0).at[t // 2, 2].set(0.0)
    h0, c0 = jax.random.normal(ks[1], (B, H)), jax.random.normal(ks[2], (B, H))
    cot = (jax.random.normal(ks[3], (t, B, H)), jax.random.normal(ks[4], (B, H)), jax.random.normal(ks[5], (B, H)))

    def obj(fused):
        def f(w_x, b, w_h, x, h, c):
            out = (M.lstm_scan_inputs(w_x, b, w_h, x, keep, h, c) if fused else
                   M.lstm_scan_reference(w_h, x @ w_x + b, keep, h, c))
            return sum((o * ct).sum() for o, ct in zip(out, cot)), out
        return f

    args = (lp["w_x"], lp["b"], lp["w_h"], x, h0, c0)
    run = jax.jit(lambda *a: [jax.grad(obj(fu), tuple(range(6)), has_aux=True)(*a) for fu in (True, False)])
    (g_fused, out_fused), (g_ref, out_ref) = run(*args)
    for a, b in zip((*out_fused, *g_fused), (*out_ref, *g_ref)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    assert float(jnp.abs(g_fused[0]).max()) > 0


@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_loss_pairs_input_t_with_targets_of_step_t(params, dropout):
    """sequence_loss == a hand-written loop: state after input [z_t, a_t, restart_t] scores z_{t+1}, r_t, done_t;
    with head dropout, the head reads h through one mask per window (drawn from the key folded with 1)."""
    batch = _batch(jax.random.key(8))
    key = jax.random.key(9)
    loss, aux = jax.jit(lambda p, b, k: M.sequence_loss(p, b, k, restart_flag=True, done_pos_weight=3.0,
                                                        reward_weight=0.5, done_weight=2.0,
                                                        head_dropout=dropout))(params, batch, key)
    b = jax.tree.map(np.asarray, batch)
    z = np.asarray(M.sample_latents(key, batch["mu"], batch["logvar"]))
    mask = np.ones((B, H), np.float32)
    if dropout:
        mask = np.asarray(M.dropout_mask(jax.random.fold_in(key, 1), dropout, (B, H)))
        assert set(np.unique(mask)) == {0.0, 2.0} and (mask == 0).sum(1).min() > 0  # every window drops units
    s, nll, rse, bce = M.zero_state(H, (B,)), 0.0, 0.0, 0.0
    for t in range(T):
        keep = (1.0 - b["restart"][:, t])[:, None]
        x = np.concatenate([z[:, t], b["actions"][:, t], b["restart"][:, t, None]], -1)
        s, nll_t, se_t, lg = _step_scores(params, s, keep, x, z[:, t + 1], b["rewards"][:, t], b["dones"][:, t],
                                          mask)
        m = b["mask"][:, t]
        nll += (np.asarray(nll_t) * m).sum()
        rse += (np.asarray(se_t) * m).sum()
        lg, d = np.asarray(lg, np.float64), b["dones"][:, t]
        bce += ((-3.0 * d * np.log(1 / (1 + np.exp(-lg))) - (1 - d) * np.log(1 - 1 / (1 + np.exp(-lg)))) * m).sum()
    n = b["mask"].sum()
    np.testing.assert_allclose([aux["nll"], aux["reward_mse"], aux["done_bce"]], [nll / n, rse / n, bce / n],
                               rtol=1e-4)
    np.testing.assert_allclose(loss, (nll + 0.5 * rse + 2.0 * bce) / n, rtol=1e-4)


def test_chunked_head_losses_equal_autodiff_for_each_loss(params):
    """mdn_loss.head_losses (head, NLL, reward, done in chunks of whole steps, gradients formed in the forward)
    == mdn_head + mdn_nll + squared error + BCE under plain autodiff: the three values, and the gradients of w, b
    and h for each loss alone and for a weighted sum (cotangents on all three outputs), over several chunks with
    masked steps."""
    from wm_jax.models import mdn_loss

    t, b = 600, 4
    assert mdn_loss.steps_per_chunk(t, b) == 200  # three chunks
    ks = jax.random.split(jax.random.key(12), 5)
    h = jax.random.normal(ks[0], (t, b, H))
    z_next, reward = jax.random.normal(ks[1], (t, b, Z)), jax.random.normal(ks[2], (t, b))
    done = (jax.random.uniform(ks[3], (t, b)) > 0.9).astype(jnp.float32)
    mask = (jax.random.uniform(ks[4], (t, b)) > 0.2).astype(jnp.float32)
    w, bias = params["head"]["w"], params["head"]["b"]

    def plain(w, bias, h):
        out = M.mdn_head({"head": {"w": w, "b": bias}}, h, Z)
        n = mask.sum()
        bce = M.bce_with_logits(out.done_logit, done, 4.0)
        return ((M.mdn_nll(out, z_next).mean(-1) * mask).sum() / n, ((out.reward - reward) ** 2 * mask).sum() / n,
                (bce * mask).sum() / n)

    def chunked(w, bias, h):
        return mdn_loss.head_losses(w, bias, h, z_next, reward, done, mask, Z, 4.0)

    run = jax.jit(lambda c: [jax.grad(lambda *a: sum(ci * li for ci, li in zip(c, f(*a))), (0, 1, 2))(w, bias, h)
                             for f in (chunked, plain)])
    np.testing.assert_allclose(jax.jit(chunked)(w, bias, h), jax.jit(plain)(w, bias, h), rtol=1e-5)
    for c in ([1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.5, 2.0]):
        got, want = run(jnp.asarray(c))
        for a, e in zip(got, want):
            np.testing.assert_allclose(a, e, rtol=2e-4, atol=1e-6)
            assert float(jnp.abs(e).max()) > 0


def test_flops_per_timestep_carracing():
    f = M.flops_per_timestep(32, 3, 256, 5)
    assert f["forward"] == 2 * 35 * 1024 + 2 * 256 * 1024 + 2 * 256 * 482
    assert abs(f["train"] - 2.53e6) < 0.01e6  # the issue's ~2.5 MFLOP per training timestep


# ---------------------------------------------------------------- training

OVERRIDES = ["name=run", "env.name=takecover", f"vae.z_dim={Z}", f"mdnrnn.hidden={H}", f"mdnrnn.mixtures={K}",
             "mdnrnn.seq_len=6", "mdnrnn.batch_size=4", "mdnrnn.steps=4", "mdnrnn.checkpoint_every=2",
             "mdnrnn.log_every=1", "mdnrnn.holdout_episodes=2", "mdnrnn.restart_flag=true"]
LENGTHS = [9, 5, 12, 7, 3, 10, 8, 6]


def _cfg(root, *extra):
    cfg = load_config(None, [f"root={root}", *OVERRIDES, *extra])
    write_synthetic(cfg.data_dir, LENGTHS)
    return cfg


def test_sharded_step_equals_single_device(params):
    from wm_jax.train.mdnrnn import cached_train_step, make_optimizer

    m = load_config(None, OVERRIDES).mdnrnn
    opt = make_optimizer(m)
    batch = jax.tree.map(np.asarray, _batch(jax.random.key(10), b=4))
    outs = []
    for devs in (jax.devices()[:1], jax.devices()[:4]):
        assert len(devs) == (1 if len(outs) == 0 else 4)
        mesh = make_mesh(devs)
        step = cached_train_step(m, tuple(devs))  # the 1-device one is reused by the training test
        p = replicate(jax.tree.map(jnp.copy, params), mesh)
        outs.append(step(p, replicate(opt.init(params), mesh), shard_batch(batch, mesh), jax.random.key(11)))
    (p1, _, m1), (p4, _, m4) = outs
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), p1, p4)
    np.testing.assert_allclose(m1["loss"], m4["loss"], rtol=1e-5)
    assert not np.allclose(p1["lstm"]["w_h"], params["lstm"]["w_h"])  # the step did move the weights


def test_train_resume_equals_uninterrupted_and_reports(tmp_path):
    from wm_jax.io import load_mdnrnn
    from wm_jax.train.mdnrnn import train

    one = jax.devices()[:1]
    cfg_a = _cfg(tmp_path / "a")
    full = train(cfg_a, devices=one, plots=True, progress=False)
    cfg_b = _cfg(tmp_path / "b")
    part = train(cfg_b, devices=one, plots=False, progress=False, stop_after=2)  # "killed" after checkpoint 2
    assert part == {"step": 2} and not (cfg_b.run_dir / "mdnrnn" / "DONE").exists()
    train(cfg_b, devices=one, plots=False, progress=False)  # the same command again resumes at step 2
    pa, pb = load_mdnrnn(cfg_a.run_dir), load_mdnrnn(cfg_b.run_dir)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7), pa, pb)
    recs = [json.loads(x) for x in (cfg_b.run_dir / "mdnrnn" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == [1, 2, 3, 4]
    held = json.loads((cfg_a.run_dir / "mdnrnn" / "heldout.json").read_text())
    assert len(held["nll_per_dim"]) == Z and held["steps"] == 8 + 6 and held["deaths"] == 1  # episodes 6, 7
    assert full["heldout"]["nll_mean"] == pytest.approx(np.mean(held["nll_per_dim"]), abs=1e-4)
    assert (cfg_a.run_dir / "mdnrnn" / "DONE").exists()
    assert (cfg_a.run_dir / "plots" / "mdnrnn_pred_vs_actual.png").stat().st_size > 1000


def test_heldout_done_metrics_follow_the_done_horizon(tmp_path):
    """Held-out precision/recall compare the head with its own target: with done_horizon=3 the one held-out death
    (an episode of 8 or 6 steps) contributes 3 positive steps, with the default 1 step."""
    from wm_jax.data.dataset import open_dataset
    from wm_jax.train.mdnrnn import init_model
    from wm_jax.train.mdnrnn_eval import evaluate_heldout

    for k, want in ((1, 1), (3, 3)):
        cfg = _cfg(tmp_path / f"h{k}", f"mdnrnn.done_horizon={k}")
        ds = open_dataset(cfg.data_dir)
        _, held = ds.split(cfg.mdnrnn.holdout_episodes)
        metrics, _ = evaluate_heldout(cfg, init_model(cfg, jax.random.key(0)), held)
        assert metrics["deaths"] == 1 and metrics["done_positives"] == want, metrics
        assert metrics["done_true_pos"] + metrics["done_false_neg"] == want


def test_nan_guard_names_the_step(tmp_path):
    from wm_jax.train.mdnrnn import train

    cfg = _cfg(tmp_path, "mdnrnn.learning_rate=1.0e+30", "mdnrnn.grad_clip=1.0e+30", "mdnrnn.steps=6")
    with pytest.raises(FloatingPointError, match=r"diverged at step \d"):
        train(cfg, devices=jax.devices()[:1], plots=False, progress=False)


def test_ensemble_member_trains_beside_m_with_its_own_init_and_batches(tmp_path):
    """`train-mdnrnn --member 1` (es.dream_models): its own folder, its own weights; M's folder and plots untouched;
    loading a member that was never trained names the command to run."""
    from wm_jax.io import load_mdnrnn, member_dir
    from wm_jax.train.mdnrnn import train

    one = jax.devices()[:1]
    cfg = _cfg(tmp_path)
    train(cfg, devices=one, plots=True, progress=False)
    m0_files = {p.name: p.stat().st_mtime_ns for p in (cfg.run_dir / "plots").iterdir()}
    with pytest.raises(FileNotFoundError, match="train-mdnrnn --member 1"):
        load_mdnrnn(cfg.run_dir, member=1)
    train(cfg, devices=one, plots=True, progress=False, member=1)
    assert member_dir(cfg.run_dir, 1) == cfg.run_dir / "mdnrnn_1" and (cfg.run_dir / "mdnrnn_1" / "DONE").exists()
    p0, p1 = load_mdnrnn(cfg.run_dir), load_mdnrnn(cfg.run_dir, member=1)
    assert jax.tree.map(jnp.shape, p0) == jax.tree.map(jnp.shape, p1)
    assert not np.allclose(p0["lstm"]["w_h"], p1["lstm"]["w_h"])
    assert {p.name: p.stat().st_mtime_ns for p in (cfg.run_dir / "plots").iterdir()} == m0_files
