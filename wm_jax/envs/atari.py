"""Atari 2600 games (ALE, gymnasium's v5 API) as a host-side adapter with the Atari 100k protocol.

The protocol of the 100k benchmark as IRIS and DIAMOND run it (their NoFrameskip-v4 setting):

- ``ALE/<Game>-v5`` with ``frameskip=1``, ``repeat_action_probability`` = ``env.atari_sticky`` (default 0, as
  NoFrameskip-v4), the minimal action set (``full_action_space=False``);
- one agent step = ``env.atari_frameskip`` (4) emulator frames with the same action; the reward is their sum and
  the observation the pixel-wise max of the last two frames (sprites that flicker between frames stay visible);
- at reset a uniform 1..``env.atari_noop_max`` (30) NOOP frames, drawn from the episode's seed; these are part of
  the reset, not agent steps, and are not counted in the interaction budget (as in the benchmark's wrappers);
- no life-loss signal: an episode ends at game over (``terminated``) or after ``env.max_steps`` agent steps
  (``truncated``; the benchmark's 108,000 frames = 27,000 steps);
- games that stand still until FIRE is pressed (``FIRE_TO_START``: Breakout) get it pressed for them, as the
  DQN-era ``FireResetEnv`` does: one agent step's frames of FIRE at reset and again after every lost life
  (``env.atari_fire_reset``, default on; off, a C that never fires plays 27,000 steps of nothing). Like the no-ops
  these frames belong to the reset (or to the step that lost the life), not to the agent's step count;
- the whole 210x160 screen area-averaged to 64x64x3 (``wm_jax.envs.frames.atari_frame``); rewards are the game's
  own (M's reward head may learn their sign: ``mdnrnn.reward_sign``).

Actions: a one-hot float vector over the minimal action set (``wm_jax.envs.spec.ATARI_GAMES``); the adapter plays
its argmax.
"""

from __future__ import annotations

import numpy as np

from wm_jax.envs.frames import atari_frame
from wm_jax.envs.spec import ATARI_GAMES, one_hot

# Games whose ball stays put until FIRE is pressed, at the start and after each lost life.
FIRE_TO_START = frozenset({"breakout"})


class AtariEnv:
    """``reset(seed) -> frame``, ``step(action) -> (frame, reward, terminated, truncated)``; frames uint8 [64, 64, 3]."""

    name = "atari"

    def __init__(self, game: str, max_steps: int = 27_000, frame_size: int = 64, frameskip: int = 4,
                 noop_max: int = 30, sticky: float = 0.0, fire_reset: bool = True):
        import ale_py
        import gymnasium as gym

        if game not in ATARI_GAMES:
            raise ValueError(f"unknown env.atari_game {game!r}; known: {', '.join(sorted(ATARI_GAMES))}")
        gym.register_envs(ale_py)
        rom, meanings = ATARI_GAMES[game]
        self.env = gym.make(f"ALE/{rom}-v5", frameskip=1, repeat_action_probability=sticky,
                            full_action_space=False)
        self.ale = self.env.unwrapped.ale
        self.actions = list(self.env.unwrapped._action_set)
        got = tuple(self.env.unwrapped.get_action_meanings())
        if got != meanings:  # the one-hot layout on disk and in M is this table's
            raise RuntimeError(f"ALE's {rom} action set {got} differs from wm_jax.envs.spec.ATARI_GAMES {meanings}")
        self.game, self.action_dim = game, len(meanings)
        self.max_steps, self.frame_size, self.frameskip, self.noop_max = max_steps, frame_size, frameskip, noop_max
        h, w = self.ale.getScreenDims()
        self.screens = np.zeros((2, h, w, 3), np.uint8)  # the last two frames of a step, max-pooled
        self.fire = self.actions[meanings.index("FIRE")] if fire_reset and game in FIRE_TO_START else None
        self.t = self.lives = 0
        self.frame = None

    def _observe(self) -> np.ndarray:
        return atari_frame(np.maximum(self.screens[0], self.screens[1]), self.frame_size)

    def reset(self, seed: int) -> np.ndarray:
        seed = int(seed) % 2**31
        while True:
            self.env.reset(seed=seed)
            noops = int(np.random.default_rng([seed, 0xA7A1]).integers(1, self.noop_max + 1)) if self.noop_max else 0
            for _ in range(noops):
                self.ale.act(self.actions[0])
            if not self.ale.game_over():
                break
            seed = (seed + 1) % 2**31  # a game over within the no-ops (none of the four games has one)
        if self.fire is not None:
            self._frames(self.fire)  # its reward (none: the ball is not in play yet) is dropped with the reset's
        else:
            self.ale.getScreenRGB(self.screens[0])
            self.screens[1] = self.screens[0]
        self.t, self.lives = 0, self.ale.lives()
        self.frame = self._observe()
        return self.frame

    def _frames(self, a) -> tuple[float, bool]:
        """One agent step's emulator frames of ALE action ``a`` (fewer at game over): (reward sum, game over);
        leaves the last two frames in ``screens``."""
        reward, over = 0.0, False
        for i in range(self.frameskip):
            reward += self.ale.act(a)
            over = self.ale.game_over()
            if over:
                break
            if i == self.frameskip - 2:
                self.ale.getScreenRGB(self.screens[0])
        self.ale.getScreenRGB(self.screens[1])
        if over or self.frameskip == 1:  # no second-to-last frame of this step: the last one alone
            self.screens[0] = self.screens[1]
        return reward, over

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool]:
        """action float32 [A]: one-hot (any vector: its argmax is played)."""
        a = self.actions[int(np.argmax(np.asarray(action, np.float32).reshape(-1)))]
        reward, over = self._frames(a)
        if self.fire is not None and not over and self.ale.lives() < self.lives:  # a life lost: serve again
            r, over = self._frames(self.fire)
            reward += r
        self.lives = self.ale.lives()
        self.t += 1
        terminated = bool(over)
        truncated = not terminated and self.t >= self.max_steps
        self.frame = self._observe()
        return self.frame, float(reward), terminated, truncated

    def close(self) -> None:
        self.env.close()


class UniformPolicy:
    """The Atari collection policy: a uniform random action (its one-hot), held for a uniform 1..`repeat_max`
    steps (1: a new action every step, SimPLe's random policy). Holding matters where a reward needs many steps of
    one action: in Freeway, 3 episodes of 1,000 steps cross the road 0 times with a new action every step, 4 times
    holding 1..10 steps, 6 times holding 1..30 (seeds 0-2)."""

    def __init__(self, action_dim: int, repeat_max: int = 1):
        self.n, self.repeat_max = action_dim, repeat_max

    def reset(self, rng: np.random.Generator) -> None:
        self.rng, self.left, self.a = rng, 0, 0

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        if self.left == 0:
            self.a = int(self.rng.integers(self.n))
            self.left = int(self.rng.integers(1, self.repeat_max + 1)) if self.repeat_max > 1 else 1
        self.left -= 1
        return np.asarray(one_hot(self.a, self.n), np.float32)
