"""Playing episodes on a vector env: the episode runner and the host-side policies that need no models.

:func:`run_episodes` drives any policy with ``begin(slot, seed)`` / ``act(group, frames, first, index, slots)``
(the batched agent, :class:`wm_jax.agent.AgentPolicy`; :class:`RandomPolicy`; :class:`ExplorePolicy` around
either) over the slots of a :class:`~wm_jax.envs.vector.VectorEnv`. No JAX here.
"""

from __future__ import annotations

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

    n = venv.num_envs
    blocks = worker_groups(venv.num_workers, groups)
    group_slots = [np.asarray([s for w in ws for s in venv.worker_slots[w]], int) for ws in blocks]
    slot_ep = np.full(n, -1)
    cand = np.zeros(n, np.int32)
    first = np.zeros(n, bool)
    ret = np.zeros(n, np.float64)
    length = np.zeros(n, np.int64)
    since_gain = np.zeros(n, np.int64)  # steps since the last positive reward
    frames_of: dict[int, list[np.ndarray]] = {}
    traj: dict[int, tuple[list, list, list]] = {}  # slot -> (frames, actions, rewards) when on_episode is given
    results: list[EpisodeResult | None] = [None] * len(episodes)
    extremes: dict[str, tuple[float, int, np.ndarray]] = {}
    queue = list(range(len(episodes)))[::-1]
    bar = tqdm(total=len(episodes), desc=desc, disable=not progress, unit="ep", dynamic_ncols=True)

    def start(slots: np.ndarray) -> None:
        chosen, seeds = [], []
        for s in slots:
            if queue:
                e = queue.pop()
                slot_ep[s], cand[s], first[s], ret[s], length[s] = e, episodes[e].candidate, True, 0.0, 0
                since_gain[s] = 0
                policy.begin(int(s), episodes[e].seed)
                chosen.append(int(s))
                seeds.append(episodes[e].seed)
            else:
                slot_ep[s] = -1
        if chosen:
            venv.reset(chosen, seeds)
            if record:
                for s in chosen:
                    frames_of[s] = [venv.buffers["frames"][s].copy()]
            if on_episode is not None:
                for s in chosen:
                    traj[s] = ([venv.buffers["frames"][s].copy()], [], [])

    def finish(s: int, terminated: bool) -> None:
        e = int(slot_ep[s])
        results[e] = EpisodeResult(e, episodes[e].seed, int(cand[s]), float(ret[s]), int(length[s]), terminated)
        if record:
            clip = np.stack(frames_of.pop(s))
            for key, better in (("best", lambda a, b: a > b), ("worst", lambda a, b: a < b)):
                old = extremes.get(key)
                if old is None or better(ret[s], old[0]) or (ret[s] == old[0] and e < old[1]):
                    extremes[key] = (float(ret[s]), e, clip)
        if on_episode is not None:
            from wm_jax.data.shards import Episode

            fr, ac, rw = traj.pop(s)
            t = len(ac)
            ends = [np.zeros(t, bool), np.zeros(t, bool)]
            ends[0 if terminated else 1][-1] = True  # terminated, or cut (env cap or host cut): truncated
            on_episode(e, Episode(np.stack(fr), np.stack(ac).astype(np.float32), np.asarray(rw, np.float32),
                                  *ends, int(episodes[e].seed)))
        bar.update(1)
        done = [r.ret for r in results if r is not None]
        bar.set_postfix(mean=f"{np.mean(done):.1f}")

    def launch(g: int) -> bool:
        slots = group_slots[g]
        live = slots[slot_ep[slots] >= 0]
        if live.size == 0:
            return False
        acts = policy.act(g, venv.buffers["frames"][slots], first[slots], cand[slots], slots)
        first[slots] = False
        taken = np.asarray(acts)[slot_ep[slots] >= 0]
        if on_episode is not None:
            for s, a in zip(live, taken):
                traj[s][1].append(np.array(a, np.float32).reshape(-1))
        venv.step_async(live, taken)
        return True

    try:
        start(np.arange(n))
        pending = [launch(g) for g in range(len(blocks))]
        while any(pending):
            for g, ws in enumerate(blocks):
                if not pending[g]:
                    continue
                live = group_slots[g][slot_ep[group_slots[g]] >= 0]
                buf = venv.step_wait(set(ws))
                ret[live] += buf["rewards"][live]
                length[live] += 1
                since_gain[live] = np.where(buf["rewards"][live] > 0, 0, since_gain[live] + 1)
                ended = buf["terminated"][live] | buf["truncated"][live]
                if max_len > 0:
                    ended |= length[live] >= max_len
                if stall > 0:
                    ended |= since_gain[live] >= stall
                if record:
                    for s in live:
                        frames_of[s].append(buf["frames"][s].copy())
                if on_episode is not None:
                    for s in live:
                        traj[s][0].append(buf["frames"][s].copy())
                        traj[s][2].append(float(buf["rewards"][s]))
                for s, term in zip(live[ended], buf["terminated"][live][ended]):
                    finish(int(s), bool(term))
                if ended.any():
                    start(live[ended])
                pending[g] = launch(g)
    finally:
        bar.close()
    assert all(r is not None for r in results)
    return results, {k: v[2] for k, v in extremes.items()}
