"""Reading collected episodes: a validated manifest view, per-episode loading, streaming shuffled frame batches.

Memory bound of :func:`frame_batches`: episodes are visited in a random order, ``buffer_episodes`` (K) at a
time; one such block is decompressed into a single uint8 array, shuffled and cut into batches while a
background thread decompresses the next block (zlib releases the GIL, so this overlaps the trainer). At most
two blocks are alive, so resident memory is about ``2 * K * (L + 1) * 12288`` bytes for episodes of L steps,
independent of the dataset size: K=16, L=1000 (CarRacing) gives ~0.4 GB for 1M frames or 100M frames alike
(``tests/test_data.py`` measures the peak RSS on two dataset sizes). The price: a batch mixes frames of K
episodes, not of the whole dataset; raise K to mix more.
"""

from __future__ import annotations

import dataclasses
import os
import queue
import threading
import warnings
from pathlib import Path
from typing import Iterator

import numpy as np

from wm_jax.data.shards import FRAME_SIZE, CorruptShardError, Episode, read_episode, read_manifest

__all__ = ["CorruptShardError", "Dataset", "Episode", "EpisodeRecord", "frame_batches", "open_dataset"]

FRAME_BYTES = FRAME_SIZE * FRAME_SIZE * 3


@dataclasses.dataclass(frozen=True)
class EpisodeRecord:
    """One manifest entry; ``rec.length`` or ``rec["length"]`` (``rec["return"]`` is ``rec.episode_return``)."""

    file: str  # path relative to the data folder, e.g. "episodes/ep_000012.npz"
    index: int  # collection index i (seed = data.seed + i unless retried)
    seed: int
    length: int  # T, the number of steps; the shard holds T + 1 frames
    episode_return: float
    terminated: bool
    truncated: bool

    def __getitem__(self, key: str):
        return self.episode_return if key == "return" else getattr(self, key)


class Dataset:
    """A list of episodes in one data folder. ``load(i)`` reads the i-th listed episode (0 <= i < len)."""

    def __init__(self, data_dir: str | os.PathLike, env: str, action_dim: int,
                 episodes: list[EpisodeRecord], skip_corrupt: bool = False):
        self.data_dir = Path(data_dir)
        self.env = env
        self.action_dim = action_dim
        self.episodes = tuple(episodes)
        self.skip_corrupt = skip_corrupt

    def __len__(self) -> int:
        return len(self.episodes)

    def __repr__(self) -> str:
        return f"Dataset({str(self.data_dir)!r}, env={self.env}, episodes={len(self)}, frames={self.num_frames})"

    @property
    def num_frames(self) -> int:
        """Frames stored (T + 1 per episode)."""
        return sum(r.length + 1 for r in self.episodes)

    @property
    def num_steps(self) -> int:
        return sum(r.length for r in self.episodes)

    def path(self, i: int) -> Path:
        return self.data_dir / self.episodes[i].file

    def load(self, i: int) -> Episode:
        """Episode i, validated (shapes, dtypes, action_dim, length); CorruptShardError names the file."""
        rec = self.episodes[i]
        ep = read_episode(self.path(i), self.action_dim, rec.length)
        if ep.seed != rec.seed:
            raise CorruptShardError(f"{self.path(i)}: seed {ep.seed} != manifest seed {rec.seed}")
        return ep

    def try_load(self, i: int) -> Episode | None:
        """Like :meth:`load`, but a corrupt shard gives None (with a warning) when ``skip_corrupt`` is set."""
        try:
            return self.load(i)
        except CorruptShardError as e:
            if not self.skip_corrupt:
                raise
            warnings.warn(f"skipping corrupt episode: {e}", stacklevel=2)
            return None

    def subset(self, positions) -> "Dataset":
        return Dataset(self.data_dir, self.env, self.action_dim, [self.episodes[i] for i in positions],
                       self.skip_corrupt)

    def split(self, n_holdout: int) -> tuple["Dataset", "Dataset"]:
        """(train, holdout): the last `n_holdout` listed episodes are held out."""
        if not 0 <= n_holdout < len(self):
            raise ValueError(f"split({n_holdout}) needs 0 <= n_holdout < {len(self)} episodes in {self.data_dir}")
        cut = len(self) - n_holdout
        return self.subset(range(cut)), self.subset(range(cut, len(self)))

    def verify(self) -> list[int]:
        """Load every episode; returns the positions of corrupt ones (raises on the first unless skip_corrupt)."""
        bad = []
        for i in range(len(self)):
            if self.try_load(i) is None:
                bad.append(i)
        return bad


def open_dataset(data_dir: str | os.PathLike, skip_corrupt: bool = False) -> Dataset:
    """Read ``<data_dir>/manifest.json`` (episodes sorted by index); a listed shard that is missing raises
    CorruptShardError naming it, or is dropped with a warning when `skip_corrupt`."""
    data_dir = Path(data_dir)
    body = read_manifest(data_dir)
    records = []
    for r in sorted(body["episodes"], key=lambda r: r["index"]):
        rec = EpisodeRecord(r["file"], r["index"], r["seed"], r["length"], float(r["return"]),
                            r["terminated"], r["truncated"])
        if not (data_dir / rec.file).is_file():
            msg = f"{data_dir / rec.file}: listed in {data_dir / 'manifest.json'} but missing"
            if not skip_corrupt:
                raise CorruptShardError(msg)
            warnings.warn(f"skipping: {msg}", stacklevel=2)
            continue
        if rec.length < 1:
            raise CorruptShardError(f"{data_dir / 'manifest.json'}: episode {rec.index} has length {rec.length}")
        records.append(rec)
    return Dataset(data_dir, body["env"], body["action_dim"], records, skip_corrupt)


# ---------------------------------------------------------------- streaming frame batches


def _block_plan(n: int, k: int, rng: np.random.Generator, epochs: int | None) -> Iterator[np.ndarray]:
    """Episode positions, K at a time: a fresh random order each epoch."""
    e = 0
    while epochs is None or e < epochs:
        order = rng.permutation(n)
        for s in range(0, n, k):
            yield order[s:s + k]
        e += 1


def _load_block(dataset: Dataset, positions: np.ndarray) -> np.ndarray:
    """All frames of the episodes at `positions`, uint8 [N, 64, 64, 3], decompressed into one array."""
    total = sum(dataset.episodes[i].length + 1 for i in positions)
    out = np.empty((total, FRAME_SIZE, FRAME_SIZE, 3), np.uint8)
    n = 0
    for i in positions:
        ep = dataset.try_load(int(i))
        if ep is not None:
            out[n:n + len(ep.frames)] = ep.frames
            n += len(ep.frames)
    return out[:n]


class _Prefetcher:
    """Decompresses the next block in a thread; at most two blocks alive (the one in use, the next)."""

    def __init__(self, blocks: Iterator[np.ndarray]):
        self.q: queue.Queue = queue.Queue(maxsize=1)
        self.slots = threading.Semaphore(2)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(blocks,), daemon=True)
        self.thread.start()

    def _run(self, blocks) -> None:
        try:
            while not self.stop.is_set():
                while not self.slots.acquire(timeout=0.1):
                    if self.stop.is_set():
                        return
                block = next(blocks, None)
                self._put(("block", block) if block is not None else ("end", None))
                if block is None:
                    return
        except BaseException as e:  # handed to the consumer, raised there
            self._put(("error", e))

    def _put(self, item) -> None:
        while not self.stop.is_set():
            try:
                self.q.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self):
        while True:
            kind, val = self.q.get()
            if kind == "error":
                raise val
            if kind == "end":
                return
            yield val
            del val
            self.slots.release()  # the consumer is done with that block

    def close(self) -> None:
        """Stop the thread and wait for it (a block being decompressed is finished first): a daemon thread
        still inside numpy or zlib when the interpreter exits can abort the process."""
        self.stop.set()
        self.thread.join(timeout=60)


def frame_batches(dataset: Dataset, batch_size: int, seed: int, epochs: int | None = None,
                  buffer_episodes: int = 16, prefetch: bool = True,
                  drop_remainder: bool = True) -> Iterator[np.ndarray]:
    """Shuffled uint8 [batch_size, 64, 64, 3] frame batches, streamed with bounded memory (module docstring).

    Same `seed` -> same batches. `epochs=None` repeats forever; otherwise stops after `epochs` passes
    (frames left over at a block's end start the next block's first batch; at the very end they are
    dropped when `drop_remainder`, else yielded as one smaller batch).
    """
    if len(dataset) == 0:
        raise ValueError(f"frame_batches: no episodes in {dataset.data_dir}")
    if batch_size < 1 or buffer_episodes < 1:
        raise ValueError(f"frame_batches: batch_size={batch_size} and buffer_episodes={buffer_episodes} must be >= 1")
    plan_rng, perm_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    blocks = (_load_block(dataset, p) for p in _block_plan(len(dataset), buffer_episodes, plan_rng, epochs))
    source = _Prefetcher(blocks) if prefetch else None
    carry = np.empty((0, FRAME_SIZE, FRAME_SIZE, 3), np.uint8)
    try:
        for block in (source if prefetch else blocks):
            perm = perm_rng.permutation(len(block))
            start = 0
            if len(carry):
                need = batch_size - len(carry)
                if len(perm) < need:  # tiny block: accumulate
                    carry = np.concatenate([carry, block[perm]])
                    continue
                yield np.concatenate([carry, block[perm[:need]]])
                start = need
            while start + batch_size <= len(perm):
                yield block[perm[start:start + batch_size]]
                start += batch_size
            carry = block[perm[start:]]
            del block
        if len(carry) and not drop_remainder:
            yield carry
    finally:
        if source is not None:
            source.close()
