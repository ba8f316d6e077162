"""Real-environment adapters: pixel identity of the fast CarRacing renderer, the alignment convention,
episode caps, determinism, the collection policies, and a JAX-free worker import path."""

import subprocess
import sys

import numpy as np
import pytest
from gymnasium.envs.box2d import car_racing as cr

from wm_jax.config import EnvConfig
from wm_jax.data.collect import collect_episode, rollout
from wm_jax.envs.frames import carracing_frame
from wm_jax.envs import make_env, make_policy, policy_rng
from wm_jax.envs.carracing import BrownianPolicy, FastCarRacing, RandomLinearPolicy
from wm_jax.envs.takecover import RepeatPolicy, SweepPolicy, action_buttons


@pytest.fixture(scope="module")
def doom():
    env = make_env(EnvConfig(name="takecover", max_steps=50))
    yield env
    env.close()


@pytest.fixture(scope="module")
def car():
    env = make_env(EnvConfig(name="carracing", max_steps=40))
    yield env
    env.close()


def test_fast_carracing_pixels_identical_to_gymnasium():
    stock, fast = cr.CarRacing(), FastCarRacing()
    for seed in (3, 11):
        a, _ = stock.reset(seed=seed)
        b, _ = fast.reset(seed=seed)
        assert np.array_equal(a, b)
        policy = BrownianPolicy()
        policy.reset(policy_rng(seed))
        for t in range(110):  # covers the zoom-in animation (t < 1 s) and tiles recoloured on first visit
            act = policy(None)
            ra, rb = stock.step(act), fast.step(act)
            assert np.array_equal(ra[0], rb[0]), f"seed {seed} step {t}: frames differ"
            assert ra[1:4] == rb[1:4]
            if ra[2]:
                break
    assert fast.tile_visited_count > 0  # the recolouring path was exercised
    stock.close()
    fast.close()


def test_carracing_episode_alignment_and_cap(car):
    reset_frame = car.reset(7)
    ep = collect_episode(car, make_policy(EnvConfig(name="carracing")), index=7, base_seed=0, min_length=1)
    assert ep.seed == 7 and ep.length == 40
    assert ep.frames.shape == (41, 64, 64, 3) and ep.frames.dtype == np.uint8
    assert ep.actions.shape == (40, 3) and ep.actions.dtype == np.float32
    assert np.array_equal(ep.frames[0], reset_frame)  # frames[0] is the reset observation
    assert ep.truncated[-1] and not ep.truncated[:-1].any() and not ep.terminated.any()
    assert np.allclose(ep.rewards[:5], -0.1, atol=1e-6) or ep.rewards.max() > 0  # -0.1 per frame + tiles
    assert np.array_equal(ep.frames[-1], carracing_frame(car.raw))  # frames[T] is the last observation
    assert (ep.actions[:, 0] >= -1).all() and (ep.actions[:, 1:] >= 0).all() and (ep.actions <= 1).all()


def test_takecover_truncated_episode(doom):
    pol = make_policy(EnvConfig(name="takecover"))
    ep = collect_episode(doom, pol, index=1, base_seed=100, min_length=1)
    assert ep.seed == 101 and ep.length == 50 and ep.frames.shape == (51, 64, 64, 3)
    assert ep.truncated[-1] and not ep.terminated.any() and not ep.truncated[:-1].any()
    assert np.array_equal(ep.rewards, np.ones(50, np.float32))  # +1 per tic alive
    assert set(np.unique(ep.actions)) <= {-1.0, 0.0, 1.0}
    again = collect_episode(doom, pol, index=1, base_seed=100, min_length=1)
    assert all(np.array_equal(x, y) for x, y in zip(ep, again))  # same seed -> same episode
    other = collect_episode(doom, pol, index=2, base_seed=100, min_length=1)
    assert not np.array_equal(ep.actions, other.actions)


class Stay:
    def reset(self, rng):
        pass

    def __call__(self, frame):
        return np.zeros(1, np.float32)


def test_takecover_death_alignment(doom):
    doom.max_steps = 2100
    try:
        first = doom.reset(5)
        ep = rollout(doom, Stay(), 5)  # standing still gets the player killed
    finally:
        doom.max_steps = 50
    t = ep.length
    assert 20 < t < 2100 and ep.frames.shape == (t + 1, 64, 64, 3)
    assert np.array_equal(ep.frames[0], first)  # frames[0]: the reset observation
    assert ep.terminated[-1] and not ep.terminated[:-1].any() and not ep.truncated.any()
    assert ep.rewards[-1] == 1.0  # the last reward belongs to the death tic
    assert np.array_equal(ep.frames[-1], ep.frames[-2])  # no state after death: the last frame repeats


def test_action_thresholds_and_policies():
    assert action_buttons(-1.0) == [1, 0] and action_buttons(-0.34) == [1, 0]
    assert action_buttons(-0.33) == [0, 0] and action_buttons(0.33) == [0, 0] and action_buttons(0.34) == [0, 1]
    pol = RepeatPolicy(1, 10)
    pol.reset(policy_rng(0))
    acts, left = [], []
    for _ in range(2000):
        acts.append(pol(None)[0])
        left.append(pol.left)
    assert set(acts) == {-1.0, 0.0, 1.0}
    assert set(left) == set(range(10))  # hold lengths 1..10 were drawn, nothing longer
    pol2 = RepeatPolicy(3, 3)
    pol2.reset(policy_rng(1))
    acts = np.array([pol2(None)[0] for _ in range(30)]).reshape(10, 3)
    assert (acts == acts[:, :1]).all()  # held for exactly 3 frames
    for p in (BrownianPolicy(), RandomLinearPolicy()):
        p.reset(policy_rng(2))
        a = np.array([p(np.full((64, 64, 3), 100, np.uint8)) for _ in range(300)])
        assert a.shape == (300, 3) and (a[:, 0] >= -1).all() and (a[:, 1:] >= 0).all() and (a <= 1).all()
    b = BrownianPolicy()
    b.reset(policy_rng(2))
    a = np.array([b(None) for _ in range(300)])
    assert np.abs(np.diff(a, axis=0)).max() < 1.0  # a random walk, not i.i.d. draws
    sweep = SweepPolicy(5, 5, random_leg=1.0)  # every leg a random hold: stays appear
    sweep.reset(policy_rng(3))
    acts = np.array([sweep(None)[0] for _ in range(500)]).reshape(100, 5)
    assert (acts == acts[:, :1]).all() and set(np.unique(acts)) == {-1.0, 0.0, 1.0}
    with pytest.raises(ValueError, match="unknown TakeCover collection policy 'zigzag'"):
        make_policy(EnvConfig(name="takecover"), "zigzag")


def test_worker_import_path_has_no_jax():
    code = ("import sys, wm_jax.data.collect, wm_jax.envs.carracing, wm_jax.envs.takecover, wm_jax.config;"
            "assert 'jax' not in sys.modules, 'jax imported'")
    subprocess.run([sys.executable, "-c", code], check=True, env={"SDL_VIDEODRIVER": "dummy", "PATH": ""})


def test_takecover_screen_flashes_show_hits(doom):
    """take_cover.cfg hides the red hit flash; env.doom_screen_flashes renders it. Same seed and actions:
    the same episode, but the hits make the frames far redder."""
    flash = make_env(EnvConfig(name="takecover", max_steps=2100, doom_screen_flashes=True))
    doom.max_steps = 2100
    try:
        plain, lit = rollout(doom, Stay(), 3), rollout(flash, Stay(), 3)  # seed 3: hit twice before dying
    finally:
        doom.max_steps = 50
        flash.close()

    def red_excess(frames):
        x = frames.astype(np.float32)
        return x[..., 0].mean((1, 2)) - x[..., 1:].mean((1, 2, 3))

    assert plain.length == lit.length and np.array_equal(plain.frames[0], lit.frames[0])
    assert red_excess(lit.frames).max() > red_excess(plain.frames).max() + 50


def test_takecover_skill_5_is_the_fast_game(doom):
    """env.doom_skill: 0 keeps take_cover.cfg's skill 4; 1-4 play one game (the monsters are scripted), 5 is
    Nightmare, whose fast fireballs kill a random player ~3x sooner (100 seeds: 71 +- 25 steps, 227 +- 92 at 1-4)."""
    def lengths(env, seeds):
        env.max_steps = 2100
        return np.array([rollout(env, RepeatPolicy(1, 1), seed).length for seed in seeds])  # uniform each step

    seeds = range(10000, 10008)
    nightmare, easy = (make_env(EnvConfig(name="takecover", doom_skill=s)) for s in (5, 2))
    try:
        assert doom.game.get_doom_skill() == 4 and nightmare.game.get_doom_skill() == 5
        default, fast, same = lengths(doom, seeds), lengths(nightmare, seeds), lengths(easy, seeds)
    finally:
        doom.max_steps = 50
        nightmare.close()
        easy.close()
    assert np.array_equal(same, default)
    assert fast.mean() < default.mean() / 2
