"""M's training data: fixed-length windows over (latent, action, reward, done) sequences, streamed.

Only the small per-step arrays are read: V's ``latents/ep_XXXXXX.npz`` (mu, logvar [T+1, Z]) and the
``actions``, ``rewards``, ``terminated`` members of each episode shard (a shard is a zip of .npy members, so
the frames are never decompressed). On first use they are copied into one flat, memory-mapped cache
(``<data_dir>/latents/.seqcache/<fingerprint>/``, built atomically: temp folder + rename), so resident memory
stays bounded however large the dataset is, and a batch is a handful of slices.

Window layout. Each epoch visits the episodes in a fresh random order (seeded) and lays them end to end
as one stream of *steps*. Episode i contributes T_i + 1 steps: its T_i real steps (input row t, target row
t+1) and one padding step (input = its last latent row, target = the next episode's first row) with
mask 0. The stream is cut into consecutive windows of L steps (L + 1 latent rows), B windows per batch.
So episodes are packed (no padding beyond one step per episode), a long episode spans several windows
(each starts from M's zero state), and ``restart`` is 1 where an episode's first step falls in the window:
the trainer resets M's state there. Targets at step t (DESIGN.md): z_{t+1} = row t+1, r_t, done_t, where
done_t is ``terminated[t]`` (an episode cut by the step cap is not a death and is not a positive), or with
``done_horizon=k`` 1 on the last k steps of an episode that ended by death (:meth:`SequenceCache.horizon_dones`).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np

CACHE_VERSION = 1
CACHE_KEYS = ("mu", "logvar", "actions", "rewards", "dones", "valid", "first")


class SequenceError(ValueError):
    """Latents or per-step arrays are missing or inconsistent; the message names the file."""


class EpisodeSequence(NamedTuple):
    """One episode's small arrays (DESIGN.md alignment)."""

    mu: np.ndarray  # float32 [T+1, Z]; row t encodes frames[t]
    logvar: np.ndarray  # float32 [T+1, Z]
    actions: np.ndarray  # float32 [T, A]
    rewards: np.ndarray  # float32 [T]
    dones: np.ndarray  # float32 [T]; terminated[t] (1 = the episode ended by death after action t)


def latents_path(dataset, i: int) -> Path:
    """``<data_dir>/latents/ep_XXXXXX.npz`` for the i-th listed episode."""
    return Path(dataset.data_dir) / "latents" / Path(dataset.episodes[i].file).name


def latents_manifest(data_dir: str | os.PathLike) -> dict:
    """``latents/manifest.json`` written by ``wm-jax encode`` ({} if absent)."""
    path = Path(data_dir) / "latents" / "manifest.json"
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise SequenceError(f"{path}: not valid JSON ({e})") from None


def load_sequence(dataset, i: int) -> EpisodeSequence:
    """Latents + actions/rewards/terminated of listed episode i, validated against the manifest length."""
    rec = dataset.episodes[i]
    t = rec.length
    lpath = latents_path(dataset, i)
    try:
        with np.load(lpath) as z:
            mu, logvar = z["mu"].astype(np.float32), z["logvar"].astype(np.float32)
    except FileNotFoundError:
        raise SequenceError(f"{lpath}: missing latents for {rec.file}; run `wm-jax encode` first") from None
    except (KeyError, OSError, ValueError, EOFError) as e:
        raise SequenceError(f"{lpath}: unreadable latents ({type(e).__name__}: {e})") from None
    if mu.ndim != 2 or mu.shape[0] != t + 1 or logvar.shape != mu.shape:
        raise SequenceError(f"{lpath}: mu/logvar must be [T+1={t + 1}, Z], got {mu.shape} and {logvar.shape}")
    spath = Path(dataset.data_dir) / rec.file
    try:
        with np.load(spath) as s:  # members are read lazily: 'frames' is never decompressed here
            actions, rewards, term = s["actions"], s["rewards"], s["terminated"]
    except (KeyError, OSError, ValueError, EOFError) as e:
        raise SequenceError(f"{spath}: unreadable episode shard ({type(e).__name__}: {e})") from None
    a_dim = getattr(dataset, "action_dim", actions.shape[-1])
    if actions.shape != (t, a_dim) or rewards.shape != (t,) or term.shape != (t,):
        raise SequenceError(f"{spath}: actions/rewards/terminated must be [{t}, {a_dim}]/[{t}]/[{t}], "
                            f"got {actions.shape}/{rewards.shape}/{term.shape}")
    if not (np.isfinite(mu).all() and np.isfinite(logvar).all()):
        raise SequenceError(f"{lpath}: non-finite latents")
    return EpisodeSequence(mu, logvar, actions.astype(np.float32), rewards.astype(np.float32),
                           term.astype(np.float32))


# ---------------------------------------------------------------- the flat memory-mapped cache


def _fingerprint(dataset) -> str:
    h = hashlib.sha1(f"v{CACHE_VERSION}".encode())
    h.update(json.dumps(latents_manifest(dataset.data_dir).get("vae_step")).encode())
    for i, rec in enumerate(dataset.episodes):
        st = latents_path(dataset, i).stat() if latents_path(dataset, i).exists() else None
        h.update(f"{rec.file}:{rec.length}:{st and st.st_size}:{st and st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


class SequenceCache:
    """Flat per-row arrays of a dataset (episode i owns rows offsets[i] .. offsets[i+1]-1, i.e. T_i + 1 rows).

    Row r of episode i, step t = r - offsets[i]: mu/logvar of frames[t]; actions/rewards/dones of step t
    (zeros on the last row); valid = t < T_i; first = t == 0.
    """

    def __init__(self, folder: Path):
        self.folder = folder
        self.offsets = np.load(folder / "offsets.npy")
        self.arrays = {k: np.load(folder / f"{k}.npy", mmap_mode="r") for k in CACHE_KEYS}

    @property
    def rows(self) -> int:
        return int(self.offsets[-1])

    @property
    def z_dim(self) -> int:
        return int(self.arrays["mu"].shape[1])

    @property
    def action_dim(self) -> int:
        return int(self.arrays["actions"].shape[1])

    def horizon_dones(self, horizon: int) -> np.ndarray:
        """float32 [rows]: 1 on the last `horizon` steps of each episode that ended by death (its done row and
        the horizon - 1 steps before it, within the episode), 0 elsewhere; horizon 1 is the ``dones`` array."""
        if horizon < 1:
            raise ValueError(f"done horizon must be >= 1, got {horizon}")
        dones = np.asarray(self.arrays["dones"])
        lengths = np.diff(self.offsets)  # T_i + 1 rows per episode (0 for a skipped one)
        kept = np.flatnonzero(lengths > 1)
        last = self.offsets[kept + 1] - 2  # row of each episode's last real step
        died = dones[last] > 0
        out = np.zeros_like(dones, dtype=np.float32)
        for k in range(horizon):
            rows = last - k
            ok = died & (rows >= self.offsets[kept])
            out[rows[ok]] = 1.0
        return out


def open_cache(dataset, cache_root: str | os.PathLike | None = None, progress: bool = True) -> SequenceCache:
    """The dataset's flat cache, built (once, atomically) if absent. Corrupt episodes: see Dataset.skip_corrupt."""
    if len(dataset) == 0:
        raise SequenceError(f"no episodes in {dataset.data_dir}")
    root = Path(cache_root) if cache_root else Path(dataset.data_dir) / "latents" / ".seqcache"
    folder = root / _fingerprint(dataset)
    if (folder / "offsets.npy").exists():
        return SequenceCache(folder)
    seqs = _iter_sequences(dataset, progress)
    skipped_first = 0
    for first in seqs:  # the first readable episode fixes Z and A
        if first is not None:
            break
        skipped_first += 1
    else:
        raise SequenceError(f"{dataset.data_dir}: no readable episode with latents")
    lengths = [r.length for r in dataset.episodes]
    n_rows = sum(t + 1 for t in lengths)
    tmp = root / f".tmp-{folder.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    z, a = first.mu.shape[1], first.actions.shape[1]
    shapes = {"mu": (n_rows, z), "logvar": (n_rows, z), "actions": (n_rows, a), "rewards": (n_rows,),
              "dones": (n_rows,), "valid": (n_rows,), "first": (n_rows,)}
    out = {k: np.lib.format.open_memmap(tmp / f"{k}.npy", "w+", np.float32, shapes[k]) for k in CACHE_KEYS}
    offsets, r = [0] * (skipped_first + 1), 0
    for seq in _chain(first, seqs):
        if seq is None:  # skipped corrupt episode: keeps no rows
            offsets.append(r)
            continue
        if seq.mu.shape[1] != z or seq.actions.shape[1] != a:
            raise SequenceError(f"{dataset.data_dir}: episodes disagree on Z/A "
                                f"({seq.mu.shape[1]}/{seq.actions.shape[1]} vs {z}/{a})")
        t = len(seq.actions)
        out["mu"][r:r + t + 1], out["logvar"][r:r + t + 1] = seq.mu, seq.logvar
        out["actions"][r:r + t], out["rewards"][r:r + t], out["dones"][r:r + t] = seq.actions, seq.rewards, seq.dones
        out["valid"][r:r + t] = 1.0
        out["first"][r] = 1.0
        r += t + 1
        offsets.append(r)
    for m in out.values():
        m.flush()
    del out
    if r != n_rows:  # corrupt episodes were skipped: shrink the row count recorded in offsets only
        warnings.warn(f"{dataset.data_dir}: {n_rows - r} rows of skipped episodes left unused in the cache",
                      stacklevel=2)
    np.save(tmp / "offsets.npy", np.asarray(offsets, np.int64))
    try:
        os.replace(tmp, folder)
    except OSError:  # another process built it first
        shutil.rmtree(tmp, ignore_errors=True)
    return SequenceCache(folder)


def _chain(first, rest):
    yield first
    yield from rest


def _iter_sequences(dataset, progress: bool) -> Iterator[EpisodeSequence | None]:
    from tqdm import tqdm

    for i in tqdm(range(len(dataset)), desc="caching latents", unit="ep", disable=not progress, leave=False):
        try:
            yield load_sequence(dataset, i)
        except SequenceError as e:
            if not getattr(dataset, "skip_corrupt", False):
                raise
            warnings.warn(f"skipping episode: {e}", stacklevel=2)
            yield None


# ---------------------------------------------------------------- windows


class _Stream:
    """Maps global step s of the endless stream to a cache row (see the module docstring)."""

    def __init__(self, cache: SequenceCache, seed: int):
        self.cache, self.seed = cache, seed
        lengths = np.diff(cache.offsets)
        self.episodes = np.flatnonzero(lengths > 0)
        self.lengths = lengths[self.episodes]
        self.per_epoch = int(self.lengths.sum())
        self._epochs: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def _epoch(self, e: int) -> tuple[np.ndarray, np.ndarray]:
        if e not in self._epochs:
            perm = np.random.default_rng([self.seed, e]).permutation(len(self.episodes))
            starts = np.concatenate([[0], np.cumsum(self.lengths[perm])[:-1]])
            if len(self._epochs) > 2:
                self._epochs.pop(min(self._epochs))
            self._epochs[e] = (perm, starts)
        return self._epochs[e]

    def rows(self, s0: int, n: int) -> np.ndarray:
        """Cache rows of global steps s0 .. s0+n-1: int64 [n]."""
        steps = s0 + np.arange(n, dtype=np.int64)
        epochs, local = np.divmod(steps, self.per_epoch)
        out = np.empty(n, np.int64)
        for e in np.unique(epochs):
            sel = epochs == e
            perm, starts = self._epoch(int(e))
            j = np.searchsorted(starts, local[sel], side="right") - 1
            out[sel] = self.cache.offsets[self.episodes[perm[j]]] + (local[sel] - starts[j])
        return out


def sequence_batches(dataset, seq_len: int, batch_size: int, seed: int, *, start: int = 0,
                     cache_root: str | os.PathLike | None = None, progress: bool = True,
                     done_horizon: int = 1) -> Iterator[dict]:
    """Endless training batches of packed windows (module docstring); `start` skips that many batches.
    `done_horizon` > 1 spreads each death over the episode's last steps (:meth:`SequenceCache.horizon_dones`).

    Yields numpy dicts: mu, logvar float32 [B, L+1, Z]; actions [B, L, A]; rewards, dones, mask,
    restart float32 [B, L]. Same (dataset, seed, start) -> same batches, so a resumed run continues the
    exact sequence of a run that was not interrupted.
    """
    if seq_len < 1 or batch_size < 1:
        raise ValueError(f"sequence_batches: seq_len={seq_len} and batch_size={batch_size} must be >= 1")
    cache = open_cache(dataset, cache_root, progress)
    stream = _Stream(cache, seed)
    a = dict(cache.arrays)
    if done_horizon != 1:
        a["dones"] = cache.horizon_dones(done_horizon)
    b = start
    while True:
        rows = np.stack([stream.rows((b * batch_size + w) * seq_len, seq_len + 1) for w in range(batch_size)])
        step_rows = rows[:, :-1]
        yield {
            "mu": a["mu"][rows], "logvar": a["logvar"][rows], "actions": a["actions"][step_rows],
            "rewards": a["rewards"][step_rows], "dones": a["dones"][step_rows], "mask": a["valid"][step_rows],
            "restart": a["first"][step_rows],
        }
        b += 1


def episode_windows(dataset, positions: list[int] | range | None = None, pad_to: int | None = None) -> dict:
    """Whole episodes, one per row, from step 0 and padded to a common length (for held-out evaluation).

    Returns the same keys as :func:`sequence_batches` with L = max T (or `pad_to`), plus ``lengths`` [N].
    """
    positions = list(range(len(dataset))) if positions is None else list(positions)
    seqs = [load_sequence(dataset, i) for i in positions]
    if not seqs:
        raise SequenceError(f"episode_windows: no episodes selected in {dataset.data_dir}")
    lengths = np.asarray([len(s.actions) for s in seqs])
    n, big_l = len(seqs), int(pad_to or lengths.max())
    if big_l < lengths.max():
        raise SequenceError(f"episode_windows: pad_to={pad_to} is shorter than an episode ({lengths.max()} steps)")
    z, a_dim = seqs[0].mu.shape[1], seqs[0].actions.shape[1]
    out = {"mu": np.zeros((n, big_l + 1, z), np.float32), "logvar": np.zeros((n, big_l + 1, z), np.float32),
           "actions": np.zeros((n, big_l, a_dim), np.float32)}
    out.update({k: np.zeros((n, big_l), np.float32) for k in ("rewards", "dones", "mask", "restart")})
    for j, s in enumerate(seqs):
        t = len(s.actions)
        out["mu"][j, :t + 1], out["logvar"][j, :t + 1] = s.mu, s.logvar
        out["actions"][j, :t], out["rewards"][j, :t], out["dones"][j, :t] = s.actions, s.rewards, s.dones
        out["mask"][j, :t] = 1.0
        out["restart"][j, 0] = 1.0
    out["lengths"] = lengths
    return out
