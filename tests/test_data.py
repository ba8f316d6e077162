"""Data layer: preprocessing by hand, shard round trip and validation, corrupt shards, collection resume,
the streaming loader's shuffling, determinism and memory bound."""

import json
import os
import subprocess
import sys
import textwrap
import zipfile

import numpy as np
import pytest

from wm_jax.cli import main as cli_main
from wm_jax.config import ConfigError, load_config
from wm_jax.data.collect import collect
from wm_jax.data.dataset import frame_batches, open_dataset
from wm_jax.envs.frames import (area_resize, area_weights, carracing_frame, doom_frame, fireball_mask,
                                    fireball_recall)
from wm_jax.data.shards import (CorruptShardError, Episode, episode_record, read_episode, shard_name,
                                write_episode, write_manifest)


# ---------------------------------------------------------------- preprocessing


def test_area_resize_2x2_blocks_by_hand():
    img = np.zeros((4, 4, 1), np.uint8)
    img[:2, :2, 0] = [[255, 255], [255, 254]]  # mean 254.75 -> 255 (the original's uint8 maths would wrap)
    img[:2, 2:, 0] = [[0, 1], [1, 1]]  # 0.75 -> 1
    img[2:, :2, 0] = [[0, 0], [0, 1]]  # 0.25 -> 0
    img[2:, 2:, 0] = [[10, 11], [10, 11]]  # 10.5 -> 11 (half up)
    assert area_resize(img, 2, 2)[..., 0].tolist() == [[255, 1], [0, 11]]


def test_area_resize_fractional_by_hand():
    # 3 -> 2 columns: output cell 0 covers pixel 0 and half of pixel 1; cell 1 the other half and pixel 2.
    img = np.array([[[30], [90], [150]]], np.uint8)
    assert area_resize(img, 1, 2)[0, :, 0].tolist() == [50, 130]  # (30 + 45) / 1.5, (45 + 150) / 1.5
    assert np.allclose(area_weights(3, 2), [[2 / 3, 1 / 3, 0], [0, 1 / 3, 2 / 3]])
    for n_in, n_out in ((84, 64), (96, 64), (120, 64), (160, 64)):
        w = area_weights(n_in, n_out)
        assert np.allclose(w.sum(1), 1) and np.allclose(w.sum(0), n_out / n_in)


def test_area_resize_matches_dense_weights():
    # Dense reference with exact integer weights: 120 -> 64 rows in fifteenths, 160 -> 64 columns in fifths.
    x = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    wy, wx = np.rint(area_weights(120, 64) * 15).astype(np.int64), np.rint(area_weights(160, 64) * 5).astype(np.int64)
    num = np.einsum("hH,wW,HWc->hwc", wy, wx, x.astype(np.int64), optimize=True)
    assert np.array_equal(doom_frame(x), (2 * num + 75) // 150)
    assert np.abs(doom_frame(x) - np.einsum("hH,wW,HWc->hwc", area_weights(120, 64), area_weights(160, 64),
                                            x.astype(np.float64))).max() <= 0.5 + 1e-9


def test_carracing_frame_drops_indicator_strip():
    obs = np.full((96, 96, 3), 200, np.uint8)
    obs[84:] = 0  # the indicator strip must not bleed into the frame
    out = carracing_frame(obs)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8 and (out == 200).all()
    obs[83] = 0  # but row 83 is part of the image: the last output row covers rows 82.69..84
    out = carracing_frame(obs)
    assert (out[:63] == 200).all() and (out[63] == round(200 * (1 - 1 / 1.3125))).all()
    with pytest.raises(ValueError, match="96, 96, 3"):
        carracing_frame(np.zeros((64, 64, 3), np.uint8))


FIRE, FLASH, WALL = (250, 160, 40), (200, 30, 30), (120, 90, 60)  # fireball orange, hit flash red, wall brown


def test_fireball_mask_colours():
    f = np.zeros((2, 2, 3), np.uint8)
    f[0, 0], f[0, 1], f[1, 0], f[1, 1] = FIRE, FLASH, WALL, (255, 255, 255)
    assert fireball_mask(f).tolist() == [[True, False], [False, False]]


def test_fireball_recall_by_hand():
    frames = np.full((3, 64, 64, 3), 80, np.uint8)
    frames[0, 10:13, 10:13] = FIRE  # 9 px: counted
    frames[1, 0, 0:2] = FIRE        # 2 px: too small to count (< lo)
    frames[2] = FIRE                # a fireball filling the screen (> hi): not counted
    recon = np.full_like(frames, 80)
    recon[0, 10, 10:13] = FIRE      # 3 of the 9 kept
    recon[0, 40, 40] = FIRE         # a fireball pixel elsewhere is no recall
    recon[1:] = frames[1:]
    assert fireball_recall(frames, recon) == (pytest.approx(3 / 9), 1)
    assert fireball_recall(frames[1:], recon[1:]) == (pytest.approx(float("nan"), nan_ok=True), 0)


# ---------------------------------------------------------------- shards


def make_episode(t: int, seed: int, tag: int = 0, a: int = 1) -> Episode:
    """Synthetic episode whose frame k has pixel (0, 0) = (tag, k % 256, k // 256), the rest constant."""
    frames = np.full((t + 1, 64, 64, 3), (tag * 7 + seed) % 256, np.uint8)
    k = np.arange(t + 1)
    frames[:, 0, 0] = np.stack([np.full(t + 1, tag % 256), k % 256, k // 256], 1)
    term = np.zeros(t, bool)
    term[-1] = True
    rng = np.random.default_rng(seed)
    return Episode(frames, rng.uniform(-1, 1, (t, a)).astype(np.float32), rng.normal(size=t).astype(np.float32),
                   term, np.zeros(t, bool), seed)


def write_dataset(root, n: int, t: int, env: str = "takecover") -> None:
    (root / "episodes").mkdir(parents=True, exist_ok=True)
    records = []
    for i in range(n):
        ep = make_episode(t, seed=i, tag=i)
        write_episode(root / "episodes" / shard_name(i), ep)
        records.append(episode_record(i, ep))
    write_manifest(root, env, 1, records)


def test_shard_round_trip(tmp_path):
    ep = make_episode(20, seed=3, a=3)
    path = tmp_path / "ep.npz"
    write_episode(path, ep, compresslevel=6)
    back = read_episode(path, action_dim=3, length=20)
    for a, b in zip(ep, back):
        assert np.array_equal(a, b) and np.asarray(a).dtype == np.asarray(b).dtype
    with np.load(path) as z:  # plain np.load reads it, with the DESIGN.md keys
        assert sorted(z.files) == sorted(["frames", "actions", "rewards", "terminated", "truncated", "seed"])
        assert z["seed"].shape == () and z["seed"].dtype == np.int64
    assert os.listdir(tmp_path) == ["ep.npz"]  # no temp file left
    with pytest.raises(CorruptShardError, match="action_dim=1"):
        read_episode(path, action_dim=1)
    with pytest.raises(CorruptShardError, match="length=21"):
        read_episode(path, length=21)


def test_invalid_episodes_rejected(tmp_path):
    ep = make_episode(5, seed=0)
    bad_term = ep._replace(terminated=np.array([True, False, False, False, True]))
    for bad, msg in ((ep._replace(frames=ep.frames.astype(np.float32)), "'frames'"),
                     (ep._replace(actions=ep.actions[:4]), "'actions'"),
                     (ep._replace(rewards=ep.rewards.astype(np.float64)), "'rewards'"),
                     (bad_term, "last step")):
        with pytest.raises(CorruptShardError, match=msg):
            write_episode(tmp_path / "x.npz", bad)
    assert not list(tmp_path.iterdir())


def test_corrupt_shards_named_and_skippable(tmp_path):
    write_dataset(tmp_path, 4, 10)
    ep_dir = tmp_path / "episodes"
    (ep_dir / shard_name(1)).write_bytes(b"garbage, not a zip file" * 10)
    full = (ep_dir / shard_name(2)).read_bytes()
    (ep_dir / shard_name(2)).write_bytes(full[: len(full) // 2])  # truncated mid-write
    with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(ep_dir / shard_name(3), "a") as zf:
        zf.writestr("frames.npy", b"\x93NUMPY broken")  # a valid zip whose 'frames' member is broken
    ds = open_dataset(tmp_path)
    assert len(ds) == 4 and ds.load(0).length == 10
    for i in (1, 2, 3):
        with pytest.raises(CorruptShardError, match=shard_name(i)):
            ds.load(i)
    with pytest.raises(CorruptShardError, match=shard_name(1)):
        list(frame_batches(ds, 4, seed=0, epochs=1))
    ds = open_dataset(tmp_path, skip_corrupt=True)
    with pytest.warns(UserWarning, match="skipping corrupt"):
        frames = np.concatenate(list(frame_batches(ds, 4, seed=0, epochs=1, drop_remainder=False)))
    assert len(frames) == 11 and (frames[:, 0, 0, 0] == 0).all()  # only episode 0's 11 frames
    (ep_dir / shard_name(0)).unlink()
    with pytest.raises(CorruptShardError, match=f"{shard_name(0)}: listed in"):
        open_dataset(tmp_path)
    with pytest.warns(UserWarning):
        assert len(open_dataset(tmp_path, skip_corrupt=True)) == 3


# ---------------------------------------------------------------- streaming loader


def test_frame_batches_cover_every_frame_once_and_are_deterministic(tmp_path):
    write_dataset(tmp_path, 7, 30)
    ds = open_dataset(tmp_path)
    assert ds.num_frames == 7 * 31 and [r.length for r in ds.episodes] == [30] * 7
    ids = lambda b: b[:, 0, 0, 0].astype(int) * 1000 + b[:, 0, 0, 1]  # (episode, step) of each frame
    got = list(frame_batches(ds, 16, seed=1, epochs=2, buffer_episodes=3, drop_remainder=False))
    assert all(len(b) == 16 for b in got[:-1]) and sum(map(len, got)) == 2 * 217
    every = np.concatenate([ids(b) for b in got])
    assert sorted(every) == sorted(np.tile(np.arange(7)[:, None] * 1000 + np.arange(31), 2).ravel())
    assert len(set(ids(got[0]) // 1000)) > 1  # a batch mixes episodes
    again = list(frame_batches(ds, 16, seed=1, epochs=2, buffer_episodes=3, drop_remainder=False, prefetch=False))
    assert all(np.array_equal(a, b) for a, b in zip(got, again, strict=True))
    other = next(frame_batches(ds, 16, seed=2))
    assert not np.array_equal(other, got[0])
    train, hold = ds.split(2)
    assert [r.index for r in hold.episodes] == [5, 6] and len(train) == 5
    assert np.array_equal(hold.load(0).frames, ds.load(5).frames)
    with pytest.raises(ValueError, match="n_holdout"):
        ds.split(7)


MEASURE = textwrap.dedent("""
    import resource, sys, psutil
    from wm_jax.data.dataset import frame_batches, open_dataset
    ds = open_dataset(sys.argv[1])
    ds = ds.subset(range(int(sys.argv[2])))
    base = psutil.Process().memory_info().rss
    try:  # reset the peak: a forked child's ru_maxrss starts at its parent's (pytest's) peak
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    n = sum(len(b) for b in frame_batches(ds, 100, seed=0, epochs=1, buffer_episodes=4))
    status = open("/proc/self/status").read() if sys.platform == "linux" else ""
    hwm = [int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")]
    peak = (hwm[0] if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024
    print(n, peak - base)
""")


def test_loader_memory_is_bounded_independent_of_dataset_size(tmp_path):
    n, t = 60, 1000  # 60,060 frames = 738 MB decompressed
    write_dataset(tmp_path, n, t)
    frame_bytes = 64 * 64 * 3
    total = n * (t + 1) * frame_bytes

    def peak(episodes):
        proc = subprocess.run([sys.executable, "-c", MEASURE, str(tmp_path), str(episodes)],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        out = proc.stdout.split()
        assert int(out[0]) == episodes * (t + 1) // 100 * 100
        return int(out[1])

    small, big = peak(12), peak(n)
    print(f"loader peak RSS increase: {small / 1e6:.0f} MB (12 episodes), {big / 1e6:.0f} MB ({n} episodes, "
          f"{total / 1e6:.0f} MB decompressed)")
    # Blocks of K=4 episodes: the one in use and its shuffled copy, one queued, one being decompressed, plus
    # malloc's per-thread arenas: a constant number of blocks, whatever the dataset size. With the default
    # K=16 and 1000-step episodes the same constant is 6 x 197 MB = 1.2 GB, under 2 GB for any dataset size.
    bound = 6 * 4 * (t + 1) * frame_bytes
    assert big < bound + 64e6, (big, bound)
    assert big < 0.5 * total  # well below the decompressed dataset
    assert big < 1.3 * small + 32e6, (small, big)  # 5x the episodes, about the same peak


# ---------------------------------------------------------------- collection


def test_collect_resume_after_kill(tmp_path):
    over = [f"root={tmp_path}", "name=r", "env.max_steps=30", "data.workers=2", "data.seed=40"]
    assert cli_main(["collect", "--config", "configs/takecover.yaml", "--no-progress", "data.episodes=3", *over]) == 0
    data = tmp_path / "r" / "data"
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["data"]["episodes"] == 3 and saved["env"]["max_steps"] == 30
    first = {i: (data / "episodes" / shard_name(i)).read_bytes() for i in range(3)}
    # Simulate a kill: the manifest rewrite and the last shard are lost, a writer's temp file is left over.
    (data / "manifest.json").unlink()
    (data / "episodes" / shard_name(2)).unlink()
    (data / "episodes" / (shard_name(3) + ".tmp12345")).write_bytes(b"half a zip")
    cfg = load_config("configs/takecover.yaml", [*over, "data.episodes=5"])
    records = collect(cfg, progress=False)
    assert [r["index"] for r in records] == [0, 1, 2, 3, 4] and [r["seed"] for r in records] == [40, 41, 42, 43, 44]
    assert [r["policy"] for r in records] == ["repeat1-10"] * 5  # 0, 1 rebuilt from their shards keep the label
    assert sorted(p.name for p in (data / "episodes").iterdir()) == [shard_name(i) for i in range(5)]
    for i in range(3):  # 0 and 1 untouched, 2 recollected identically (seed 42)
        assert (data / "episodes" / shard_name(i)).read_bytes() == first[i]
    ds = open_dataset(data)
    assert len(ds) == 5 and ds.env == "takecover" and ds.verify() == []
    assert all(ds.episodes[i].length == ds.load(i).length <= 30 for i in range(5))
    assert collect(cfg, progress=False) == records  # nothing left to do
    with pytest.raises(ConfigError, match="data.seed"):
        collect(cfg.replace(**{"data.seed": 0}), progress=False)
    with pytest.raises(ConfigError, match="holds takecover data"):
        collect(cfg.replace(**{"env.name": "carracing"}), progress=False)


def _runs(actions: np.ndarray) -> list[int]:
    """Lengths of the runs of equal consecutive actions."""
    change = np.flatnonzero(np.any(actions[1:] != actions[:-1], axis=-1)) + 1
    return np.diff(np.concatenate([[0], change, [len(actions)]])).tolist()


def test_collect_long_hold_and_sweep_episodes(tmp_path):
    over = [f"root={tmp_path}", "name=h", "env.max_steps=400", "data.workers=1", "data.episodes=1",
            "data.long_hold_episodes=1", "env.doom_long_repeat_min=40", "env.doom_long_repeat_max=60",
            "data.sweep_episodes=1", "env.doom_sweep_min=30", "env.doom_sweep_max=40"]
    cfg = load_config("configs/takecover.yaml", over)
    assert cfg.data.collected == 3
    records = collect(cfg, progress=False)
    policies = [(r["index"], r["policy"]) for r in records]
    assert policies == [(0, "repeat1-10"), (1, "repeat40-60"), (2, "sweep30-40r0")]
    ds = open_dataset(tmp_path / "h" / "data")
    plain, held = _runs(ds.load(0).actions), _runs(ds.load(1).actions)
    assert np.median(plain) <= 15  # 1..10 frame holds (a new hold may draw the same action again)
    assert all(r >= 40 for r in held[:-1]) and len(held) >= 2  # every finished hold lasts >= 40 frames
    swept = ds.load(2).actions[:, 0]
    legs = _runs(swept[:, None])
    assert set(np.unique(swept)) <= {-1.0, 1.0} and len(legs) >= 2  # it keeps moving ...
    assert all(30 <= r <= 40 for r in legs[:-1]) and legs[-1] <= 40  # ... in legs of 30..40 frames
    starts = np.concatenate([[0], np.cumsum(legs)[:-1]])
    assert np.all(swept[starts[1:]] == -swept[starts[:-1]])  # ... alternating direction
    # The same indices under another policy split are refused, naming the episode and the policy.
    with pytest.raises(ConfigError, match="episode 1 was collected with policy 'repeat40-60'"):
        collect(cfg.replace(**{"data.episodes": 2, "data.long_hold_episodes": 0}), progress=False)
    with pytest.raises(ConfigError, match="episode 2 was collected with policy 'sweep30-40r0'"):
        collect(cfg.replace(**{"env.doom_sweep_max": 50}), progress=False)
    with pytest.raises(ConfigError, match="long_hold_episodes"):
        load_config("configs/carracing.yaml", ["data.long_hold_episodes=1"])
    with pytest.raises(ConfigError, match="sweep_episodes"):
        load_config("configs/carracing.yaml", ["data.sweep_episodes=1"])
    with pytest.raises(ConfigError, match="doom_sweep_random_leg"):
        load_config("configs/takecover.yaml", ["env.doom_sweep_random_leg=1.5"])


def test_collect_killed_by_sigterm_exits_cleanly_and_resumes(tmp_path):
    """`kill` (SIGTERM) on a running `wm-jax collect`: exit status 130 with a resume hint, no temp files left;
    rerunning the same command ends with exactly the requested episodes."""
    import signal
    import time

    argv = [sys.executable, "-m", "wm_jax.cli", "collect", "--config", "configs/takecover.yaml", "--no-progress",
            f"root={tmp_path}", "name=k", "env.max_steps=60", "data.workers=1", "data.episodes=40"]
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    shards = tmp_path / "k" / "data" / "episodes"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(shards.glob("ep_*.npz"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "interrupted; rerun the same command to resume" in err
    # Shards are the truth, the manifest a cache: one written just before the signal may not be listed yet (the
    # rerun adopts it), so count the disk here and only check that the manifest lists no more than it holds.
    on_disk = len(list(shards.glob("ep_*.npz")))
    assert 3 <= on_disk < 40 and not [p for p in shards.iterdir() if ".tmp" in p.name]
    assert len(open_dataset(tmp_path / "k" / "data")) <= on_disk
    assert subprocess.run(argv, capture_output=True).returncode == 0
    ds = open_dataset(tmp_path / "k" / "data")
    assert [r.index for r in ds.episodes] == list(range(40)) and ds.verify() == []


def test_collect_carracing_follow_episodes(tmp_path):
    """data.follow_episodes (CarRacing): episodes after the random ones are played by the scripted road follower,
    which gains track tiles where the Brownian walk leaves the road; its manifest label names the excursions."""
    over = [f"root={tmp_path}", "name=f", "env.max_steps=150", "data.workers=1", "data.episodes=1",
            "data.follow_episodes=1", "env.carracing_excursion=0"]
    cfg = load_config("configs/carracing.yaml", over)
    assert cfg.data.collected == 2 and cfg.data.policy_kind(1) == "follow"
    records = collect(cfg, progress=False)
    assert [r["policy"] for r in records] == ["brownian", "follow_x0_10-60"]
    ds = open_dataset(tmp_path / "f" / "data")
    follow = ds.load(1)
    tiles = int((follow.rewards > 0).sum())
    assert tiles >= 20, f"the follower gained only {tiles} tiles in 150 steps"
    assert np.all(np.abs(follow.actions[:, 0]) <= 1) and np.all(follow.actions[:, 1:] >= 0)
    with pytest.raises(ConfigError, match="follow episodes exist for carracing only"):
        load_config("configs/takecover.yaml", ["data.follow_episodes=1"])
    with pytest.raises(ConfigError, match="carracing_excursion_min"):
        load_config("configs/carracing.yaml", ["env.carracing_excursion_min=0"])


def test_follow_policy_excursions_are_brownian_and_seeded():
    """FollowPolicy with excursion 1: every step hands over to the Brownian walk (actions change by small steps);
    the same rng seed replays the same actions."""
    from wm_jax.envs.carracing import FollowPolicy, road_mask

    frame = np.zeros((64, 64, 3), np.uint8)
    frame[..., 1] = 204  # all grass: no road in sight
    assert not road_mask(frame).any()
    runs = []
    for _ in range(2):
        p = FollowPolicy(excursion=1.0, excursion_len=(30, 30))
        p.reset(np.random.default_rng(3))
        runs.append(np.stack([p(frame) for _ in range(30)]))
    np.testing.assert_array_equal(runs[0], runs[1])
    steps = np.abs(np.diff(runs[0], axis=0))  # one 30-step excursion: a random walk of steps ~ N(0, 1/50)
    assert 0 < steps.max() < 0.6 and steps.mean() < 0.2
    p = FollowPolicy(excursion=0.0)
    p.reset(np.random.default_rng(0))
    a = p(frame)  # no road in sight and no excursion: circle slowly to find it
    assert a[1] > 0 and a[0] != 0 and a[2] == 0
    frame[20:48, 32:38] = 102  # road ahead, a little right of the car: steer right, full gas, no brake
    a = p(frame)
    assert a[0] > 0 and a[1] == np.float32(p.gas) and a[2] == 0
