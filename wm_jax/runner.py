"""Playing episodes on a vector env: the episode runner and the host-side policies that need no models.

:func:`run_episodes` drives any policy with ``begin(slot, seed)`` / ``act(group, frames, first, index, slots)``
(the batched agent, :class:`wm_jax.agent.AgentPolicy`; :class:`RandomPolicy`; :class:`ExplorePolicy` around
either) over the slots of a :class:`~wm_jax.envs.vector.VectorEnv`. No JAX here.
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import numpy as np

from wm_jax.envs.spec import random_action


class RandomPolicy:
    """The random baseline: uniform actions, a numpy generator per episode seeded by the episode's seed.

    TakeCover: -1 / 0 / +1 with equal probability each step; CarRacing: steer U[-1, 1], gas U[0, 1],
    brake U[0, 1]. No models, no JAX.
    """

    def __init__(self, env_name: str, num_envs: int, seed_offset: int = 7919):
        self.env_name = env_name
        self.offset = seed_offset
        self.rngs: list[np.random.Generator | None] = [None] * num_envs

    def begin(self, slot: int, seed: int) -> None:
        self.rngs[slot] = np.random.default_rng([int(seed), self.offset])

    def act(self, group: int, frames: np.ndarray, first: np.ndarray, index: np.ndarray,
            slots: np.ndarray) -> np.ndarray:
        return np.asarray([random_action(self.env_name, self.rngs[s] or np.random.default_rng(0)) for s in slots],
                          np.float32)


class ReferencePolicy:
    """A fixed policy of :mod:`wm_jax.envs.reference` (``stay``, ``sweep120``, ...): the action depends only on
    the step index within the episode, counted per slot from :meth:`begin`. No models, no JAX."""

    def __init__(self, env_name: str, name: str, num_envs: int):
        from wm_jax.envs import reference

        self.fn = reference.get(env_name, name)
        self.t = np.zeros(num_envs, np.int64)

    def begin(self, slot: int, seed: int) -> None:
        self.t[slot] = 0

    def act(self, group: int, frames: np.ndarray, first: np.ndarray, index: np.ndarray,
            slots: np.ndarray) -> np.ndarray:
        acts = np.stack([np.asarray(self.fn(self.t[s], np), np.float32).reshape(-1) for s in slots])
        self.t[slots] += 1
        return acts


class ExplorePolicy:
    """Exploration noise around another policy (data collection with a trained agent, the paper's section 5).

    At each step a slot that is not already exploring starts, with probability `epsilon`, a uniform random
    action held for `hold` = (lo, hi) steps (uniform, inclusive), as the random collection policy holds its
    actions. The wrapped agent's M still steps with C's own action (its hidden state is C's input only).
    Per-episode generators are seeded by the episode's seed: the same seeds give the same episodes.
    """

    def __init__(self, inner, env_name: str, epsilon: float, hold: tuple[int, int] = (1, 10),
                 seed_offset: int = 0xE4):
        self.inner, self.env_name, self.epsilon, self.hold, self.offset = inner, env_name, epsilon, hold, seed_offset
        self.rngs: dict[int, np.random.Generator] = {}
        self.held: dict[int, tuple[list[float], int]] = {}  # slot -> (action, steps left)

    def begin(self, slot: int, seed: int) -> None:
        self.inner.begin(slot, seed)
        self.rngs[slot] = np.random.default_rng([int(seed), self.offset])
        self.held.pop(slot, None)

    def act(self, group: int, frames: np.ndarray, first: np.ndarray, index: np.ndarray,
            slots: np.ndarray) -> np.ndarray:
        actions = np.array(self.inner.act(group, frames, first, index, slots), np.float32)
        for row, s in enumerate(int(s) for s in slots):
            rng = self.rngs.get(s)
            if rng is None:
                continue
            action, left = self.held.get(s, (None, 0))
            if left == 0 and rng.random() < self.epsilon:
                action, left = random_action(self.env_name, rng), int(rng.integers(self.hold[0], self.hold[1] + 1))
            if left > 0:
                actions[row] = action
                self.held[s] = (action, left - 1)
        return actions


# ---------------------------------------------------------------- the episode runner


class EpisodeSpec(NamedTuple):
    seed: int  # environment seed (same seed -> same track / same Doom episode)
    candidate: int = 0  # which controller (row of AgentParams.controllers) plays it


class EpisodeResult(NamedTuple):
    index: int  # position in the requested episode list
    seed: int
    candidate: int
    ret: float  # undiscounted return
    length: int  # steps taken
    terminated: bool  # ended by the environment (False: cut by the step cap)


def worker_groups(num_workers: int, groups: int) -> list[list[int]]:
    """Split workers into `groups` contiguous blocks (fewer if there are fewer workers)."""
    g = max(1, min(groups, num_workers))
    bounds = np.linspace(0, num_workers, g + 1).round().astype(int)
    return [list(range(bounds[i], bounds[i + 1])) for i in range(g)]


def run_episodes(venv, policy, episodes: list[EpisodeSpec], groups: int = 1, record: bool = False,
                 progress: bool = True, desc: str = "episodes", max_len: int = 0, stall: int = 0,
                 on_episode=None) -> tuple[list[EpisodeResult], dict[str, np.ndarray]]:
    """Play `episodes` on the slots of `venv`, a new episode starting in a slot as soon as its last one ends.

    Slots whose episode ended and have none left are masked: not stepped, their actions ignored; the policy
    still sees the whole group (fixed shapes, one compilation). With ``groups = 2`` the workers form two
    blocks stepped in turn, so one block's environments run while the host computes the other's actions.

    The host may cut an episode short (terminated=False): after `max_len` steps, or after `stall` steps in a
    row without a positive reward (0 = never; ES training episodes only, see ``es.real_max_steps``).

    `on_episode(index, episode)`, if given, receives each finished episode whole as a
    :class:`wm_jax.data.shards.Episode` (frames, the actions taken, rewards, end flags): collection with an agent.

    Returns the results in the order of `episodes`, and (if `record`) the frames of the best and the worst
    episode as uint8 [T+1, S, S, 3] under "best" / "worst" (ties go to the lower episode index).
    """
    from tqdm import tqdm

    clips = ExtremeClips() if record else None
    sink = EpisodeSink(on_episode, episodes) if on_episode is not None else None
    recorders = [r for r in (clips, sink) if r is not None]
    bar = tqdm(total=len(episodes), desc=desc, disable=not progress, unit="ep", dynamic_ncols=True)

    def report(done: list[EpisodeResult]) -> None:
        bar.update(1)
        bar.set_postfix(mean=f"{np.mean([r.ret for r in done]):.1f}")

    try:
        results = EpisodeLoop(venv, policy, episodes, groups, max_len, stall, recorders, report).run()
    finally:
        bar.close()
    return results, clips.clips() if clips is not None else {}


@dataclasses.dataclass
class SlotBook:
    """What each slot of the vector env plays (arrays [num_envs], updated in place)."""
    episode: np.ndarray  # int: index into the requested episodes (-1: idle, none left to play)
    candidate: np.ndarray  # int32: the controller (row of AgentParams.controllers) playing it
    first: np.ndarray  # bool: the next action is the episode's first
    ret: np.ndarray  # float64: return so far
    length: np.ndarray  # int64: steps so far
    since_gain: np.ndarray  # int64: steps since the last positive reward

    @classmethod
    def idle(cls, n: int) -> SlotBook:
        return cls(np.full(n, -1), np.zeros(n, np.int32), np.zeros(n, bool), np.zeros(n, np.float64),
                   np.zeros(n, np.int64), np.zeros(n, np.int64))


class EpisodeLoop:
    """``run_episodes``' loop: start episodes in free slots, launch each block's step, book its outcome.
    `recorders` see every slot's frames and actions (``ExtremeClips``, ``EpisodeSink``); `progress_fn(done)` gets
    the finished episodes' results after each one ends."""

    def __init__(self, venv, policy, episodes: list[EpisodeSpec], groups: int, max_len: int, stall: int,
                 recorders: list, progress_fn):
        self.venv, self.policy, self.episodes, self.max_len, self.stall = venv, policy, episodes, max_len, stall
        self.recorders, self.progress_fn = recorders, progress_fn
        self.blocks = worker_groups(venv.num_workers, groups)
        self.group_slots = [np.asarray([s for w in ws for s in venv.worker_slots[w]], int) for ws in self.blocks]
        self.book = SlotBook.idle(venv.num_envs)
        self.results: list[EpisodeResult | None] = [None] * len(episodes)
        self.queue = list(range(len(episodes)))[::-1]

    def run(self) -> list[EpisodeResult]:
        self.start(np.arange(self.venv.num_envs))
        pending = [self.launch(g) for g in range(len(self.blocks))]
        while any(pending):
            for g in range(len(self.blocks)):
                if pending[g]:
                    pending[g] = self.advance(g)
        assert all(r is not None for r in self.results)
        return self.results

    def start(self, slots: np.ndarray) -> None:
        """The next queued episodes begin in `slots` (those left over go idle)."""
        b, chosen, seeds = self.book, [], []
        for s in slots:
            if not self.queue:
                b.episode[s] = -1
                continue
            e = self.queue.pop()
            b.episode[s], b.candidate[s], b.first[s] = e, self.episodes[e].candidate, True
            b.ret[s], b.length[s], b.since_gain[s] = 0.0, 0, 0
            self.policy.begin(int(s), self.episodes[e].seed)
            chosen.append(int(s))
            seeds.append(self.episodes[e].seed)
        if chosen:
            self.venv.reset(chosen, seeds)
            for rec in self.recorders:
                for s in chosen:
                    rec.begin(s, self.venv.buffers["frames"][s])

    def launch(self, g: int) -> bool:
        """Block g's live slots start their next step (False: none is live)."""
        slots, b = self.group_slots[g], self.book
        live = slots[b.episode[slots] >= 0]
        if live.size == 0:
            return False
        acts = self.policy.act(g, self.venv.buffers["frames"][slots], b.first[slots], b.candidate[slots], slots)
        b.first[slots] = False
        taken = np.asarray(acts)[b.episode[slots] >= 0]
        for rec in self.recorders:
            for s, a in zip(live, taken):
                rec.action(s, a)
        self.venv.step_async(live, taken)
        return True

    def advance(self, g: int) -> bool:
        """Wait for block g's step, book it, end and restart episodes, then launch the block's next step."""
        live = self.group_slots[g][self.book.episode[self.group_slots[g]] >= 0]
        buf = self.venv.step_wait(set(self.blocks[g]))
        ended = self.book_step(live, buf)
        for rec in self.recorders:
            for s in live:
                rec.step(s, buf["frames"][s], buf["rewards"][s])
        for s, term in zip(live[ended], buf["terminated"][live][ended]):
            self.finish(int(s), bool(term))
        if ended.any():
            self.start(live[ended])
        return self.launch(g)

    def book_step(self, live: np.ndarray, buf: dict) -> np.ndarray:
        """Add a step's rewards to the `live` slots; returns which of them ended (env end, or a host cut)."""
        b = self.book
        b.ret[live] += buf["rewards"][live]
        b.length[live] += 1
        b.since_gain[live] = np.where(buf["rewards"][live] > 0, 0, b.since_gain[live] + 1)
        ended = buf["terminated"][live] | buf["truncated"][live]
        if self.max_len > 0:
            ended |= b.length[live] >= self.max_len
        if self.stall > 0:
            ended |= b.since_gain[live] >= self.stall
        return ended

    def finish(self, s: int, terminated: bool) -> None:
        b = self.book
        e = int(b.episode[s])
        self.results[e] = EpisodeResult(e, self.episodes[e].seed, int(b.candidate[s]), float(b.ret[s]),
                                        int(b.length[s]), terminated)
        for rec in self.recorders:
            rec.end(s, e, b.ret[s], terminated)
        self.progress_fn([r for r in self.results if r is not None])


class ExtremeClips:
    """``record``: every slot's frames; the best and the worst finished episode's clip (ties: lower index)."""

    def __init__(self):
        self.frames: dict[int, list[np.ndarray]] = {}
        self.extremes: dict[str, tuple[float, int, np.ndarray]] = {}

    def begin(self, s: int, frame: np.ndarray) -> None:
        self.frames[s] = [frame.copy()]

    def action(self, s: int, action: np.ndarray) -> None:
        pass

    def step(self, s: int, frame: np.ndarray, reward: float) -> None:
        self.frames[s].append(frame.copy())

    def end(self, s: int, e: int, ret: float, terminated: bool) -> None:
        clip = np.stack(self.frames.pop(s))
        for key, better in (("best", lambda a, b: a > b), ("worst", lambda a, b: a < b)):
            old = self.extremes.get(key)
            if old is None or better(ret, old[0]) or (ret == old[0] and e < old[1]):
                self.extremes[key] = (float(ret), e, clip)

    def clips(self) -> dict[str, np.ndarray]:
        return {k: v[2] for k, v in self.extremes.items()}


class EpisodeSink:
    """``on_episode``: every slot's frames, actions and rewards, handed over whole when its episode ends."""

    def __init__(self, on_episode, episodes: list[EpisodeSpec]):
        self.on_episode, self.episodes = on_episode, episodes
        self.traj: dict[int, tuple[list, list, list]] = {}  # slot -> (frames, actions, rewards)

    def begin(self, s: int, frame: np.ndarray) -> None:
        self.traj[s] = ([frame.copy()], [], [])

    def action(self, s: int, action: np.ndarray) -> None:
        self.traj[s][1].append(np.array(action, np.float32).reshape(-1))

    def step(self, s: int, frame: np.ndarray, reward: float) -> None:
        self.traj[s][0].append(frame.copy())
        self.traj[s][2].append(float(reward))

    def end(self, s: int, e: int, ret: float, terminated: bool) -> None:
        from wm_jax.data.shards import Episode

        fr, ac, rw = self.traj.pop(s)
        t = len(ac)
        ends = [np.zeros(t, bool), np.zeros(t, bool)]
        ends[0 if terminated else 1][-1] = True  # terminated, or cut (env cap or host cut): truncated
        self.on_episode(e, Episode(np.stack(fr), np.stack(ac).astype(np.float32), np.asarray(rw, np.float32),
                                   *ends, int(self.episodes[e].seed)))
