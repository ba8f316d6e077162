"""M's data windows (wm_jax.data.sequences): alignment, coverage, determinism/resume, frames never read."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from wm_jax.data.dataset import open_dataset
from wm_jax.data.sequences import SequenceError, episode_windows, sequence_batches
from wm_jax.data.shards import Episode, episode_record, write_episode, write_manifest

Z, A = 4, 1


def f_next(z: np.ndarray, a: np.ndarray) -> np.ndarray:
    """Synthetic dynamics: z_{t+1} = f(z_t, a_t) (dim 0 counts steps, dim 1 = episode id, dim 2 integrates a)."""
    out = z.copy()
    out[..., 0] += 1.0
    out[..., 2] += a[..., 0]
    out[..., 3] = 0.5 * z[..., 3] + a[..., 0]
    return out


def write_synthetic(data_dir: Path, lengths: list[int], seed: int = 0, dead: tuple[int, ...] | None = None,
                    z_dim: int = Z, env: str = "takecover") -> Path:
    """Episodes whose latents follow f_next, in the DESIGN.md format (frames all zero; latents/ beside).

    mu[t] = (t, episode, Σa, ...); logvar = -30 (sampling ≈ the mean); actions[t] in {-1, 0, 1};
    rewards[t] = 100·episode + t + 0.25; episode i ends by death (terminated) if i in `dead` (default: odd i).
    """
    rng = np.random.default_rng(seed)
    data_dir = Path(data_dir)
    (data_dir / "episodes").mkdir(parents=True, exist_ok=True)
    (data_dir / "latents").mkdir(parents=True, exist_ok=True)
    dead = tuple(i for i in range(len(lengths)) if i % 2) if dead is None else dead
    records = []
    for i, t in enumerate(lengths):
        a = rng.integers(-1, 2, size=(t, A)).astype(np.float32)
        mu = np.zeros((t + 1, z_dim), np.float32)
        mu[0, 1], mu[0, 3] = i, rng.normal()
        for s in range(t):
            mu[s + 1, :4] = f_next(mu[s, :4], a[s])
        term = np.zeros(t, bool)
        term[-1] = i in dead
        trunc = np.zeros(t, bool)
        trunc[-1] = not term[-1]
        ep = Episode(np.zeros((t + 1, 64, 64, 3), np.uint8), a, (100.0 * i + np.arange(t) + 0.25).astype(np.float32),
                     term, trunc, 1000 + i)
        write_episode(data_dir / "episodes" / f"ep_{i:06d}.npz", ep)
        np.savez(data_dir / "latents" / f"ep_{i:06d}.npz", mu=mu, logvar=np.full_like(mu, -30.0))
        records.append(episode_record(i, ep))
    write_manifest(data_dir, env, A, records)
    return data_dir


LENGTHS = [5, 9, 3, 12, 7, 1, 6]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return open_dataset(write_synthetic(tmp_path_factory.mktemp("seq") / "data", LENGTHS))


def _take(it, n):
    return [next(it) for _ in range(n)]


def test_alignment_and_masks(data):
    """Input at t pairs with z_{t+1}, r_t, done_t; padding steps are masked; restart marks step 0."""
    for b in _take(sequence_batches(data, seq_len=4, batch_size=3, seed=1, progress=False), 6):
        assert b["mu"].shape == (3, 5, Z) and b["actions"].shape == (3, 4, A) and b["mask"].shape == (3, 4)
        valid = b["mask"] > 0
        ep, t = b["mu"][:, :-1, 1], b["mu"][:, :-1, 0]
        # targets: the next latent row follows the dynamics of (z_t, a_t) on every valid step
        np.testing.assert_allclose(b["mu"][:, 1:][valid], f_next(b["mu"][:, :-1], b["actions"])[valid], atol=1e-5)
        np.testing.assert_allclose(b["rewards"][valid], (100 * ep + t + 0.25)[valid], atol=1e-4)
        lengths = np.asarray(LENGTHS)[ep.astype(int)]
        last = t == lengths - 1
        assert np.array_equal(b["dones"][valid] > 0, (last & (ep.astype(int) % 2 == 1))[valid])
        assert np.array_equal(b["restart"] > 0, (t == 0) & valid)
        # a masked step is exactly an episode's final latent row (no action follows it)
        assert np.array_equal(~valid, t == lengths)
        assert np.all(b["actions"][~valid] == 0) and np.all(b["rewards"][~valid] == 0)


def test_done_horizon_marks_the_last_steps_of_deaths_only(data):
    """done_horizon=k: 1 on the last k steps (clipped at the episode's start) of episodes that ended by death
    (odd ids: lengths 9, 12 and 1); truncated episodes stay all 0. Horizon 1 is the plain done target."""
    k = 4
    for b in _take(sequence_batches(data, seq_len=6, batch_size=3, seed=2, progress=False, done_horizon=k), 8):
        valid = b["mask"] > 0
        ep, t = b["mu"][:, :-1, 1].astype(int), b["mu"][:, :-1, 0]
        lengths = np.asarray(LENGTHS)[ep]
        want = (t >= lengths - k) & (ep % 2 == 1) & valid
        assert np.array_equal(b["dones"] > 0, want)
    from wm_jax.data.sequences import open_cache

    cache = open_cache(data, progress=False)
    np.testing.assert_array_equal(cache.horizon_dones(1), np.asarray(cache.arrays["dones"]))
    assert cache.horizon_dones(4).sum() == 4 + 4 + 1  # episodes 1 (T=9), 3 (T=12), 5 (T=1: clipped)
    with pytest.raises(ValueError, match="done horizon"):
        cache.horizon_dones(0)


def test_every_step_once_per_epoch(data):
    """One epoch (Σ(T+1) stream steps) visits every real step exactly once."""
    per_epoch = sum(t + 1 for t in LENGTHS)
    seq_len, bsz = 5, 2
    n_batches = -(-per_epoch // (seq_len * bsz))
    seen = []
    for b in _take(sequence_batches(data, seq_len, bsz, seed=3, progress=False), n_batches):
        pos = b["mask"].reshape(-1) > 0
        seen += list(map(tuple, np.stack([b["mu"][:, :-1, 1].reshape(-1), b["mu"][:, :-1, 0].reshape(-1)], 1)[pos]))
    seen = seen[: sum(LENGTHS)]  # the last batch may run into the next epoch
    assert sorted(seen) == sorted((float(i), float(s)) for i, t in enumerate(LENGTHS) for s in range(t))


def test_deterministic_resume_and_seed(data):
    ref = _take(sequence_batches(data, 6, 2, seed=5, progress=False), 7)
    again = _take(sequence_batches(data, 6, 2, seed=5, start=4, progress=False), 3)
    for x, y in zip(ref[4:], again):
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])
    other = _take(sequence_batches(data, 6, 2, seed=6, progress=False), 7)
    assert any(not np.array_equal(x["mu"], y["mu"]) for x, y in zip(ref, other))


def test_frames_are_never_decompressed(tmp_path):
    """Replace every shard's frames member by garbage: windows still stream (only small members are read)."""
    d = write_synthetic(tmp_path / "data", [4, 6])
    for shard in sorted((d / "episodes").glob("ep_*.npz")):
        with zipfile.ZipFile(shard) as zin:
            members = {n: zin.read(n) for n in zin.namelist()}
        members["frames.npy"] = b"not an array"
        with zipfile.ZipFile(shard, "w") as zout:
            for n, blob in members.items():
                zout.writestr(n, blob)
    b = next(sequence_batches(open_dataset(d), 3, 2, seed=0, progress=False))
    assert b["mu"].shape == (2, 4, Z)


def test_missing_latents_error_names_file(tmp_path):
    d = write_synthetic(tmp_path / "data", [3, 4])
    (d / "latents" / "ep_000001.npz").unlink()
    with pytest.raises(SequenceError, match="ep_000001.npz.*wm-jax encode"):
        next(sequence_batches(open_dataset(d), 3, 2, seed=0, progress=False))


def test_episode_windows(data):
    w = episode_windows(data, [1, 2], pad_to=16)
    assert w["mu"].shape == (2, 17, Z) and list(w["lengths"]) == [9, 3]
    assert w["mask"][1].sum() == 3 and w["restart"][:, 0].tolist() == [1.0, 1.0] and w["restart"].sum() == 2
    np.testing.assert_allclose(w["mu"][0, :10, 0], np.arange(10))
    assert w["dones"][0, 8] == 1.0 and w["dones"][1].sum() == 0  # episode 1 died, episode 2 was truncated


def test_skip_corrupt_first_episode(tmp_path):
    d = write_synthetic(tmp_path / "data", [3, 4, 5])
    (d / "latents" / "ep_000000.npz").unlink()
    with pytest.warns(UserWarning, match="ep_000000"):
        b = next(sequence_batches(open_dataset(d, skip_corrupt=True), 3, 4, seed=0, progress=False))
    assert set(np.unique(b["mu"][..., 1]).tolist()) == {1.0, 2.0}  # only episodes 1 and 2 are streamed
