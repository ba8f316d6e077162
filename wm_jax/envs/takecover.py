"""VizDoom TakeCover as a host-side adapter, and the original's random collection policy.

- Scenario: ``vizdoom.scenarios_path/take_cover.cfg`` (buttons MOVE_LEFT, MOVE_RIGHT; +1 reward per tic
  alive), frame skip 1 (every tic is a step, as in the paper).
- Frames: ViZDoom renders at RES_160X120 (its smallest 4:3 mode, cheaper to render than the cfg's 320x240),
  RGB24, then the 120x160 image is area-averaged to 64x64 (``wm_jax.envs.frames.doom_frame``).
- Actions: one float per step, stored as -1 (left), 0 (stay), +1 (right); the adapter presses MOVE_LEFT
  for a < -1/3, MOVE_RIGHT for a > 1/3, nothing in between (so a controller's tanh output maps too).
- Episode end: the player's death gives ``terminated=True`` (the reward of that last step is the living
  reward of the death tic). ``screen_flashes=True`` renders the red flash of a fireball hit (take_cover.cfg
  turns it off, and the HUD is off too, so the frames do not show the health lost before a death).
  ViZDoom has no state after death, so the final frame ``frames[T]`` repeats
  the last rendered frame. The scenario has no timeout; this adapter cuts episodes after `max_steps`
  actions (paper: 2100) with ``truncated=True``.
"""

from __future__ import annotations

import os

import numpy as np
import vizdoom as vzd

from wm_jax.envs.frames import doom_frame

LEFT, STAY, RIGHT = [1, 0], [0, 0], [0, 1]


def action_buttons(a: float) -> list[int]:
    """Float action -> [MOVE_LEFT, MOVE_RIGHT] buttons, thresholds -1/3 and +1/3."""
    if a < -1.0 / 3.0:
        return LEFT
    if a > 1.0 / 3.0:
        return RIGHT
    return STAY


class TakeCoverEnv:
    """``reset(seed) -> frame``, ``step(action) -> (frame, reward, terminated, truncated)``; frames uint8 [64, 64, 3]."""

    action_dim = 1
    name = "takecover"

    def __init__(self, max_steps: int = 2100, frame_size: int = 64, resolution: str = "RES_160X120",
                 screen_flashes: bool = False, skill: int = 0):
        game = vzd.DoomGame()
        game.load_config(os.path.join(vzd.scenarios_path, "take_cover.cfg"))
        game.set_screen_resolution(getattr(vzd.ScreenResolution, resolution))
        game.set_screen_format(vzd.ScreenFormat.RGB24)
        game.set_window_visible(False)
        game.set_sound_enabled(False)
        game.set_mode(vzd.Mode.PLAYER)
        game.set_render_screen_flashes(screen_flashes)  # take_cover.cfg turns the red "hit" flash off
        if skill:  # take_cover.cfg's doom_skill is 4; 5 (Nightmare) is a much faster game (config.EnvConfig.doom_skill)
            game.set_doom_skill(skill)
        # ViZDoom's init creates ./_vizdoom when it is missing; two games starting at once (env workers) race there,
        # and the loser prints "Failed to create ./_vizdoom/ directory: File exists" and segfaults. Create it first.
        os.makedirs("_vizdoom", exist_ok=True)
        game.init()
        self.game = game
        self.max_steps = max_steps
        self.frame_size = frame_size
        self.t = 0
        self.frame = None

    def _observe(self) -> np.ndarray:
        buf = self.game.get_state().screen_buffer  # uint8 [H, W, 3] for RGB24
        return doom_frame(buf, self.frame_size)

    def reset(self, seed: int) -> np.ndarray:
        self.game.set_seed(int(seed) % 2**32)
        self.game.new_episode()
        self.t = 0
        self.frame = self._observe()
        return self.frame

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool]:
        """action float32 [1] (or a scalar): -1 left, 0 stay, +1 right (thresholds at -1/3 and +1/3)."""
        a = float(np.asarray(action, np.float32).reshape(-1)[0])
        reward = self.game.make_action(action_buttons(a), 1)
        self.t += 1
        if self.game.is_episode_finished():
            terminated = not self.game.is_episode_timeout_reached()
            truncated = not terminated
        else:
            self.frame = self._observe()
            terminated, truncated = False, self.t >= self.max_steps
        return self.frame, float(reward), terminated, truncated

    def close(self) -> None:
        self.game.close()


class RepeatPolicy:
    """The original TakeCover collection policy: a uniform random action in {-1, 0, +1}, held for a
    uniform random number of frames in [repeat_min, repeat_max] (original: 1..10)."""

    def __init__(self, repeat_min: int = 1, repeat_max: int = 10):
        self.lo, self.hi = repeat_min, repeat_max

    def reset(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.left = 0
        self.a = np.zeros(1, np.float32)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        if self.left == 0:
            self.a = np.array([self.rng.integers(-1, 2)], np.float32)
            self.left = int(self.rng.integers(self.lo, self.hi + 1))
        self.left -= 1
        return self.a.copy()


class SweepPolicy:
    """A scripted exploration policy that lives long (``data.sweep_episodes``): run left or right (direction
    alternating, the first one random) for a uniform random number of frames in [leg_min, leg_max]; with
    probability `random_leg` a leg holds a uniform random action instead. Random play dies within ~300 steps,
    long before the room fills with monsters; a player that keeps moving is missed by most fireballs and
    reaches the crowded late game (legs of 60..130: 774 +- 479 steps on 60 seeds), so M sees how deadly it is."""

    def __init__(self, leg_min: int = 60, leg_max: int = 130, random_leg: float = 0.0):
        self.lo, self.hi, self.random_leg = leg_min, leg_max, random_leg

    def reset(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.left = 0
        self.direction = float(rng.choice([-1.0, 1.0]))
        self.a = np.zeros(1, np.float32)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        if self.left == 0:
            self.direction = -self.direction
            random_leg = self.rng.random() < self.random_leg
            self.a = np.array([self.rng.integers(-1, 2) if random_leg else self.direction], np.float32)
            self.left = int(self.rng.integers(self.lo, self.hi + 1))
        self.left -= 1
        return self.a.copy()
