"""Host environments in worker processes and the episode runner, on the simulator-free ToyEnv: slot masking,
exploration, step caps, reference policies (NumPy == JAX), and worker failures reported by name, never a hang."""

from __future__ import annotations

import time

import jax
import numpy as np
import pytest

from wm_jax.config import EnvConfig
from wm_jax.envs.vector import VectorEnv
from wm_jax.runner import EpisodeSpec, ExplorePolicy, run_episodes


class ConstantPolicy:
    """Action value `a` everywhere (ToyEnv reward per step = 1 + a)."""

    def __init__(self, a: float, dim: int = 1):
        self.a, self.dim = a, dim

    def begin(self, slot, seed):
        pass

    def act(self, group, frames, first, index, slots):
        return np.full((len(frames), self.dim), self.a, np.float32)


@pytest.mark.parametrize("groups", [1, 2])
def test_runner_masks_finished_slots_toy(groups):
    # ToyEnv: length 5 + seed % 7, capped at max_steps = 8 -> truncated; reward 1 + a = 1.5 per step.
    cfg = EnvConfig(max_steps=8)
    seeds = [0, 1, 2, 3, 4, 5, 6, 13, 20]
    with VectorEnv(cfg, 4, 2, factory="wm_jax.envs.vector:make_toy_env") as venv:
        res, clips = run_episodes(venv, ConstantPolicy(0.5), [EpisodeSpec(s) for s in seeds], groups=groups,
                                  record=True, progress=False)
    want_len = [min(5 + s % 7, 8) for s in seeds]
    assert [r.seed for r in res] == seeds
    assert [r.length for r in res] == want_len
    assert [r.terminated for r in res] == [5 + s % 7 <= 8 for s in seeds]
    np.testing.assert_allclose([r.ret for r in res], [1.5 * n for n in want_len])
    # best = first longest episode (seed 3: 8 steps -> 9 frames), worst = first shortest (seed 0: 5 -> 6 frames)
    assert clips["best"].shape == (9, 64, 64, 3) and clips["worst"].shape == (6, 64, 64, 3)
    assert clips["best"][0, 0, 0, 0] == 3 and list(clips["best"][:, 0, 0, 1]) == list(range(9))


def test_reference_policy_counts_steps_per_episode_toy():
    # sweep2: -1, -1, +1, +1, -1, ... from each episode's first step; ToyEnv reward 1 + a: 0, 0, 2, 2, 0, 0, 2, 2
    from wm_jax.runner import ReferencePolicy

    seeds = [0, 3, 0, 3, 1]  # lengths 5, 8, 5, 8, 6: slots are reused, so the step count must restart
    with VectorEnv(EnvConfig(max_steps=8), 2, 1, factory="wm_jax.envs.vector:make_toy_env") as venv:
        res, _ = run_episodes(venv, ReferencePolicy("takecover", "sweep2", 2), [EpisodeSpec(s) for s in seeds],
                              progress=False)
    assert [r.length for r in res] == [5, 8, 5, 8, 6]
    np.testing.assert_allclose([r.ret for r in res], [4, 8, 4, 8, 4])


def test_reference_policies_agree_in_numpy_and_jax():
    import jax.numpy as jnp

    from wm_jax.envs import reference

    t = np.arange(400)
    for env in ("takecover", "carracing"):
        for name in reference.names(env):
            f = reference.get(env, name)
            host = np.stack([f(i, np) for i in t])
            dream = np.asarray(jax.vmap(lambda i: f(i, jnp))(jnp.asarray(t)))
            np.testing.assert_array_equal(host, dream)
            assert host.shape == (400, 3 if env == "carracing" else 1)
    sweep = np.stack([reference.get("takecover", "sweep120")(i, np) for i in (0, 119, 120, 239, 240)])[:, 0]
    assert sweep.tolist() == [-1, -1, 1, 1, -1]  # left first, 120 steps each way
    with pytest.raises(ValueError, match="unknown reference policy 'sweep0'.*sweepN"):
        reference.get("takecover", "sweep0")
    with pytest.raises(ValueError, match="unknown reference policy 'sweep50' for carracing"):
        reference.get("carracing", "sweep50")


def test_runner_cuts_training_episodes_toy():
    # ES training cuts (es.real_max_steps / es.real_stall_steps): the host ends an episode early, not the env.
    seeds = [0, 1, 2, 3, 4, 5, 6]
    with VectorEnv(EnvConfig(max_steps=8), 3, 1, factory="wm_jax.envs.vector:make_toy_env") as venv:
        cut, _ = run_episodes(venv, ConstantPolicy(0.5), [EpisodeSpec(s) for s in seeds], max_len=6, progress=False)
        # reward 1 + a = 0 every step: no gain, so every episode stops after `stall` steps
        stalled, _ = run_episodes(venv, ConstantPolicy(-1.0), [EpisodeSpec(s) for s in seeds], stall=3,
                                  progress=False)
        whole, _ = run_episodes(venv, ConstantPolicy(-1.0), [EpisodeSpec(s) for s in seeds], progress=False)
    assert [r.length for r in cut] == [5, 6, 6, 6, 6, 6, 6]
    assert [r.terminated for r in cut] == [True, True, False, False, False, False, False]  # seed 1 ends on step 6
    np.testing.assert_allclose([r.ret for r in cut], [7.5, 9, 9, 9, 9, 9, 9])
    assert [r.length for r in stalled] == [3] * 7 and not any(r.terminated for r in stalled)
    assert [r.length for r in whole] == [min(5 + s % 7, 8) for s in seeds]  # no cut by default


def test_runner_hands_over_whole_episodes_with_exploration_toy():
    # collection with an agent (`wm-jax collect-agent`): each finished episode comes back whole, with the
    # actions actually taken -- C's 0.5, or exploration's -1 / 0 / +1 held for 1-10 steps.
    seeds = [0, 1, 2, 3, 4, 5, 6, 13]

    def play():
        got = {}
        with VectorEnv(EnvConfig(max_steps=8), 3, 1, factory="wm_jax.envs.vector:make_toy_env") as venv:
            res, _ = run_episodes(venv, ExplorePolicy(ConstantPolicy(0.5), "takecover", 0.3),
                                  [EpisodeSpec(s) for s in seeds], progress=False,
                                  on_episode=lambda e, ep: got.__setitem__(e, ep))
        return res, got

    res, got = play()
    assert sorted(got) == list(range(len(seeds)))
    for e, r in enumerate(res):
        ep = got[e]
        assert ep.seed == seeds[e] and ep.length == r.length and ep.frames.shape == (r.length + 1, 64, 64, 3)
        assert list(ep.frames[:, 0, 0, 0]) == [seeds[e]] * (r.length + 1)  # this episode's frames, in order
        assert list(ep.frames[:, 0, 0, 1]) == list(range(r.length + 1))
        np.testing.assert_allclose(ep.rewards, 1 + ep.actions[:, 0])  # reward 1 + a: the actions taken
        np.testing.assert_allclose(ep.rewards.sum(), r.ret)
        assert bool(ep.terminated[-1]) == r.terminated and bool(ep.truncated[-1]) == (not r.terminated)
        assert not ep.terminated[:-1].any() and not ep.truncated[:-1].any()
    acts = np.concatenate([got[e].actions[:, 0] for e in got])
    assert set(acts.tolist()) <= {-1.0, 0.0, 0.5, 1.0}
    assert 0.2 < (acts != 0.5).mean() < 0.95  # both C's and exploration's actions (P(random) is about 0.6-0.7 here)
    _, again = play()  # exploration is seeded by the episode seed
    assert all(np.array_equal(got[e].actions, again[e].actions) for e in got)
    with VectorEnv(EnvConfig(max_steps=8), 3, 1, factory="wm_jax.envs.vector:make_toy_env") as venv:
        plain = {}
        run_episodes(venv, ExplorePolicy(ConstantPolicy(0.5), "takecover", 0.0), [EpisodeSpec(s) for s in seeds],
                     progress=False, on_episode=lambda e, ep: plain.__setitem__(e, ep))
    assert all((ep.actions == 0.5).all() for ep in plain.values())  # epsilon 0: the wrapped policy alone


def test_vector_env_reports_worker_errors():
    with VectorEnv(EnvConfig(), 2, 1, factory="wm_jax.envs.vector:make_toy_env") as venv:
        venv.reset([0, 1], [0, 0])
        with pytest.raises(ValueError, match="non-finite"):
            venv.step_async([0], np.array([[np.nan]]))
    with pytest.raises(RuntimeError, match="cannot load env factory"):
        VectorEnv(EnvConfig(), 1, 1, factory="wm_jax.nope:make")


def test_vector_env_names_a_worker_that_dies_while_its_pipe_stays_open():
    # The worker forks a child that keeps the pipe open for 60 s, then exits with code 7 mid-step: a blocking recv
    # would wait for the child; the host must notice the dead worker itself and say which one.
    with VectorEnv(EnvConfig(max_steps=8), 2, 2, factory="crashing_env:make") as venv:
        venv.reset([0, 1], [0, 0])
        t0 = time.monotonic()
        with pytest.raises(RuntimeError, match=r"env worker 1 \(slots \[1\]\) died: .*exited with code 7"):
            venv.step([1], np.zeros((1, 1), np.float32))
        assert time.monotonic() - t0 < 30
