"""The residual V (``vae.residual``, Atari): an untrained one paints the playfield, the playfield entry of its params
never trains, travels through checkpoints and ``load_vae``, and its encoder sees a small object far more than the
plain V's does; a tiny residual V trained end to end (background.png = params["playfield"], recall in DONE)."""

from __future__ import annotations

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_foreground import BALL, FIELD, pong_frames, train_on_pong_frames

from wm_jax.config import ConfigError, load_config
from wm_jax.models import vae as V

Z = 8


def playfield_of(frames: np.ndarray) -> np.ndarray:
    """The playfield of pong_frames: the first frame without ball and paddle."""
    bg = frames[0].copy()
    bg[9:60] = FIELD
    return bg


@pytest.fixture(scope="module")
def plain_and_residual():
    plain = V.init_params(jax.random.key(0), Z)
    bg = playfield_of(pong_frames(1))
    return plain, V.make_residual(plain, bg), bg


def test_config_residual_is_atari_only():
    assert load_config(None, []).vae.residual is False
    assert load_config(None, ["env.name=atari", "vae.residual=true"]).vae.residual is True
    with pytest.raises(ConfigError, match="'vae.residual': encodes the frame minus a static playfield"):
        load_config(None, ["env.name=takecover", "vae.residual=true"])
    with pytest.raises(ConfigError, match="'eval.vae_untrained': builds a plain V"):
        load_config(None, ["env.name=atari", "vae.residual=true", "eval.vae_untrained=true"])


def test_make_residual_adds_the_playfield_and_leaves_the_plain_params_alone(plain_and_residual):
    plain, res, bg = plain_and_residual
    assert not V.residual_of(plain) and V.residual_of(res)
    assert set(res) == set(plain) | {"playfield"} and "playfield" not in V.param_shapes(Z)
    np.testing.assert_array_equal(np.asarray(res["playfield"]["image"]), bg.astype(np.float32) / 255.0)
    assert res["playfield"]["image"].dtype == jnp.float32
    assert not np.any(np.asarray(res["dec_deconv3"]["kernel"])) and np.any(np.asarray(plain["dec_deconv3"]["kernel"]))
    with pytest.raises(ValueError, match="uint8"):
        V.make_residual(plain, bg.astype(np.float32))


def test_untrained_residual_v_paints_the_playfield_whatever_the_frame_or_z(plain_and_residual):
    _, res, bg = plain_and_residual
    frames = pong_frames(4, seed=2)
    want = np.clip(bg.astype(np.float32) / 255.0, V.PLAYFIELD_EPS, 1 - V.PLAYFIELD_EPS)
    recon = np.asarray(V.reconstruct(res, jnp.asarray(frames)))
    np.testing.assert_allclose(recon, np.broadcast_to(want, recon.shape), atol=1e-6)
    np.testing.assert_array_equal(np.rint(recon * 255).astype(np.uint8), np.broadcast_to(bg, recon.shape))
    z = jax.random.normal(jax.random.key(1), (3, Z)) * 3.0
    np.testing.assert_allclose(np.asarray(V.decode_jit(res, z)), np.broadcast_to(want, (3, 64, 64, 3)), atol=1e-6)


def test_residual_encoder_sees_a_small_blob_far_more_than_the_plain_one(plain_and_residual):
    """Two frames that differ in one 1 x 2 ball: the plain V's mu barely moves (the frames are 99.9% the same
    image), the residual V's moves ~RESIDUAL_GAIN times more, by the same initial weights."""
    plain, res, bg = plain_and_residual
    a = bg.copy()
    b = bg.copy()
    b[30, 20:22] = BALL
    frames = jnp.asarray(np.stack([a, b]))
    d = {}
    for name, p in (("plain", plain), ("residual", res)):
        mu = np.asarray(V.encode(p, frames, V.REFERENCE)[0])
        d[name] = float(np.abs(mu[1] - mu[0]).mean())
    assert d["residual"] > 20 * d["plain"] > 0, d
    mu_bg = np.asarray(V.encode(res, jnp.asarray(bg[None]), V.REFERENCE)[0])
    assert np.abs(mu_bg).max() < 1e-4  # the playfield itself: zero input (to rounding), zero biases


def test_playfield_gets_no_gradient_and_adam_leaves_it_unchanged(plain_and_residual):
    """Three Adam steps of the shipped train step: the playfield's Adam moments stay 0 (its gradient is exactly 0,
    stop_gradient), so its value is bit for bit the same, while the zeroed last kernel and the encoder learn."""
    from wm_jax.train.vae import make_optimizer, make_train_step

    _, res, bg = plain_and_residual
    frames = jnp.asarray(pong_frames(8, seed=3))
    cfg = load_config(None, ["env.name=atari", "vae.residual=true", f"vae.z_dim={Z}", "vae.learning_rate=0.01"])
    step = make_train_step(cfg.vae, plan=V.REFERENCE)
    params = jax.tree.map(jnp.array, res)  # the step donates its inputs
    opt_state = make_optimizer(cfg.vae).init(params)
    for t in range(3):
        params, opt_state, m = step(params, opt_state, frames, jax.random.key_data(jax.random.key(1)), jnp.int32(t))
        assert np.isfinite(float(m["loss"]))
    np.testing.assert_array_equal(np.asarray(params["playfield"]["image"]), bg.astype(np.float32) / 255.0)
    moments = [x for path, x in jax.tree_util.tree_leaves_with_path(opt_state) if "playfield" in jax.tree_util.keystr(path)]
    assert len(moments) == 2 and not any(np.any(np.asarray(m)) for m in moments)  # Adam's mu and nu
    assert np.any(np.asarray(params["dec_deconv3"]["kernel"]))  # the zeroed last kernel learns
    assert not np.array_equal(np.asarray(params["enc_conv0"]["kernel"]), np.asarray(res["enc_conv0"]["kernel"]))


def test_checkpoint_and_load_vae_keep_the_playfield(plain_and_residual, tmp_path):
    from wm_jax.checkpoint import Checkpointer
    from wm_jax.io import load_vae

    _, res, _ = plain_and_residual
    with Checkpointer(tmp_path / "vae") as ck:
        ck.save(1, {"params": jax.device_get(res)})
    loaded, z = load_vae(tmp_path)
    assert z == Z and V.residual_of(loaded)
    assert jax.tree.structure(loaded) == jax.tree.structure(res)
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(res)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    frames = jnp.asarray(pong_frames(3, seed=1))
    np.testing.assert_array_equal(np.asarray(V.encode_jit(loaded, frames)[0]), np.asarray(V.encode_jit(res, frames)[0]))


@pytest.fixture(scope="module")
def residual_run(tmp_path_factory):
    """A 4-step residual V (z 8, batch 8) on 5 Pong-like episodes of 20 frames."""
    return train_on_pong_frames(tmp_path_factory.mktemp("res"), "res", "vae.residual=true", f"vae.z_dim={Z}",
                                "vae.plan=xla")


def test_trained_residual_v_carries_its_run_playfield(residual_run):
    """train-vae builds the residual V from background.png; its checkpoints (load_vae, and the resume template of
    init_state) hold that playfield unchanged after training."""
    from wm_jax.checkpoint import Checkpointer
    from wm_jax.io import load_vae
    from wm_jax.train.vae import init_state, make_optimizer, playfield

    cfg, summary = residual_run
    assert summary["step"] == 4 and 0 < summary["holdout_mse"] < 1
    assert 0.0 <= summary["foreground_recall"] <= 1.0
    bg = playfield(cfg)
    np.testing.assert_array_equal(bg, playfield_of(pong_frames(1)))
    params, _ = load_vae(cfg.run_dir)
    np.testing.assert_array_equal(np.asarray(params["playfield"]["image"]), bg.astype(np.float32) / 255.0)
    with Checkpointer(Path(cfg.run_dir) / "vae") as ck:
        state = ck.restore(init_state(cfg, make_optimizer(cfg.vae), bg))
    for a, b in zip(jax.tree.leaves(state["params"]), jax.tree.leaves(params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    frames = jnp.asarray(pong_frames(3, seed=4))
    np.testing.assert_array_equal(np.asarray(V.encode_jit(state["params"], frames)[0]),
                                  np.asarray(V.encode_jit(params, frames)[0]))
