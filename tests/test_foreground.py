"""Atari foreground: the playfield median, blob labels, foreground and small-object recall by hand, the
foreground-weighted loss by hand, and a tiny V trained with ``vae.foreground_weight`` (background.png written,
the weight inside the jitted step, recall in DONE and in eval-vae)."""

from __future__ import annotations

import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

from wm_jax.config import ConfigError, load_config
from wm_jax.data.shards import Episode, episode_record, write_episode, write_manifest
from wm_jax.envs.frames import (FOREGROUND_THRESHOLD, background_image, blob_labels, foreground_mask,
                                foreground_recall, small_objects)
from wm_jax.train import vae_loss as L

FIELD, WALL, BALL, PADDLE = (144, 72, 17), (236, 236, 236), (236, 236, 236), (92, 186, 92)  # Pong's colours


def pong_frames(t: int, seed: int = 0) -> np.ndarray:
    """t consecutive Pong-like frames uint8 [t, 64, 64, 3]: walls on rows 8 and 60, a 1 x 2 ball moving 2 pixels
    right and 1 down a frame (from a seed-chosen start), a 6 x 2 paddle sliding down 1 pixel a frame."""
    f = np.empty((t, 64, 64, 3), np.uint8)
    f[:] = FIELD
    f[:, 8], f[:, 60] = WALL, WALL
    y0, x0 = 12 + seed % 7, 4 + 3 * (seed % 5)
    for i in range(t):
        f[i, y0 + i, x0 + 2 * i:x0 + 2 * i + 2] = BALL
        f[i, 15 + i:21 + i, 58:60] = PADDLE
    return f


# ---------------------------------------------------------------- the pure numpy figures


def test_background_is_the_lower_median_of_the_frames():
    frames = pong_frames(20)
    want = frames[0].copy()
    want[9:60] = FIELD  # the rows the ball and the paddle cross: each pixel is covered in at most 6 of 20 frames
    np.testing.assert_array_equal(background_image(frames), want)
    two = np.stack([np.full((64, 64, 3), 10, np.uint8), np.full((64, 64, 3), 30, np.uint8)])
    assert (background_image(two) == 10).all()  # even count: the lower of the middle two, not their mean 20
    with pytest.raises(ValueError, match="uint8"):
        background_image(two.astype(np.float32))


def test_foreground_mask_threshold_is_strict_in_every_channel():
    bg = np.full((64, 64, 3), 100, np.uint8)
    f = bg.copy()[None]
    f[0, 0, 0] = (100 + FOREGROUND_THRESHOLD, 100, 100)  # equal to the threshold: background
    f[0, 0, 1] = (100, 100, 99 - FOREGROUND_THRESHOLD)  # one channel beyond it, downwards: foreground
    m = foreground_mask(f, bg)
    assert m.sum() == 1 and m[0, 0, 1]
    assert np.array_equal(np.asarray(foreground_mask(jnp.asarray(f), jnp.asarray(bg), xp=jnp)), m)


def test_blob_labels_by_hand():
    mask = np.zeros((2, 6, 6), bool)
    mask[0, 0, 0:2] = True  # a 1 x 2 blob
    mask[0, 2, 2] = mask[0, 3, 3] = True  # diagonal neighbours: one blob (8-connected)
    mask[0, 2:5, 5] = True  # a column two pixels right of (3, 3): a blob of its own
    mask[1, 0:3, 0] = mask[1, 2, 1] = True  # an L in the second frame
    lab = blob_labels(mask)
    assert (lab[~mask] == -1).all()
    assert lab[0, 0, 0] == lab[0, 0, 1] == 0  # named by the smallest flat index
    assert lab[0, 2, 2] == lab[0, 3, 3] == 2 * 6 + 2
    assert len(set(lab[0, 2:5, 5].tolist())) == 1 and lab[0, 2, 5] not in (lab[0, 0, 0], lab[0, 2, 2])
    assert len(set(lab[1][mask[1]].tolist())) == 1 and lab[1, 0, 0] == 36  # frame 1 starts at index 6 * 6


def test_foreground_and_small_object_recall_by_hand():
    frames = pong_frames(5)
    bg = background_image(pong_frames(20))
    frames[:, 2, 30:32] = BALL  # a small blob that stays put (a score digit's fragment): foreground, not small
    small = small_objects(frames, bg)
    assert small[0].sum() == 0  # frame 0 has no previous frame
    assert [np.argwhere(s).tolist() for s in small[1:]] == [[[13, 6], [13, 7]], [[14, 8], [14, 9]],
                                                           [[15, 10], [15, 11]], [[16, 12], [16, 13]]]
    # per frame: ball 2 + paddle 12 + fixed blob 2 = 16 foreground pixels; small: the ball in frames 1..4
    perfect = foreground_recall(frames, frames, bg)
    assert perfect == {"foreground_recall": 1.0, "foreground_pixels": 80, "small_object_recall": 1.0,
                       "small_object_pixels": 8, "foreground_precision": 1.0, "painted_pixels": 80}
    blank = foreground_recall(frames, np.broadcast_to(bg, frames.shape), bg)
    assert np.isnan(blank.pop("foreground_precision"))  # nothing painted off the playfield
    assert blank == {"foreground_recall": 0.0, "foreground_pixels": 80, "small_object_recall": 0.0,
                     "small_object_pixels": 8, "painted_pixels": 0}
    # a V that keeps the paddle and the fixed blob and paints the ball's colour some way from the playfield's
    ball = np.zeros((5, 64, 64), bool)
    for i in range(5):
        ball[i, 12 + i, 4 + 2 * i:6 + 2 * i] = True
    field, white = np.asarray(FIELD), np.asarray(BALL)
    recon = frames.copy()
    recon[ball] = field + 2 * (white - field) // 3  # two thirds of the way: nearer the ball, kept
    assert foreground_recall(frames, recon, bg) == perfect
    recon[ball] = field + (white - field) // 2  # (190, 154, 126): 20,940 from the ball, 20,721 from the field
    assert foreground_recall(frames, recon, bg) == {"foreground_recall": 70 / 80, "foreground_pixels": 80,
                                                     "small_object_recall": 0.0, "small_object_pixels": 8,
                                                     "foreground_precision": 1.0, "painted_pixels": 80}
    # a V that smears the paddle down its column keeps every pixel but paints 10 x 2 more a frame off the paddle
    recon = frames.copy()
    recon[:, 30:40, 58:60] = PADDLE
    smear = foreground_recall(frames, recon, bg)
    assert (smear["foreground_recall"], smear["foreground_precision"], smear["painted_pixels"]) == (1.0, 80 / 180, 180)


def test_recall_counts_episode_starts_and_chunks_alike():
    frames = np.concatenate([pong_frames(6, seed=0), pong_frames(6, seed=3)])
    bg = background_image(pong_frames(20))
    first = np.zeros(12, bool)
    first[[0, 6]] = True
    whole = foreground_recall(frames, frames, bg, first)
    assert whole["small_object_pixels"] == 2 * 5 * 2  # frames 0 and 6 start episodes: their ball does not count
    # without the episode start, frame 6's ball has "moved" from frame 5's place, so it counts
    assert foreground_recall(frames, frames, bg)["small_object_pixels"] == 2 * 11
    recon = np.broadcast_to(bg, frames.shape).copy()
    recon[::2] = frames[::2]  # every other frame perfect
    want = foreground_recall(frames, recon, bg, first)
    for chunk in (1, 2, 5, 7):  # the motion test looks across chunk boundaries
        assert foreground_recall(frames, recon, bg, first, chunk=chunk) == want
    assert 0 < want["small_object_recall"] < 1
    assert np.isnan(foreground_recall(frames[:1], frames[:1], bg)["small_object_recall"])


# ---------------------------------------------------------------- the loss and the config


def test_foreground_weighted_loss_by_hand():
    bg = np.zeros((64, 64, 3), np.uint8)
    bg[:] = FIELD
    frames = bg[None].copy()
    frames[0, 10, 20] = BALL  # foreground in the frame, lost by the reconstruction
    painted = bg[None].astype(np.float32).copy()
    painted[0, 40, 5] = (200, 72, 17)  # a ghost the reconstruction paints (56 off in red)
    painted[0, 30, 30] = (144 + FOREGROUND_THRESHOLD, 72, 17)  # off by the threshold exactly: not foreground
    recon = jnp.asarray(painted / 255.0)
    w = np.asarray(L.foreground_weights(jnp.asarray(frames), recon, jnp.asarray(bg), 9.0))
    assert w[0, 10, 20] == 10 and w[0, 40, 5] == 10 and w.sum() == 64 * 64 + 2 * 9
    x = jnp.asarray(frames, jnp.float32) / 255.0
    zeros = jnp.zeros((1, 4))
    t = L.loss_terms(x, recon, zeros, zeros, 0.0, jnp.asarray(w))
    ball = (92**2 + 164**2 + 219**2) / 255**2  # the lost ball pixel's squared error, summed over RGB
    want = 10 * ball + 10 * 56**2 / 255**2 + FOREGROUND_THRESHOLD**2 / 255**2
    np.testing.assert_allclose(float(t["loss"]), want, rtol=1e-5)
    np.testing.assert_allclose(float(t["mse"]), (ball + (56**2 + FOREGROUND_THRESHOLD**2) / 255**2) / (64 * 64 * 3),
                               rtol=1e-5)


def test_small_object_weight_marks_isolated_blobs_by_hand():
    bg = np.zeros((64, 64, 3), np.uint8)
    bg[:] = FIELD
    frames = bg[None].copy()
    frames[0, 10, 20:22] = BALL  # a 1 x 2 ball: isolated
    frames[0, 40:46, 3:5] = PADDLE  # a 6 x 2 paddle: its middle rows see 8-10 paddle pixels, its end rows 6
    frames[0, 0, 62:64] = BALL  # 2 pixels in the corner: the window beyond the border counts nothing
    frames[0, 30, 30:37] = WALL  # a 7-pixel line: its middle pixels see 5, its ends 3, in a 5 x 5 window
    fg = foreground_mask(frames, bg)
    iso = np.asarray(L.isolated(jnp.asarray(fg)))
    assert iso[0, 10, 20:22].all() and iso[0, 0, 62:64].all() and not iso[0, 41:45, 3:5].any()
    assert iso[0, 40, 3:5].all() and iso[0, 45, 3:5].all()  # a paddle's tips count: where it ends matters too
    assert iso[0, 30, 30:37].all()  # at most 5 line pixels in any 5 x 5 window: a thin line is "small" too
    assert iso.sum() == 2 + 2 + 4 + 7
    recon = jnp.asarray(bg[None] / 255.0, jnp.float32)  # V paints the playfield only
    w = np.asarray(L.foreground_weights(jnp.asarray(frames), recon, jnp.asarray(bg), 9.0, 90.0))
    assert w[0, 10, 20] == 1 + 9 + 90 and w[0, 42, 3] == 1 + 9 and w[0, 5, 5] == 1
    assert w.sum() == 64 * 64 + 9 * fg.sum() + 90 * 15
    np.testing.assert_array_equal(w, np.asarray(L.foreground_weights(jnp.asarray(frames), recon, jnp.asarray(bg),
                                                                      9.0)) + 90.0 * iso)
    with pytest.raises(ConfigError, match="'vae.small_object_weight': adds to vae.foreground_weight"):
        load_config(None, ["env.name=atari", "vae.small_object_weight=50"])
    with pytest.raises(ConfigError, match="'vae.small_object_weight': must be >= 0"):
        load_config(None, ["env.name=atari", "vae.foreground_weight=10", "vae.small_object_weight=-1"])


def test_foreground_weight_is_atari_only_and_needs_a_background():
    from wm_jax.train.vae import make_train_step

    cfg = load_config(None, ["env.name=atari", "vae.foreground_weight=10"])
    assert cfg.vae.foreground_weight == 10.0
    with pytest.raises(ConfigError, match="'vae.foreground_weight': weighs pixels off a static playfield"):
        load_config(None, ["env.name=takecover", "vae.foreground_weight=10"])
    with pytest.raises(ConfigError, match="'vae.foreground_weight': must be >= 0"):
        load_config(None, ["env.name=atari", "vae.foreground_weight=-1"])
    with pytest.raises(ValueError, match="needs the playfield background"):
        make_train_step(cfg.vae)


# ---------------------------------------------------------------- a tiny V trained with the weight


def train_on_pong_frames(root, name: str, *overrides: str):
    """A tiny V trained on 5 synthetic Pong episodes (``pong_frames``) in run folder root/name -> (cfg, summary)."""
    from wm_jax.train.vae import train

    cfg = load_config(None, [f"root={root}", f"name={name}", "env.name=atari", "vae.batch_size=8", "vae.max_steps=4",
                             "vae.checkpoint_every=2", "vae.log_every=1", "vae.holdout_episodes=1", *overrides])
    (cfg.data_dir / "episodes").mkdir(parents=True)
    recs = []
    for i in range(5):
        ep = Episode(pong_frames(20, seed=i), np.eye(6, dtype=np.float32)[np.arange(19) % 6],
                     np.zeros(19, np.float32), np.eye(19, dtype=bool)[-1], np.zeros(19, bool), 100 + i)
        write_episode(cfg.data_dir / "episodes" / f"ep_{i:06d}.npz", ep)
        recs.append(episode_record(i, ep))
    write_manifest(cfg.data_dir, "atari/pong", 6, recs)
    return cfg, train(cfg, plots=False, progress=False)


@pytest.fixture(scope="module")
def weighted_run(tmp_path_factory):
    return train_on_pong_frames(tmp_path_factory.mktemp("fg"), "fg", "vae.foreground_weight=10", "vae.z_dim=8")


def test_training_with_the_weight_writes_the_playfield_and_weighs_the_loss(weighted_run):
    from wm_jax.train.vae import BACKGROUND_FILE, playfield

    cfg, summary = weighted_run
    folder = Path(cfg.run_dir) / "vae"
    assert summary["step"] == 4 and (folder / "DONE").exists()
    want = pong_frames(1)[0]
    want[9:60] = FIELD
    np.testing.assert_array_equal(playfield(cfg), want)  # read back from background.png, losslessly
    assert (folder / BACKGROUND_FILE).exists()
    recs = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in recs if "loss" in r]
    assert [r["step"] for r in steps] == [1, 2, 3, 4] and all(np.isfinite(r["loss"]) for r in steps)
    # recon is the weighted squared error per image, mse the plain per-pixel one: at the start V paints no
    # playfield yet, so nearly every pixel is "foreground" of the reconstruction and weighs 11
    first = steps[0]
    assert 5 * first["mse"] * 64 * 64 * 3 < first["recon"] <= 11 * first["mse"] * 64 * 64 * 3 * (1 + 1e-5)
    # the held-out episode: 20 frames of a ball (2 pixels) and a paddle (12); the ball moves in frames 1..19
    assert summary["foreground_pixels"] == 20 * 14 and summary["small_object_pixels"] == 19 * 2
    for k in ("foreground_recall", "small_object_recall", "foreground_precision"):
        assert 0.0 <= summary[k] <= 1.0
    held = pong_frames(20, seed=4).astype(np.float64) / 255.0  # the held-out episode
    assert summary["frame_spread"] == pytest.approx(held.std(axis=0).mean(), rel=1e-6)
    assert 0.0 <= summary["recon_spread"] < summary["frame_spread"]  # 4 steps: V paints nearly one image


def test_eval_vae_reports_the_same_recall_as_training(weighted_run):
    from wm_jax.train.vae_eval import evaluate_vae

    cfg, summary = weighted_run
    out = evaluate_vae(cfg)
    assert [r["step"] for r in out["rows"]] == [2, 4]
    last = out["rows"][-1]
    for k in ("holdout_mse", "foreground_recall", "small_object_recall", "foreground_precision"):
        assert last[k] == pytest.approx(summary[k], rel=1e-6)
    assert last["foreground_pixels"] == summary["foreground_pixels"]
