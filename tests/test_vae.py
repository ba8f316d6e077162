"""V: parameter count, hand-computed loss, chunked encode == one pass, sharded == single device, resume after a
kill == uninterrupted run, NaN guard, encode shapes and skipping (plans and formulations: tests/test_conv.py)."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wm_jax.config import load_config
from wm_jax.data.shards import Episode, episode_record, write_episode, write_manifest
from wm_jax.models import vae as V
from wm_jax.train import vae_loss as L
from wm_jax.parallel import make_mesh

Z = 8  # small latent for the training tests (the architecture test uses the paper's 32)
B = 8  # batch: divisible by the 4 forced host devices


def make_data(data_dir: Path, n: int = 5, T: int = 19, seed: int = 0) -> None:
    """n synthetic episodes of T steps in the on-disk format (blocky random frames)."""
    rng = np.random.default_rng(seed)
    (data_dir / "episodes").mkdir(parents=True, exist_ok=True)
    recs = []
    for i in range(n):
        base = rng.integers(0, 256, (1, 8, 8, 3)).repeat(8, 1).repeat(8, 2)
        frames = np.clip(base + rng.integers(-20, 20, (T + 1, 64, 64, 3)), 0, 255).astype(np.uint8)
        ep = Episode(frames, rng.uniform(-1, 1, (T, 1)).astype(np.float32), np.ones(T, np.float32),
                     np.eye(T, dtype=bool)[-1], np.zeros(T, bool), 100 + i)
        write_episode(data_dir / "episodes" / f"ep_{i:06d}.npz", ep)
        recs.append(episode_record(i, ep))
    write_manifest(data_dir, "takecover", 1, recs)


def run_cfg(root: Path, name: str, *extra: str):
    cfg = load_config(None, [f"root={root}", f"name={name}", f"vae.z_dim={Z}", f"vae.batch_size={B}",
                             "vae.max_steps=4", "vae.checkpoint_every=2", "vae.log_every=1",
                             "vae.holdout_episodes=1", "vae.encode_batch_size=16", *extra])
    make_data(cfg.data_dir)
    return cfg


# ---------------------------------------------------------------- architecture and loss


def test_parameter_count_and_flops():
    params = V.param_shapes(32)
    assert V.count_params(params) == 4_348_547
    shapes = {k: v["kernel"].shape for k, v in params.items()}
    assert shapes["enc_conv3"] == (4, 4, 128, 256) and shapes["dec_deconv0"] == (5, 5, 1024, 128)
    # hand count of multiply-adds: convs 31²·48·32 + 14²·512·64 + 6²·1024·128 + 2²·2048·256,
    # heads 2·1024·32 + 32·1024, deconvs 1·25·1024·128 + 25·25·128·64 + 169·36·64·32 + 900·36·32·3
    macs = (31**2 * 48 * 32 + 14**2 * 512 * 64 + 6**2 * 1024 * 128 + 4 * 2048 * 256 + 3 * 32 * 1024
            + 25 * 1024 * 128 + 625 * 128 * 64 + 169 * 36 * 64 * 32 + 900 * 36 * 32 * 3)
    assert V.flops_per_image(32, training=False) == 2 * macs
    assert V.flops_per_image(32) == 6 * macs - 2 * 31**2 * 48 * 32


def test_loss_by_hand():
    x = np.zeros((2, 2, 2, 3), np.float32)  # 12 "pixels" per image
    recon = np.stack([np.full((2, 2, 3), 0.5), np.full((2, 2, 3), 0.1)]).astype(np.float32)
    mu = np.array([[0.0, 0.0], [2.0, 0.0]], np.float32)  # KL: 0 and 0.5·2² = 2
    logvar = np.zeros((2, 2), np.float32)
    # SSE: 12·0.25 = 3 and 12·0.01 = 0.12; floor kl_tolerance·Z = 0.5·2 = 1 lifts image 0's KL to 1
    t = L.loss_terms(x, recon, mu, logvar, 0.5)
    np.testing.assert_allclose(float(t["loss"]), ((3 + 1) + (0.12 + 2)) / 2, rtol=1e-6)
    np.testing.assert_allclose(float(t["kl"]), (0 + 2) / 2, rtol=1e-6)
    np.testing.assert_allclose(float(t["mse"]), (3 + 0.12) / 2 / 12, rtol=1e-6)
    t0 = L.loss_terms(x, recon, mu, logvar, 0.0)  # floor inactive
    np.testing.assert_allclose(float(t0["loss"]), ((3 + 0) + (0.12 + 2)) / 2, rtol=1e-6)
    # with the floor active, image 0's KL gets no gradient; image 1's does: d/dmu 0.5·mu² / 2 images = 1
    g = jax.grad(lambda m: L.loss_terms(x, recon, m, logvar, 0.5)["loss"])(jnp.asarray(mu))
    np.testing.assert_allclose(np.asarray(g), [[0, 0], [1.0, 0]], atol=1e-6)


def test_fireball_weighted_loss_by_hand():
    from wm_jax.envs.frames import fireball_mask

    x = np.zeros((2, 2, 2, 3), np.float32)
    recon = np.full((2, 2, 2, 3), 0.5, np.float32)  # SSE 0.75 per pixel
    mu, logvar = np.zeros((2, 2), np.float32), np.zeros((2, 2), np.float32)
    w = np.ones((2, 2, 2), np.float32)
    w[0, 1, 0] = 11.0  # one pixel of image 0 weighs 11
    t = L.loss_terms(x, recon, mu, logvar, 0.0, jnp.asarray(w))
    np.testing.assert_allclose(float(t["loss"]), ((3 + 10 * 0.75) + 3) / 2, rtol=1e-6)
    np.testing.assert_allclose(float(t["mse"]), 0.25, rtol=1e-6)  # the per-pixel MSE stays unweighted

    frames = np.full((1, 64, 64, 3), 60, np.uint8)  # a dark wall
    frames[0, 10, 20] = (250, 160, 30)  # a fireball pixel in the frame
    painted = np.full((1, 64, 64, 3), 60 / 255, np.float32)
    painted[0, 40, 5] = (240 / 255, 140 / 255, 20 / 255)  # one the reconstruction paints where there is none
    assert fireball_mask(frames).sum() == 1 and np.array_equal(np.asarray(fireball_mask(jnp.asarray(frames), jnp)),
                                                               fireball_mask(frames))
    wf = np.asarray(L.fireball_weights(jnp.asarray(frames), jnp.asarray(painted), 9.0))
    assert wf[0, 10, 20] == 10 and wf[0, 40, 5] == 10 and wf.sum() == 64 * 64 + 2 * 9


# ---------------------------------------------------------------- fast formulations == reference


def test_chunked_encode_equals_one_pass():
    params = V.init_params(jax.random.key(0), Z)
    frames = jnp.asarray(np.random.default_rng(2).integers(0, 256, (23, 64, 64, 3), dtype=np.uint8))
    want = jax.jit(lambda p, x: V.encode(p, x, V.REFERENCE, chunk=0))(params, frames)
    for chunk in (5, 23, 50):  # 4 chunks + a rest of 3; one chunk; more than N
        got = jax.jit(lambda p, x, c=chunk: V.encode(p, x, chunk=c), compiler_options=V.compiler_options())(params, frames)
        assert got[0].shape == (23, Z)
        for a, b in zip(got, want):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5 * float(np.abs(b).max()))


# ---------------------------------------------------------------- data parallel, resume, NaN guard, encode


def test_sharded_step_equals_single_device():
    from wm_jax.config import VAEConfig
    from wm_jax.parallel import replicate
    from wm_jax.train.vae import make_optimizer, make_train_step

    assert len(jax.devices()) == 4, "conftest forces 4 host devices"
    v = VAEConfig(z_dim=Z, batch_size=B)
    params = jax.device_get(V.init_params(jax.random.key(0), Z))  # host copy: the steps donate their inputs
    rng = np.random.default_rng(1)
    batches = [rng.integers(0, 256, (B, 64, 64, 3), dtype=np.uint8) for _ in range(3)]
    key_data = jax.random.key_data(jax.random.key(7))
    out = {}
    for n in (1, 4):
        mesh = make_mesh(jax.devices()[:n])
        step = make_train_step(v, mesh)
        p, s = replicate(params, mesh), replicate(make_optimizer(v).init(params), mesh)
        losses = []
        for i, frames in enumerate(batches):
            p, s, m = step(p, s, frames, key_data, jnp.int32(i))
            losses.append(float(m["loss"]))
        out[n] = (losses, jax.device_get(p))
    np.testing.assert_allclose(out[1][0], out[4][0], rtol=1e-5)
    assert out[1][0][0] != out[1][0][2]  # it trains
    # The 4-device step sums the gradient in another order, and Adam divides by sqrt(v): where a gradient is ~0 its
    # rounding noise becomes an update of up to ~lr. So nearly every weight agrees to float precision and none is
    # further apart than 2 lr per step (a wrong all-reduce moves most of them by ~lr; seen on an AVX2 machine: 1 of
    # 3.3 million weights 1.6e-5 apart).
    leaves = list(zip(jax.tree.leaves(out[1][1]), jax.tree.leaves(out[4][1])))
    close = sum(int(np.isclose(a, b, rtol=1e-4, atol=1e-5).sum()) for a, b in leaves)
    assert close >= 0.9999 * sum(a.size for a, _ in leaves)
    for a, b in leaves:
        np.testing.assert_allclose(a, b, rtol=0, atol=2 * v.learning_rate * len(batches))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One uninterrupted 4-step run and one killed after 3 steps (checkpoint at 2 and 3) then rerun."""
    from wm_jax.train.vae import train

    root = tmp_path_factory.mktemp("vae")
    full, killed = run_cfg(root, "full"), run_cfg(root, "killed")
    s_full = train(full, plots=True, progress=False)
    s_part = train(killed, plots=False, progress=False, stop_after=3)
    s_resumed = train(killed, plots=False, progress=False)
    return full, killed, s_full, s_part, s_resumed


def test_resume_after_kill_matches_uninterrupted(trained):
    from wm_jax.io import load_vae

    full, killed, s_full, s_part, s_resumed = trained
    assert s_part == {"step": 3} and s_resumed["step"] == s_full["step"] == 4
    assert (Path(killed.run_dir) / "vae" / "DONE").exists()
    p_full, z = load_vae(full.run_dir)
    p_res, _ = load_vae(killed.run_dir)
    assert z == Z
    for a, b in zip(jax.tree.leaves(p_full), jax.tree.leaves(p_res)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    recs = [json.loads(line) for line in (Path(killed.run_dir) / "vae" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs if "loss" in r] == [1, 2, 3, 4]  # no step logged twice
    assert 0 < s_full["holdout_mse"] < 1 and s_full["holdout_mse"] == s_resumed["holdout_mse"]
    for name in ("vae_recon.png", "vae_walk.png", "vae_loss.png"):
        assert (Path(full.run_dir) / "plots" / name).stat().st_size > 0
    from wm_jax.train.vae import train

    assert train(full, progress=False)["step"] == 4  # DONE: skipped


def test_nan_guard_names_step_and_keeps_last_checkpoint(tmp_path):
    from wm_jax.checkpoint import Checkpointer
    from wm_jax.io import load_vae
    from wm_jax.train.vae import NonFiniteError, train

    cfg = run_cfg(tmp_path, "nan")
    train(cfg, plots=False, progress=False, stop_after=2)
    good, _ = load_vae(cfg.run_dir)
    bad = cfg.replace(**{"vae.learning_rate": 1e30})  # step 3 blows the weights up; step 4's loss is NaN/inf
    with pytest.raises(NonFiniteError, match=r"at step 4.*last good checkpoint: step 2"):
        train(bad, plots=False, progress=False)
    assert Checkpointer(Path(cfg.run_dir) / "vae").latest_step() == 2
    after, _ = load_vae(cfg.run_dir)
    for a, b in zip(jax.tree.leaves(good), jax.tree.leaves(after)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_encode_shapes_values_and_skip(trained):
    from wm_jax.data.dataset import open_dataset
    from wm_jax.train.encode import encode_dataset
    from wm_jax.io import load_vae

    full = trained[0]
    s1 = encode_dataset(full, progress=False)
    assert (s1["encoded"], s1["skipped"], s1["frames"], s1["vae_step"]) == (5, 0, 100, 4)
    man = json.loads((Path(full.data_dir) / "latents" / "manifest.json").read_text())
    assert man["z_dim"] == Z and man["vae_step"] == 4 and len(man["episodes"]) == 5
    params, _ = load_vae(full.run_dir)
    ds = open_dataset(full.data_dir)
    for i in (0, 4):
        lat = np.load(Path(full.data_dir) / "latents" / f"ep_{i:06d}.npz")
        assert lat["mu"].shape == lat["logvar"].shape == (20, Z) and lat["mu"].dtype == np.float32
        mu, logvar = jax.jit(V.encode, static_argnums=2)(params, ds.load(i).frames, V.REFERENCE)
        np.testing.assert_allclose(lat["mu"], np.asarray(mu), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(lat["logvar"], np.asarray(logvar), rtol=1e-4, atol=1e-5)
    s2 = encode_dataset(full, progress=False)
    assert (s2["encoded"], s2["skipped"]) == (0, 5)


def test_eval_vae_scores_kept_steps_and_names_missing_ones(trained):
    from wm_jax.train.vae_eval import evaluate_vae

    full, s_full = trained[0], trained[2]
    out = evaluate_vae(full)
    assert [r["step"] for r in out["rows"]] == [2, 4]  # vae.checkpoint_every=2
    assert out["rows"][-1]["holdout_mse"] == pytest.approx(s_full["holdout_mse"], rel=1e-6)
    assert out["rows"][0]["holdout_mse"] != out["rows"][-1]["holdout_mse"]
    assert out["rows"][0]["fireball_recall"] is None  # TakeCover data without fireballs: no figure, no NaN
    assert json.loads((Path(full.run_dir) / "vae" / "eval.json").read_text())["rows"] == out["rows"]
    wide = evaluate_vae(full, [4], holdout_episodes=3)
    assert (wide["trained_on"], wide["rows"][0]["holdout_frames"]) == (2, 60)
    other = Path(full.run_dir).parent / "other" / "data"
    make_data(other, seed=1)
    alien = evaluate_vae(full, [4], data_dir=other)
    assert alien["trained_on"] == 0 and alien["path"].endswith("eval_other.json")
    assert evaluate_vae(full, [4], 3, data_dir=trained[1].data_dir)["trained_on"] == 2  # same seeds
    assert alien["rows"][0]["holdout_mse"] != out["rows"][-1]["holdout_mse"]
    with pytest.raises(ValueError, match=r"no V checkpoint at step\(s\) \[7\].*kept steps: \[2, 4\]"):
        evaluate_vae(full, [7])


def test_logvar_init_sets_the_starting_posterior_noise():
    """vae.logvar_init is the encoder's log-variance bias at step 0: sigma = exp(logvar_init / 2) on any frame
    (the log-variance kernel's part stays small at init), and 0 leaves the original's zero bias (sigma ~1)."""
    from wm_jax.train.vae import init_state, make_optimizer

    frames = np.random.default_rng(0).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    sig = {}
    for lv in (0.0, -6.0):
        cfg = load_config(None, ["vae.z_dim=8", f"vae.logvar_init={lv}"])
        params = init_state(cfg, make_optimizer(cfg.vae))["params"]
        np.testing.assert_array_equal(np.asarray(params["enc_logvar"]["bias"]), np.full(8, lv, np.float32))
        sig[lv] = float(np.exp(0.5 * np.asarray(V.encode(params, frames, V.REFERENCE)[1])).mean())
    assert 0.5 < sig[0.0] < 2.0 and 0.02 < sig[-6.0] < 0.1, sig
