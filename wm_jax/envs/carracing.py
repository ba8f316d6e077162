"""CarRacing-v3 (gymnasium) as a host-side adapter, a faster renderer with identical pixels, random policies.

Where a stock CarRacing-v3 step goes (cProfile, 500 random steps on this machine, ~128 steps/s): ~75% in
``_render_road``, which for every one of the ~800 grass and road polygons rotates each vertex through a
``pygame.math.Vector2`` in Python and tests it against the window box, to then draw only ~75 of them; ~10%
loading the font file and rendering the score text on every frame; the rest is pygame's fill/flip/smoothscale
of the 1000x800 surface, the polygon rasterisation and Box2D.

:class:`FastCarRacing` keeps every pixel identical (``tests/test_envs.py`` compares raw 96x96 frames with the
stock class step by step) and removes only Python overhead:

- the vertex transforms and the visibility test run as one numpy computation over all polygons. The
  rotation uses the very (cos, sin) pygame uses (obtained by rotating (1, 0) with ``Vector2.rotate_rad``)
  and the same float64 operations in the same order, so the coordinates handed to ``gfxdraw`` are
  bit-identical; polygons are drawn in the stock order with the stock colours;
- the font is loaded once and the score text surface is reused while the displayed text is unchanged.
"""

from __future__ import annotations

import math

import numpy as np
import pygame
from gymnasium.envs.box2d import car_racing as cr
from pygame import gfxdraw

from wm_jax.envs.frames import carracing_frame


def _grass_polygons() -> np.ndarray:
    """The stock grass patches, float64 [400, 4, 2], in the stock drawing order."""
    g = cr.GRASS_DIM
    polys = [[(g * x + g, g * y + 0), (g * x + 0, g * y + 0), (g * x + 0, g * y + g), (g * x + g, g * y + g)]
             for x in range(-20, 20, 2) for y in range(-20, 20, 2)]
    return np.asarray(polys, np.float64)


class FastCarRacing(cr.CarRacing):
    """gymnasium's CarRacing with the same observations, rendered with less Python work per frame."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._grass = _grass_polygons()
        self._road_key = None
        self._road = None
        self._font = None
        self._text_cache = (None, None)

    def _road_vertices(self) -> np.ndarray | None:
        """Road polygon vertices float64 [N, 4, 2] (fixed per track; cached). Colours are read at draw time:
        the contact listener recolours a tile in place when the car first visits it."""
        key = (id(self.road_poly), len(self.road_poly))
        if key != self._road_key:
            polys = [[(float(p[0]), float(p[1])) for p in poly] for poly, _ in self.road_poly]
            ok = polys and all(len(p) == 4 for p in polys)
            self._road, self._road_key = (np.asarray(polys, np.float64) if ok else None), key
        return self._road

    def _transform(self, poly: np.ndarray, zoom: float, translation, cs: tuple[float, float]):
        """Stock ``_draw_colored_polygon`` coordinate maths on [N, V, 2] vertices, vectorised."""
        c, s = cs
        x, y = poly[..., 0], poly[..., 1]
        rx = c * x - s * y  # pygame Vector2.rotate_rad: (cos*x - sin*y, sin*x + cos*y)
        ry = s * x + c * y
        return np.stack([rx * zoom + translation[0], ry * zoom + translation[1]], axis=-1)

    def _visible(self, pts: np.ndarray) -> np.ndarray:
        m = cr.MAX_SHAPE_DIM
        inside = ((-m <= pts[..., 0]) & (pts[..., 0] <= cr.WINDOW_W + m)
                  & (-m <= pts[..., 1]) & (pts[..., 1] <= cr.WINDOW_H + m))
        return inside.any(axis=-1)

    def _render_road(self, zoom, translation, angle):
        road = self._road_vertices()
        if road is None:  # unexpected polygon shapes: fall back to the stock code path
            return super()._render_road(zoom, translation, angle)
        cs = tuple(pygame.math.Vector2(1.0, 0.0).rotate_rad(angle))
        b = cr.PLAYFIELD
        field = np.asarray([[(b, b), (b, -b), (-b, -b), (-b, b)]], np.float64)
        self._fill(self._transform(field, zoom, translation, cs)[0], self.bg_color)
        grass = self._transform(self._grass, zoom, translation, cs)
        for i in np.flatnonzero(self._visible(grass)):
            self._fill(grass[i], self.grass_color)
        pts = self._transform(road, zoom, translation, cs)
        for i in np.flatnonzero(self._visible(pts)):
            self._fill(pts[i], [int(c) for c in self.road_poly[i][1]])

    def _fill(self, pts: np.ndarray, color) -> None:
        poly = [tuple(p) for p in pts.tolist()]
        gfxdraw.aapolygon(self.surf, poly, color)
        gfxdraw.filled_polygon(self.surf, poly, color)

    def _render(self, mode: str):
        if mode != "state_pixels" or "t" not in self.__dict__:
            return super()._render(mode)
        pygame.font.init()
        if self.clock is None:
            self.clock = pygame.time.Clock()
        self.surf = pygame.Surface((cr.WINDOW_W, cr.WINDOW_H))
        angle = -self.car.hull.angle
        zoom = 0.1 * cr.SCALE * max(1 - self.t, 0) + cr.ZOOM * cr.SCALE * min(self.t, 1)
        scroll_x = -(self.car.hull.position[0]) * zoom
        scroll_y = -(self.car.hull.position[1]) * zoom
        trans = pygame.math.Vector2((scroll_x, scroll_y)).rotate_rad(angle)
        trans = (cr.WINDOW_W / 2 + trans[0], cr.WINDOW_H / 4 + trans[1])
        self._render_road(zoom, trans, angle)
        self.car.draw(self.surf, zoom, trans, angle, False)
        self.surf = pygame.transform.flip(self.surf, False, True)
        self._render_indicators(cr.WINDOW_W, cr.WINDOW_H)
        if self._font is None:
            self._font = pygame.font.Font(pygame.font.get_default_font(), 42)
        label = f"{self.reward:04.0f}"
        if self._text_cache[0] != label:
            self._text_cache = (label, self._font.render(label, True, (255, 255, 255), (0, 0, 0)))
        text = self._text_cache[1]
        text_rect = text.get_rect()
        text_rect.center = (60, cr.WINDOW_H - cr.WINDOW_H * 2.5 / 40.0)
        self.surf.blit(text, text_rect)
        return self._create_image_array(self.surf, (cr.STATE_W, cr.STATE_H))


class CarRacingEnv:
    """``reset(seed) -> frame``, ``step(action) -> (frame, reward, terminated, truncated)``; frames uint8 [64, 64, 3].

    The episode is cut after `max_steps` actions (truncated=True, unless it terminated on that step); the
    gymnasium TimeLimit wrapper is not used. `raw` holds the last 96x96 observation (for tests).
    """

    action_dim = 3
    name = "carracing"

    def __init__(self, max_steps: int = 1000, fast_render: bool = True, frame_size: int = 64):
        self.env = FastCarRacing() if fast_render else cr.CarRacing()
        self.max_steps = max_steps
        self.frame_size = frame_size
        self.t = 0
        self.raw = None

    def reset(self, seed: int) -> np.ndarray:
        self.raw, _ = self.env.reset(seed=int(seed))
        self.t = 0
        return carracing_frame(self.raw, self.frame_size)

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool]:
        """action float32 [3]: steer in [-1, 1], gas in [0, 1], brake in [0, 1]."""
        self.raw, reward, terminated, _, _ = self.env.step(np.asarray(action, np.float32).reshape(3))
        self.t += 1
        truncated = self.t >= self.max_steps and not terminated
        return carracing_frame(self.raw, self.frame_size), float(reward), bool(terminated), bool(truncated)

    def close(self) -> None:
        self.env.close()


# ---------------------------------------------------------------- collection policies

LOW = np.array([-1.0, 0.0, 0.0])
HIGH = np.array([1.0, 1.0, 1.0])


class BrownianPolicy:
    """Actions follow a clipped random walk: a_{t+1} = clip(a_t + sqrt(dt) * N(0, I)), dt = 1/50 (one frame).

    Why not i.i.d. uniform actions: steering then averages out and brake is on half the time, so the car
    crawls and the frames barely change. A Brownian walk holds a steering/gas/brake setting for a while,
    so the car drives into turns, leaves the track and brakes to a stop, covering more varied views.
    The walk starts from a uniform random action; everything comes from the episode's rng.
    """

    def __init__(self, dt: float = 1.0 / cr.FPS):
        self.scale = math.sqrt(dt)

    def reset(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.a = rng.uniform(LOW, HIGH)

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        out = self.a.astype(np.float32)
        self.a = np.clip(self.a + self.scale * self.rng.standard_normal(3), LOW, HIGH)
        return out


class RandomLinearPolicy:
    """A random linear controller per episode, as in the original CarRacing collection.

    The original mapped [z, h] of a randomly initialised V and M through random weights with
    std ~ U(0, 0.01); V and M do not exist yet at collection time here, so the controller reads a fixed
    feature of the frame instead: the 8x8 grey-scale block average in [-0.5, 0.5] plus a bias (65 inputs).
    Output o = tanh(W f); action = (o_0, (o_1 + 1) / 2, clip(o_2, 0, 1)) (the original's mapping).
    """

    def reset(self, rng: np.random.Generator) -> None:
        std = rng.uniform(0.0, 1.0)
        self.w = rng.normal(0.0, std, size=(3, 65))

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        s = frame.shape[0] // 8
        grey = frame.reshape(8, s, 8, s, 3).mean(axis=(1, 3, 4)).ravel() / 255.0 - 0.5
        o = np.tanh(self.w @ np.append(grey, 1.0))
        return np.array([o[0], (o[1] + 1) / 2, np.clip(o[2], 0, 1)], np.float32)


def road_mask(frame: np.ndarray) -> np.ndarray:
    """Grey road pixels of a CarRacing frame uint8 [..., H, W, 3] -> bool [..., H, W] (road tiles are
    (102, 102, 102) plus a few units; grass, curbs and the car are not grey in that range)."""
    f = frame.astype(np.int16)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    return (np.abs(r - g) < 15) & (np.abs(g - b) < 15) & (r > 70) & (r < 200)


class FollowPolicy:
    """A scripted road follower with exploration, for ``data.follow_episodes`` (beyond the paper).

    Random (Brownian) driving leaves the road within seconds, so M rarely sees a car driving along the track at
    speed, taking turns, or drifting off a bend and back: the states a trained controller lives in, and the ones
    a controller trained in the dream must be told the truth about. This policy steers towards the centre of the
    grey road pixels in two bands ahead of the car (64x64 frame: rows 36..47 and 20..31; the car sits at columns
    30..33), eases off the gas and brakes when the far band bends away, and drives at a gas level drawn per
    episode. With probability `excursion` per step it hands over to a Brownian random walk for `excursion_len`
    steps (the car skids, leaves the road, and the follower recovers if it still sees road). Without excursions
    it scores 675 over the 6 tracks of seeds 10,000..10,005; everything random comes from the episode's rng.
    """

    NEAR, FAR, CAR_X = (36, 48), (20, 32), 31.5

    def __init__(self, excursion: float = 0.01, excursion_len: tuple[int, int] = (10, 60)):
        self.excursion, self.excursion_len = excursion, excursion_len
        self.brownian = BrownianPolicy()
        self.cols = np.arange(64, dtype=np.float64)

    def reset(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.gas = rng.uniform(0.15, 0.45)
        self.gain = rng.uniform(0.7, 1.3)
        self.left = 0  # steps left in the current excursion
        self.braked = 0  # steps braked in a row

    def _offset(self, mask: np.ndarray, band: tuple[int, int]) -> float | None:
        m = mask[band[0]:band[1]]
        n = m.sum()
        return float((m * self.cols[: m.shape[1]]).sum() / n - self.CAR_X) if n else None

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        if self.left == 0 and self.rng.random() < self.excursion:
            lo, hi = self.excursion_len
            self.left = int(self.rng.integers(lo, hi + 1))
            self.brownian.reset(self.rng)
        if self.left > 0:
            self.left -= 1
            return self.brownian(frame)
        mask = road_mask(frame)
        near, far = self._offset(mask, self.NEAR), self._offset(mask, self.FAR)
        if near is None and far is None:  # off the road: head for any road in sight, else circle slowly
            anywhere = self._offset(mask, (0, 59))
            steer = 0.05 * anywhere if anywhere is not None else -0.6
            return np.array([np.clip(steer, -1.0, 1.0), 0.1, 0.0], np.float32)
        steer = self.gain * (0.06 * (near if near is not None else far) + 0.03 * (far if far is not None else near))
        bend = abs(far) if far is not None else 30.0
        self.braked = self.braked + 1 if bend >= 12 else 0  # brake into a sharp bend, a few steps only
        gas = self.gas if bend < 6 else 0.08
        brake = 0.4 if 0 < self.braked <= 8 else 0.0
        return np.array([np.clip(steer, -1.0, 1.0), gas, brake], np.float32)
