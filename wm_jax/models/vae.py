"""V: the convolutional VAE of World Models (Ha & Schmidhuber 2018, appendix A.1), in flax.

Architecture (NHWC, every conv stride 2, VALID padding)::

    encoder  uint8 [N,64,64,3] -> /255 -> conv 32 k4 -> 31 -> conv 64 k4 -> 14 -> conv 128 k4 -> 6
             -> conv 256 k4 -> 2 -> flatten 1024 -> dense mu [N,Z], dense logvar [N,Z]   (ReLU after convs)
    decoder  z [N,Z] -> dense 1024 -> [N,1,1,1024] -> deconv 128 k5 -> 5 -> deconv 64 k5 -> 13
             -> deconv 32 k6 -> 30 -> deconv 3 k6 -> 64 -> sigmoid                       (ReLU between)

4,348,547 parameters at Z = 32. The parameter tree is the same whatever the implementation ``plan``:
conv kernels are ``[k, k, in, out]`` exactly as ``flax.linen.Conv`` / ``flax.linen.ConvTranspose`` store
them, so a checkpoint trained with one plan loads into another.

Residual V (``vae.residual``, Atari): the parameters hold one more entry, ``params["playfield"] = {"image": float32
[64,64,3] in [0,1]}``, the game's static screen (``make_residual``; ``residual_of`` detects it). The encoder then sees
``(frame - playfield) * RESIDUAL_GAIN`` and the decoder outputs ``sigmoid(logits + logit(playfield))``, so V's whole
capacity goes to what differs from the static screen. The playfield is data, not a weight: it sits under
``stop_gradient`` (zero gradient, so Adam leaves it exactly as it is), travels in every checkpoint with the weights,
and every function below that takes ``params`` handles it.

How each conv and deconv is computed (per backend, equal up to float rounding) is ``wm_jax.models.conv``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from wm_jax.models.conv import (  # noqa: F401  (plans and compiler options are part of V's API too)
    CPU_INFER,
    CPU_TRAIN,
    FAST,
    INFER,
    REFERENCE,
    StridedConv,
    check_plan,
    compiler_options,
    resolve_plan,
)
from wm_jax.models.latent import reparameterize

ENC_FILTERS = (32, 64, 128, 256)  # paper: 4 convs, kernel 4, stride 2
DEC_LAYERS = ((128, 5), (64, 5), (32, 6), (3, 6))  # paper: (filters, kernel) of the 4 deconvs, stride 2

# Residual V: the encoder's input is (frame - playfield) * RESIDUAL_GAIN, frame and playfield in [0, 1]. Pong's
# residual has an RMS of 0.021 over held-out frames (a few pixels off a static screen), so 50 brings it to ~1, the
# scale a network's input is usually given; the encoder is nearly linear at initialisation (zero biases), so mu's
# spread across Pong frames grows from ~0.003 to ~0.15 (docs/findings.md, "A residual V").
RESIDUAL_GAIN = 50.0
PLAYFIELD_EPS = 1e-3  # the playfield is clipped to [eps, 1 - eps] before its logit (black/white pixels: logit +-6.9)
ENCODE_CHUNK_CPU = 50  # frames per encoder pass on XLA:CPU (``encode``; 50-100 measured best at N = 1000)


# ---------------------------------------------------------------- the model


class _Playfield(nn.Module):
    """A residual V's static screen: parameter ``image`` float32 [64,64,3] in [0,1], set by ``make_residual`` and
    never trained (returned under ``stop_gradient``)."""

    @nn.compact
    def __call__(self) -> jax.Array:
        return lax.stop_gradient(self.param("image", nn.initializers.zeros_init(), (64, 64, 3), jnp.float32))


class VAE(nn.Module):
    """The World Models VAE. ``plan``: 8 formulations (4 encoder convs, 4 decoder deconvs); see module doc.
    ``residual``: encode the frame minus the playfield, decode the playfield plus a residual (module doc)."""

    z_dim: int = 32
    plan: Sequence[str] = FAST
    residual: bool = False

    def setup(self) -> None:
        check_plan(self.plan)
        self.enc = [StridedConv(f, 4, self.plan[i], name=f"enc_conv{i}") for i, f in enumerate(ENC_FILTERS)]
        self.mu = nn.Dense(self.z_dim, name="enc_mu")
        self.logvar = nn.Dense(self.z_dim, name="enc_logvar")
        self.dec_in = nn.Dense(1024, name="dec_dense")
        self.dec = [StridedConv(f, k, self.plan[4 + i], transpose=True, name=f"dec_deconv{i}")
                    for i, (f, k) in enumerate(DEC_LAYERS)]
        self.playfield = _Playfield(name="playfield") if self.residual else None

    def encode(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """x: uint8 [N,64,64,3] (or float in [0,1]) -> mu, logvar [N,Z]."""
        if x.shape[1:] != (64, 64, 3):
            raise ValueError(f"VAE expects frames [N,64,64,3], got {x.shape}")
        h = x.astype(jnp.float32) / 255.0 if x.dtype == jnp.uint8 else x.astype(jnp.float32)
        if self.residual:
            h = (h - self.playfield()) * RESIDUAL_GAIN
        for conv in self.enc:
            h = nn.relu(conv(h))
        h = h.reshape(h.shape[0], -1)
        return self.mu(h), self.logvar(h)

    def decode(self, z: jax.Array) -> jax.Array:
        """z: [N,Z] -> images float [N,64,64,3] in (0, 1); a residual V: sigmoid(logits + logit(playfield))."""
        h = self.dec_in(z).reshape(z.shape[0], 1, 1, 1024)
        for i, deconv in enumerate(self.dec):
            h = deconv(h)
            if i < len(self.dec) - 1:
                h = nn.relu(h)
        if self.residual:
            pf = jnp.clip(self.playfield(), PLAYFIELD_EPS, 1.0 - PLAYFIELD_EPS)
            h = h + (jnp.log(pf) - jnp.log1p(-pf))
        return nn.sigmoid(h)

    def __call__(self, x: jax.Array, key: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
        """x: uint8 [N,64,64,3]; key: PRNG key for the reparameterised sample -> (recon, mu, logvar)."""
        mu, logvar = self.encode(x)
        z = reparameterize(mu, logvar, jax.random.normal(key, mu.shape, mu.dtype))
        return self.decode(z), mu, logvar


def param_shapes(z_dim: int) -> dict:
    """The parameter tree as ShapeDtypeStructs (no compute)."""
    def init(k):
        return VAE(z_dim, REFERENCE).init(k, jnp.zeros((1, 64, 64, 3), jnp.uint8), k)["params"]

    return jax.eval_shape(init, jax.random.key(0))


def init_params(key: jax.Array, z_dim: int) -> dict:
    """Fresh parameters (the inner ``params`` collection), identical for every plan.

    The initialisers of flax's Conv / ConvTranspose / Dense: LeCun-normal kernels (fan-in = all kernel axes
    but the last), zero biases; one key per leaf. Built from the shapes alone, so no convolution runs.
    """
    return _init(key, z_dim)


@functools.partial(jax.jit, static_argnums=1)
def _init(key: jax.Array, z_dim: int) -> dict:
    shapes = param_shapes(z_dim)
    leaves, treedef = jax.tree.flatten(shapes)
    keys = jax.random.split(key, len(leaves))
    lecun = nn.initializers.lecun_normal()
    out = [lecun(k, s.shape, s.dtype) if len(s.shape) > 1 else jnp.zeros(s.shape, s.dtype)
           for k, s in zip(keys, leaves)]
    return jax.tree.unflatten(treedef, out)


def z_dim_of(params: dict) -> int:
    return int(params["enc_mu"]["kernel"].shape[-1])


def residual_of(params: dict) -> bool:
    """Whether `params` are a residual V's (they hold the ``playfield`` entry; module doc)."""
    return "playfield" in params


def make_residual(params: dict, playfield: np.ndarray) -> dict:
    """A residual V's starting parameters from a plain V's: `params` plus ``{"playfield": {"image": playfield /
    255}}`` (`playfield` uint8 [64,64,3], e.g. ``train.vae.playfield``), with the last deconv's kernel zeroed, so
    the untrained decoder outputs the playfield (to ``PLAYFIELD_EPS``) whatever z; its gradient is not zero, so it
    learns from the first step. `params` is not changed."""
    playfield = np.asarray(playfield)
    if playfield.shape != (64, 64, 3) or playfield.dtype != np.uint8:
        raise ValueError(f"playfield must be uint8 [64,64,3], got {playfield.dtype} {playfield.shape}")
    last = f"dec_deconv{len(DEC_LAYERS) - 1}"
    out = dict(params)
    out[last] = {**params[last], "kernel": jnp.zeros_like(params[last]["kernel"])}
    out["playfield"] = {"image": jnp.asarray(playfield.astype(np.float32) / np.float32(255.0))}  # numpy: exact
    return out


def count_params(params: dict) -> int:
    return sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))


def encode(params: dict, frames: jax.Array, plan: Sequence[str] | None = None,
           chunk: int | None = None) -> tuple[jax.Array, jax.Array]:
    """frames uint8 [N,64,64,3] -> (mu, logvar) float32 [N,Z]. Pure; jit it (or call inside jit).

    `plan`: default ``resolve_plan("auto", training=False)`` (by backend); jit with ``compiler_options()``.
    `chunk`: frames per pass (``lax.map`` over [N // chunk, chunk] and one pass over the rest); on XLA:CPU the
    default ``ENCODE_CHUNK_CPU`` keeps the first conv's output in cache (1.5x frames/s at N = 1000), elsewhere
    0 = all N at once. Results equal the unchunked pass to float rounding.
    """
    plan = resolve_plan("auto", training=False) if plan is None else tuple(plan)
    if chunk is None:
        chunk = ENCODE_CHUNK_CPU if jax.default_backend() == "cpu" else 0
    model = VAE(z_dim_of(params), plan, residual_of(params))

    def run(x: jax.Array) -> tuple[jax.Array, jax.Array]:
        return model.apply({"params": params}, x, method=VAE.encode)

    n = frames.shape[0]
    if chunk <= 0 or n <= chunk:
        return run(frames)
    m = n // chunk * chunk
    mu, logvar = lax.map(run, frames[:m].reshape(n // chunk, chunk, *frames.shape[1:]))
    mu, logvar = mu.reshape(m, -1), logvar.reshape(m, -1)
    if m == n:
        return mu, logvar
    mu_t, logvar_t = run(frames[m:])
    return jnp.concatenate([mu, mu_t]), jnp.concatenate([logvar, logvar_t])


def decode(params: dict, z: jax.Array, plan: Sequence[str] | None = None) -> jax.Array:
    """z [N,Z] -> float [N,64,64,3] in [0, 1]. `plan` as in :func:`encode`."""
    plan = resolve_plan("auto", training=False) if plan is None else tuple(plan)
    return VAE(z_dim_of(params), plan, residual_of(params)).apply({"params": params}, z, method=VAE.decode)


@functools.partial(jax.jit, static_argnames="plan")
def encode_jit(params: dict, frames: jax.Array, plan: tuple[str, ...] = INFER) -> tuple[jax.Array, jax.Array]:
    """:func:`encode`, jitted (one program per batch shape and plan, in jit's own cache)."""
    return encode(params, frames, plan)


@functools.partial(jax.jit, static_argnames="plan")
def decode_jit(params: dict, z: jax.Array, plan: tuple[str, ...] = INFER) -> jax.Array:
    """:func:`decode`, jitted (one program per batch shape and plan)."""
    return decode(params, z, plan)


@functools.partial(jax.jit, static_argnames="plan")
def reconstruct(params: dict, frames: jax.Array, plan: tuple[str, ...] = INFER) -> jax.Array:
    """uint8 [N,64,64,3] -> decode(mu) float [N,64,64,3] in [0, 1] (forward-only plan)."""
    return decode(params, encode(params, frames, plan)[0], plan)


def flops_per_image(z_dim: int = 32, training: bool = True) -> float:
    """Analytic multiply-add FLOPs (2 per MAC) of one image: forward, or forward + backward (training).

    Convs count n_out^2 * k^2 * C_in * C_out MACs, deconvs n_in^2 * k^2 * C_in * C_out (the useful work;
    the phase form also multiplies some zero-padded borders, which is not counted). Backward = 2x forward
    minus the input gradient of the first conv (the data needs none).
    """
    macs, first = 0, 0
    c, n = 3, 64
    for i, f in enumerate(ENC_FILTERS):
        n = (n - 4) // 2 + 1
        m = n * n * 16 * c * f
        first = m if i == 0 else first
        macs, c = macs + m, f
    macs += 2 * 1024 * z_dim + z_dim * 1024
    c, n = 1024, 1
    for f, k in DEC_LAYERS:
        macs += n * n * k * k * c * f
        c, n = f, 2 * (n - 1) + k
    fwd = 2.0 * macs
    return 3.0 * fwd - 2.0 * first if training else fwd
