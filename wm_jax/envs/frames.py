"""Frame preprocessing: crop and exact area-averaging resize to uint8 [64, 64, 3] (numpy only, no JAX).

Area resize: output pixel (i, j) is the mean of the input pixels it covers, each weighted by the fraction of
its area inside the output cell (so 2x2 blocks are plain block means and non-integer ratios such as
84 -> 64 weigh the straddling rows by their overlap). The mean is computed in float and rounded half-up to
the nearest integer, so values stay in [0, 255]: there is no uint8 wrap-around, unlike the original World
Models code whose frames came out shifted by one.

- CarRacing: the 96x96 state pixels lose their bottom indicator strip (rows 84..95), then 84x96 -> 64x64.
- TakeCover: ViZDoom renders at 160x120 (its smallest 4:3 mode, the cheapest to render), then 120x160 -> 64x64.
- Atari: the whole 210x160 ALE screen -> 64x64.

Also here, numpy only, the small-object figures of V's reconstructions: TakeCover's fireballs
(:func:`fireball_recall`) and Atari's foreground against the static playfield (:func:`foreground_recall`).
"""

from __future__ import annotations

import functools
import math

import numpy as np

CARRACING_CROP_ROWS = 84  # rows 84..95 of the 96x96 CarRacing frame hold the speed/ABS/steering indicators


@functools.lru_cache(maxsize=None)
def area_weights(n_in: int, n_out: int) -> np.ndarray:
    """Exact area-averaging matrix, float64 [n_out, n_in], each row sums to 1.

    Output cell i spans input coordinates [i * s, (i + 1) * s) with s = n_in / n_out; input pixel k spans
    [k, k + 1); the weight is their overlap divided by s.
    """
    if n_in <= 0 or n_out <= 0:
        raise ValueError(f"area_weights needs positive sizes, got n_in={n_in}, n_out={n_out}")
    s = n_in / n_out
    lo = np.arange(n_out)[:, None] * s
    hi = lo + s
    k = np.arange(n_in)[None, :]
    overlap = np.clip(np.minimum(hi, k + 1) - np.maximum(lo, k), 0.0, None)
    w = overlap / overlap.sum(axis=1, keepdims=True)
    w.setflags(write=False)
    return w


@functools.lru_cache(maxsize=None)
def _taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, int]:
    """:func:`area_weights` as exact integers: (index int [m, n_out], numerator int [m, n_out], denominator).

    Cell boundaries i * n_in / n_out fall on multiples of g / n_out (g = gcd), so every weight is an integer
    over d = n_in / g (120 -> 64: fifteenths; 160 -> 64: fifths; 84 -> 64: 21sts). Output cell i is
    sum_j numerator[j, i] * input[index[j, i]] / d; m is the most input pixels one cell overlaps.
    """
    g = math.gcd(n_in, n_out)
    d = n_in // g
    w = area_weights(n_in, n_out)
    nz = w > 0
    first = nz.argmax(axis=1)
    m = int(nz.sum(axis=1).max())
    index = np.minimum(first[None, :] + np.arange(m)[:, None], n_in - 1)  # [m, n_out]
    num = np.rint(np.take_along_axis(w.T, index, axis=0) * d).astype(np.int64)
    num[first[None, :] + np.arange(m)[:, None] > n_in - 1] = 0  # a clamped duplicate tap must not count twice
    assert (num.sum(axis=0) == d).all()
    return index, num, d


def area_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Area-average `image` uint8 [H, W, C] to uint8 [height, width, C], exactly: integer sums of the few
    overlapping pixels times integer weights, divided once by the common denominator, rounded half up."""
    if image.ndim != 3 or image.dtype != np.uint8:
        raise ValueError(f"area_resize expects uint8 [H, W, C], got {image.dtype} {image.shape}")
    h, w, _ = image.shape
    ri, rn, rd = _taps(h, height)
    ci, cn, cd = _taps(w, width)
    den = rd * cd
    dt = np.uint16 if 511 * den <= np.iinfo(np.uint16).max else np.int64
    rn, cn = rn.astype(dt), cn.astype(dt)
    rows = sum(rn[j][:, None, None] * image[ri[j]] for j in range(len(ri)))  # [height, W, C], x rd
    acc = sum(cn[j][None, :, None] * rows[:, ci[j]] for j in range(len(ci)))  # [height, width, C], x rd*cd
    return ((2 * acc + den) // (2 * den)).astype(np.uint8)  # floor(acc / den + 1/2)


def carracing_frame(obs: np.ndarray, size: int = 64) -> np.ndarray:
    """CarRacing state pixels uint8 [96, 96, 3] -> uint8 [size, size, 3]: drop rows 84..95, area-resize."""
    if obs.shape != (96, 96, 3) or obs.dtype != np.uint8:
        raise ValueError(f"CarRacing frame must be uint8 [96, 96, 3], got {obs.dtype} {obs.shape}")
    return area_resize(obs[:CARRACING_CROP_ROWS], size, size)


def doom_frame(screen: np.ndarray, size: int = 64) -> np.ndarray:
    """ViZDoom RGB24 screen buffer uint8 [H, W, 3] (160x120 here) -> uint8 [size, size, 3], area-resized."""
    if screen.ndim != 3 or screen.shape[2] != 3 or screen.dtype != np.uint8:
        raise ValueError(f"Doom frame must be uint8 [H, W, 3], got {screen.dtype} {screen.shape}")
    return area_resize(screen, size, size)


def atari_frame(screen: np.ndarray, size: int = 64) -> np.ndarray:
    """ALE RGB screen uint8 [210, 160, 3] -> uint8 [size, size, 3]: the whole screen, area-resized (each output
    pixel averages a 3.3 x 2.5 block, so Pong's 2 x 4 ball stays a faint blob of about 1 x 2 pixels)."""
    return area_resize(screen, size, size)


def fireball_mask(frames, xp=np):
    """TakeCover's fireballs: the bright orange/yellow pixels of uint8 [..., 64, 64, 3] frames -> bool [..., 64, 64].

    Thresholds picked on collected frames: walls, floor, imps and the red flash of a hit stay outside.
    `xp`: numpy, or jax.numpy inside a jitted loss (``vae.fireball_weight``).
    """
    f = frames.astype(xp.int16)
    r, g, b = f[..., 0], f[..., 1], f[..., 2]
    return (r > 180) & (g > 90) & (b < 90) & (r - b > 120)


def fireball_recall(frames: np.ndarray, recon: np.ndarray, lo: int = 4, hi: int = 80) -> tuple[float, int]:
    """Share of the fireball pixels of `frames` that are fireball pixels in `recon` too (both uint8 [N,64,64,3]),
    over frames holding `lo`..`hi` of them: fireballs on their way, before one fills the screen at a hit.

    Returns (recall, frames counted); recall is nan when no frame qualifies. The fireballs are what the dream
    must show for a controller to learn dodging; a V that blurs them away leaves only the walls to learn from.
    """
    mask = fireball_mask(frames)
    n = mask.sum(axis=(1, 2))
    keep = (n >= lo) & (n <= hi)
    if not keep.any():
        return float("nan"), 0
    hit = mask[keep] & fireball_mask(recon[keep])
    return float(hit.sum() / mask[keep].sum()), int(keep.sum())


# ---------------------------------------------------------------- Atari: foreground against the playfield

FOREGROUND_THRESHOLD = 24  # a pixel whose colour differs from the background's by more (any channel) is foreground
SMALL_OBJECT_PIXELS = 6  # blobs of at most this many pixels are small objects: Pong's ball covers <= 3 x 2 of 64 x 64


def background_image(frames: np.ndarray) -> np.ndarray:
    """The static playfield of an Atari game: the per-pixel, per-channel (lower) median of a sample of its frames
    uint8 [N, H, W, 3] -> uint8 [H, W, 3]. Objects that move (ball, paddles) are elsewhere in most frames and drop
    out; what stays is the playfield, walls, and the score digits the sample shows most often. The lower median is
    one of the sampled values, so the result is exact and the same on every machine."""
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or len(frames) == 0:
        raise ValueError(f"background_image expects uint8 [N>0, H, W, 3], got {frames.dtype} {frames.shape}")
    k = (len(frames) - 1) // 2
    return np.partition(frames, k, axis=0)[k]


def foreground_mask(frames, background, threshold: int = FOREGROUND_THRESHOLD, xp=np):
    """uint8 [..., H, W, 3] frames -> bool [..., H, W]: pixels whose colour differs from `background`
    uint8 [H, W, 3] by more than `threshold` in some channel. `xp`: numpy, or jax.numpy inside a jitted loss
    (``vae.foreground_weight``)."""
    d = xp.abs(frames.astype(xp.int16) - background.astype(xp.int16))
    return d.max(axis=-1) > threshold


def blob_labels(mask: np.ndarray) -> np.ndarray:
    """bool [N, H, W] -> int64 [N, H, W]: the 8-connected blob of each True pixel, named by the smallest flat index
    (over the whole stack) among its pixels; -1 elsewhere.

    Labels by propagation: every pixel starts with its own index and takes the smallest label among its
    neighbours in the mask until nothing changes (as many rounds as the longest path inside a blob: a few for
    Atari's objects), vectorised over the frames.
    """
    n, h, w = mask.shape
    none = np.iinfo(np.int64).max
    labels = np.where(mask, np.arange(n * h * w, dtype=np.int64).reshape(n, h, w), none)
    while True:
        padded = np.pad(labels, ((0, 0), (1, 1), (1, 1)), constant_values=none)
        low = labels.copy()
        for dy in range(3):
            for dx in range(3):
                np.minimum(low, padded[:, dy:dy + h, dx:dx + w], out=low)
        low[~mask] = none
        if np.array_equal(low, labels):
            break
        labels = low
    labels[~mask] = -1
    return labels


def small_objects(frames: np.ndarray, background: np.ndarray, first: np.ndarray | None = None,
                  threshold: int = FOREGROUND_THRESHOLD, max_pixels: int = SMALL_OBJECT_PIXELS) -> np.ndarray:
    """Small moving objects of consecutive frames uint8 [N, H, W, 3] -> bool [N, H, W]: foreground pixels
    (:func:`foreground_mask`) in 8-connected blobs of at most `max_pixels` pixels, at least one of which changed
    by more than `threshold` (some channel) since the previous frame. `first`: bool [N], True where a frame
    starts an episode (it has no previous frame, so nothing in it counts as moving; frame 0 never does).

    In Pong that is the ball (1-3 x 1-2 pixels at 64 x 64; its blob joins a paddle's while they touch): the motion
    test leaves out the small fragments where the score digits differ from the background's, which stay put.
    """
    fg = foreground_mask(frames, background, threshold)
    labels = blob_labels(fg)
    _, inverse, counts = np.unique(labels[fg], return_inverse=True, return_counts=True)
    small = np.zeros_like(fg)
    small[fg] = counts[inverse] <= max_pixels
    moved = np.zeros_like(fg)
    moved[1:] = np.abs(frames[1:].astype(np.int16) - frames[:-1].astype(np.int16)).max(axis=-1) > threshold
    if first is not None:
        moved[np.asarray(first, bool)] = False
    return small & np.isin(labels, labels[small & moved])


def foreground_recall(frames: np.ndarray, recon: np.ndarray, background: np.ndarray, first: np.ndarray | None = None,
                      threshold: int = FOREGROUND_THRESHOLD, max_pixels: int = SMALL_OBJECT_PIXELS,
                      chunk: int = 500) -> dict:
    """How much of an Atari frame's foreground V's reconstructions keep (frames, recon uint8 [N, H, W, 3]
    consecutive, background uint8 [H, W, 3] from :func:`background_image`, `first` as in :func:`small_objects`).

    A foreground pixel (:func:`foreground_mask` of the frame) is kept when its reconstructed colour is nearer the
    frame's colour than the background's (squared RGB distance, strictly): a V that paints the playfield there
    scores 0, a perfect one 1. Returns ``foreground_recall`` over all foreground pixels and ``small_object_recall``
    over those of small moving objects (:func:`small_objects`; Pong's ball), each with its pixel count
    (``foreground_pixels``, ``small_object_pixels``), and ``foreground_precision``: the share of the pixels the
    reconstruction paints off the playfield (:func:`foreground_mask` of `recon`; ``painted_pixels``) that are
    foreground in the frame too. Recall alone rewards smearing (a paddle painted along its whole column keeps
    every paddle pixel); precision drops with it. A share is nan when its count is 0. The dream can only show
    the ball if z holds it, and a squared error over 4,096 pixels hardly notices a lost 2-pixel ball.
    Works through `chunk` frames at a time (each with the frame before it, for the motion test), so memory stays
    bounded whatever N.
    """
    first = np.zeros(len(frames), bool) if first is None else np.asarray(first, bool)
    counts = {"foreground": [0, 0], "small_object": [0, 0]}  # name -> [pixels kept, pixels]
    painted = [0, 0]  # [painted pixels that are foreground in the frame, painted pixels]
    for s in range(0, len(frames), chunk):
        lo, hi = max(s - 1, 0), s + chunk
        f, r = frames[lo:hi], recon[lo:hi]
        fi, ri, bi = (a.astype(np.int32) for a in (f, r, background))
        kept = ((ri - fi) ** 2).sum(-1) < ((ri - bi) ** 2).sum(-1)  # [n, H, W]
        masks = {"foreground": foreground_mask(f, background, threshold),
                 "small_object": small_objects(f, background, first[lo:hi], threshold, max_pixels)}
        for name, mask in masks.items():
            mask = mask[s - lo:]  # the frame before the chunk was scored with the previous chunk
            counts[name][0] += int((kept[s - lo:] & mask).sum())
            counts[name][1] += int(mask.sum())
        paint = foreground_mask(r[s - lo:], background, threshold)
        painted[0] += int((paint & masks["foreground"][s - lo:]).sum())
        painted[1] += int(paint.sum())
    out = {}
    for name, (k, n) in counts.items():
        out[f"{name}_recall"] = k / n if n else float("nan")
        out[f"{name}_pixels"] = n
    out["foreground_precision"] = painted[0] / painted[1] if painted[1] else float("nan")
    out["painted_pixels"] = painted[1]
    return out
