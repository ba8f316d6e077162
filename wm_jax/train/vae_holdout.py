"""V on held-out episodes: reconstruction error, how much the reconstructions vary, and what they keep of the
small things that matter (TakeCover's fireballs, Atari's foreground and balls). Used at the end of V's training
(``DONE``) and by ``wm-jax eval-vae``."""

from __future__ import annotations

import math

import numpy as np

from wm_jax.models.vae import reconstruct


def holdout_metrics(params: dict, hold_set, max_frames: int = 2000, batch: int = 100, env: str = "",
                    background: np.ndarray | None = None) -> dict:
    """Figures of V's reconstructions from z = mu on (up to `max_frames`) held-out frames.

    Always: per-pixel MSE, and how much the reconstructions and the frames vary (``recon_spread``,
    ``frame_spread``: each pixel's standard deviation over the frames, averaged over the pixels, in [0, 1] units; a
    decoder that ignores z has a recon_spread near 0). TakeCover: the share of approaching fireballs' pixels the
    reconstructions keep (``envs.frames.fireball_recall``; None when no frame has one). Atari (env
    ``atari/<game>``, `background` its playfield uint8 [64,64,3] from ``train.vae.playfield``): the share of foreground
    pixels and of small moving objects' pixels they keep, and the share of the pixels they paint off the playfield
    that belong there (``envs.frames.foreground_recall``: ``foreground_recall``, ``small_object_recall``,
    ``foreground_precision`` and their pixel counts).
    """
    from wm_jax.envs.frames import fireball_recall, foreground_recall

    atari = env.startswith("atari/")
    if atari and background is None:
        raise ValueError(f"holdout_metrics for {env} needs the playfield background (train.vae.playfield)")
    frames, first = _holdout_episodes(hold_set, max_frames)
    if len(frames) == 0:
        return {}
    sse, n, recons = 0.0, 0, []
    moments = np.zeros((2, 2, *frames.shape[1:]))  # [recon, frame] x [sum, sum of squares] over the frames
    for s in range(0, len(frames), batch):
        chunk = frames[s:s + batch]
        pad = batch - len(chunk)
        x = np.concatenate([chunk, np.zeros((pad, *chunk.shape[1:]), np.uint8)]) if pad else chunk
        r = np.asarray(reconstruct(params, x))[:len(chunk)]
        x01 = chunk.astype(np.float32) / 255.0
        sse += float(np.sum((r - x01) ** 2))
        n += chunk.size
        for i, a in enumerate((r, x01)):
            moments[i] += (a.sum(0, dtype=np.float64), np.square(a, dtype=np.float64).sum(0))
        if env == "takecover" or atari:
            recons.append(np.clip(np.rint(r * 255.0), 0, 255).astype(np.uint8))
    mean, sq = moments[:, 0] / len(frames), moments[:, 1] / len(frames)
    spread = np.sqrt(np.maximum(sq - mean**2, 0.0)).mean(axis=(1, 2, 3))
    out = {"holdout_mse": sse / n, "holdout_frames": int(len(frames)),
           "recon_spread": float(spread[0]), "frame_spread": float(spread[1])}
    if env == "takecover":
        recall, counted = fireball_recall(frames, np.concatenate(recons))
        # None when no held-out frame has a fireball on its way: summaries are JSON, which has no NaN
        out["fireball_recall"], out["fireball_frames"] = (recall if counted else None), counted
    if atari:
        fg = foreground_recall(frames, np.concatenate(recons), background, first)
        # a recall is None when no held-out pixel counts (JSON has no NaN)
        out.update({k: (None if isinstance(x, float) and math.isnan(x) else x) for k, x in fg.items()})
    return out


def holdout_frames(hold_set, max_frames: int) -> np.ndarray:
    """The held-out episodes' frames uint8 [<= max_frames, 64, 64, 3], episode after episode."""
    return _holdout_episodes(hold_set, max_frames)[0]


def _holdout_episodes(hold_set, max_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """(frames uint8 [N,64,64,3] of the held-out episodes in order, N <= max_frames; bool [N], True at each
    episode's first frame)."""
    out = []
    for i in range(len(hold_set)):
        ep = hold_set.try_load(i)
        if ep is not None:
            out.append(ep.frames)
    if not out:
        return np.zeros((0, 64, 64, 3), np.uint8), np.zeros(0, bool)
    first = np.concatenate([np.arange(len(f)) == 0 for f in out])
    return np.concatenate(out)[:max_frames], first[:max_frames]
