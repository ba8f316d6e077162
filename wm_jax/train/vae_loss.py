"""V's training loss: the original's per-image squared error + floored KL, and two small-object weightings:
TakeCover's fireballs (``vae.fireball_weight``) and Atari's foreground against the playfield
(``vae.foreground_weight``, and its small isolated blobs: ``vae.small_object_weight``).

Kept out of ``wm_jax.models`` so the model module holds the network alone (no data-preprocessing imports).
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from wm_jax.envs.frames import SMALL_OBJECT_PIXELS, fireball_mask, foreground_mask
from wm_jax.models.vae import FAST, VAE, residual_of, z_dim_of


def loss_terms(x: jax.Array, recon: jax.Array, mu: jax.Array, logvar: jax.Array,
               kl_tolerance: float, weight: jax.Array | None = None) -> dict[str, jax.Array]:
    """Per-batch loss of the original: mean over images of sum-squared-error + max(KL, kl_tolerance * Z).

    x: float [N,64,64,3] in [0,1]; recon like x; mu, logvar [N,Z]; weight: optional per-pixel weight of the
    squared error [N,64,64] (``vae.fireball_weight``, ``vae.foreground_weight``; the original: none). Returns scalars ``loss``, ``recon``
    (summed, weighted squared error per image), ``kl`` (before the floor) and ``mse`` (per pixel, unweighted).
    """
    z_dim = mu.shape[-1]
    sq = jnp.square(recon - x)
    sse = jnp.sum(sq if weight is None else sq * weight[..., None], axis=(1, 2, 3))  # [N]
    mse = jnp.mean(sq)
    kl = -0.5 * jnp.sum(1.0 + logvar - jnp.square(mu) - jnp.exp(logvar), axis=-1)  # [N], KL(q(z|x) || N(0,I))
    kl_floored = jnp.maximum(kl, kl_tolerance * z_dim)  # free bits (original kl_tolerance = 0.5)
    return {"loss": jnp.mean(sse + kl_floored), "recon": jnp.mean(sse), "kl": jnp.mean(kl), "mse": mse}


def fireball_weights(frames: jax.Array, recon: jax.Array, extra: float) -> jax.Array:
    """Per-pixel weights [N,64,64]: 1, plus `extra` where the frame or its reconstruction shows a TakeCover
    fireball (``wm_jax.envs.frames.fireball_mask``). Counting the reconstruction's fireball pixels too
    makes a V that paints fireballs where there are none pay as much as one that drops them. No gradient."""
    painted = jnp.round(jax.lax.stop_gradient(recon) * 255.0)
    return 1.0 + extra * (fireball_mask(frames, jnp) | fireball_mask(painted, jnp)).astype(jnp.float32)


def isolated(mask: jax.Array, window: int = 5, max_pixels: int = SMALL_OBJECT_PIXELS) -> jax.Array:
    """bool [N,H,W] -> bool [N,H,W]: the True pixels with at most `max_pixels` True pixels in their `window` x
    `window` neighbourhood (themselves included; beyond the border counts as False). A cheap, jittable stand-in
    for ``envs.frames.small_objects``' blobs (no motion test): a ball in flight is isolated, a brick row or a
    paddle's middle is not (its tips are: where it ends matters too)."""
    count = jax.lax.reduce_window(mask.astype(jnp.float32), 0.0, jax.lax.add, (1, window, window), (1, 1, 1), "SAME")
    return mask & (count <= max_pixels)


def foreground_weights(frames: jax.Array, recon: jax.Array, background: jax.Array, extra: float,
                       small_extra: float = 0.0) -> jax.Array:
    """Per-pixel weights [N,64,64]: 1, plus `extra` where the frame or its reconstruction differs from the Atari
    playfield `background` uint8 [64,64,3] (``wm_jax.envs.frames.foreground_mask``: ball, paddles, score). As
    with the fireballs, the reconstruction's foreground counts too, so a ghost ball costs as much as a lost one
    (early in training, when V paints no playfield yet, that is nearly every pixel). `small_extra` is added where
    the frame's or the reconstruction's foreground is :func:`isolated` (``vae.small_object_weight``: the ball).
    No gradient."""
    painted = jnp.round(jax.lax.stop_gradient(recon) * 255.0)
    fg_frame, fg_painted = foreground_mask(frames, background, xp=jnp), foreground_mask(painted, background, xp=jnp)
    weight = 1.0 + extra * (fg_frame | fg_painted).astype(jnp.float32)
    if small_extra > 0:
        weight = weight + small_extra * (isolated(fg_frame) | isolated(fg_painted)).astype(jnp.float32)
    return weight


def loss_fn(params: dict, frames: jax.Array, key: jax.Array, kl_tolerance: float,
            plan: Sequence[str] = FAST, fireball_weight: float = 0.0, foreground_weight: float = 0.0,
            background: jax.Array | None = None, small_object_weight: float = 0.0
            ) -> tuple[jax.Array, dict[str, jax.Array]]:
    """frames uint8 [N,64,64,3] (converted to [0,1] here, inside jit); key for the sample -> (loss, terms).
    `fireball_weight` > 0 weighs TakeCover's fireball pixels 1 + fireball_weight times (:func:`fireball_weights`);
    `foreground_weight` > 0 weighs the pixels off the playfield `background` uint8 [64,64,3] 1 + foreground_weight
    times (:func:`foreground_weights`; its small isolated blobs 1 + foreground_weight + small_object_weight
    times). The two are exclusive (one game each). A residual V (``params["playfield"]``,
    ``models.vae.make_residual``) is detected from `params`; its playfield gets a zero gradient."""
    model = VAE(z_dim_of(params), tuple(plan), residual_of(params))
    recon, mu, logvar = model.apply({"params": params}, frames, key)
    x = frames.astype(jnp.float32) / 255.0
    weight = None
    if fireball_weight > 0:
        weight = fireball_weights(frames, recon, fireball_weight)
    elif foreground_weight > 0:
        if background is None:
            raise ValueError("vae.foreground_weight > 0 needs the playfield background (uint8 [64,64,3])")
        weight = foreground_weights(frames, recon, background, foreground_weight, small_object_weight)
    terms = loss_terms(x, recon, mu, logvar, kl_tolerance, weight)
    return terms["loss"], terms
