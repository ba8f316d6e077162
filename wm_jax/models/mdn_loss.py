"""M's head and its three losses in one chunked pass, gradients formed on the way (the training path).

``head_losses`` takes the LSTM's outputs h [T, B, H] and returns the masked means of the mixture NLL, the reward's
squared error and the done BCE — what :func:`wm_jax.models.mdnrnn.sequence_loss` scores. Unrolled the plain way, the
head's output [T, B, 3·K·Z + 2] and every elementwise stage of the NLL (u, the softmaxes, the responsibilities, three
gradient arrays) are [T, B, K, Z] arrays written to and read back from memory: at the paper's sizes ~190 MB each,
which made the head and its loss a third of M's training step while its matmuls are a sixth of the FLOPs.

Here a scan walks T in chunks of ≤ 1,024 rows (whole time steps, so a batch axis sharded over devices stays
sharded): per chunk, the head's matmul, the NLL with its closed-form gradient, the reward and done terms and their
gradients, then dh = g @ Wᵀ and the weight gradient hᵀ g, while the chunk's arrays are still in cache. The forward
keeps what the backward needs (dh of the NLL part, the reward and done gradients per row, the weight gradients), so
the backward only scales them by the three cotangents. Tested equal to plain autodiff (tests/test_mdnrnn.py).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

LOG_SQRT_2PI = 0.5 * jnp.log(2 * jnp.pi)
CHUNK_ROWS = 1024  # rows (time steps × batch) per chunk: the chunk's [rows, 3·K·Z] arrays stay in L2/L3


def nll_with_grads(logits: jax.Array, mu: jax.Array, log_sigma: jax.Array, z_next: jax.Array):
    """Mixture NLL per dimension and its closed-form gradients, from raw component-major [..., K, Z] outputs.

    Returns (nll [..., Z], (∂/∂logits, ∂/∂μ, ∂/∂log σ) each [..., K, Z]). With γ the posterior responsibilities and
    u = (z - μ)/σ: ∂/∂logits = π - γ, ∂/∂μ = -γ·u/σ, ∂/∂log σ = γ·(1 - u²).
    """
    z = z_next[..., None, :]
    inv_s = jnp.exp(-log_sigma)
    u = (z - mu) * inv_s
    m = jnp.max(logits, axis=-2, keepdims=True)
    e = jnp.exp(logits - m)
    se = e.sum(-2, keepdims=True)
    joint = logits - 0.5 * u * u - log_sigma  # log π_k + log N(z; μ_k, σ_k) + log Σe + m + log √2π
    mj = jnp.max(joint, axis=-2, keepdims=True)
    ej = jnp.exp(joint - mj)
    sj = ej.sum(-2, keepdims=True)
    nll = (jnp.log(se) + m - jnp.log(sj) - mj)[..., 0, :] + LOG_SQRT_2PI
    gamma = ej / sj
    return nll, (e / se - gamma, -gamma * u * inv_s, gamma * (1.0 - u * u))


def bce_with_logits(logit: jax.Array, target: jax.Array, pos_weight: float | jax.Array) -> jax.Array:
    """Binary cross-entropy, positive class weighted: -w·y·log σ(l) - (1-y)·log(1-σ(l)), elementwise."""
    return pos_weight * target * jax.nn.softplus(-logit) + (1.0 - target) * jax.nn.softplus(logit)


def steps_per_chunk(t: int, b: int, rows: int | None = None) -> int:
    """The largest divisor of T whose steps × B fit in `rows` (default CHUNK_ROWS; at least 1)."""
    rows = CHUNK_ROWS if rows is None else rows
    return max(d for d in range(1, t + 1) if t % d == 0 and (d * b <= rows or d == 1))


@functools.partial(jax.custom_vjp, nondiff_argnums=(7, 8))
def head_losses(w: jax.Array, b: jax.Array, h: jax.Array, z_next: jax.Array, reward: jax.Array, done: jax.Array,
                mask: jax.Array, z_dim: int, done_pos_weight: float) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Head (w [H, 3·K·Z + 2], b) on h [T, B, H]; targets z_next [T, B, Z], reward, done and mask [T, B].

    Returns (nll, reward_mse, done_bce), each Σ(term · mask) / max(Σ mask, 1); the NLL term is the mean over Z
    of the per-dimension mixture NLL, the done term the BCE with positives × `done_pos_weight`. Gradients flow to
    w, b and h (the targets and the mask are data).
    """
    return _forward(w, b, h, z_next, reward, done, mask, z_dim, done_pos_weight)[0]


def _forward(w, b, h, z_next, reward, done, mask, z_dim, pos_weight):
    t, bsz, hid = h.shape
    kz = w.shape[-1] - 2
    n = jnp.maximum(mask.sum(), 1.0)
    d = steps_per_chunk(t, bsz)
    chunked = [a.reshape(t // d, d * bsz, *a.shape[2:]) for a in (h, z_next, reward, done, mask)]
    w_mix = w[:, :kz]

    def body(carry, inp):
        sums, dw = carry
        h_c, z_c, r_c, y_c, m_c = inp
        out = h_c @ w + b
        mix = out[:, :kz].reshape(-1, 3, kz // (3 * z_dim), z_dim)
        nll, grads = nll_with_grads(mix[:, 0], mix[:, 1], mix[:, 2], z_c)
        g_mix = jnp.stack(grads, 1).reshape(-1, kz) * (m_c / (n * z_dim))[:, None]
        err = out[:, kz] - r_c
        logit = out[:, kz + 1]
        bce = bce_with_logits(logit, y_c, pos_weight)
        g_r = 2.0 * err * m_c / n
        g_d = (jax.nn.sigmoid(logit) * (pos_weight * y_c + 1.0 - y_c) - pos_weight * y_c) * m_c / n  # ∂bce/∂logit
        g = jnp.concatenate([g_mix, g_r[:, None], g_d[:, None]], -1)
        sums = sums + jnp.stack([(nll.mean(-1) * m_c).sum(), (err * err * m_c).sum(), (bce * m_c).sum()])
        return (sums, dw + jax.lax.dot_general(jnp.concatenate([h_c, jnp.ones_like(h_c[:, :1])], -1), g,
                                               (((0,), (0,)), ((), ())))), (g_mix @ w_mix.T, g_r, g_d)

    init = (jnp.zeros(3, h.dtype), jnp.zeros((hid + 1, kz + 2), h.dtype))
    (sums, dwb), (dh_mix, g_r, g_d) = jax.lax.scan(body, init, chunked)
    losses = tuple(sums / n)
    return losses, (dwb, dh_mix.reshape(h.shape), g_r.reshape(t, bsz), g_d.reshape(t, bsz), w, z_next, mask)


def _bwd(z_dim, pos_weight, res, cot):
    dwb, dh_mix, g_r, g_d, w, z_next, mask = res
    c_nll, c_r, c_d = cot
    kz = w.shape[-1] - 2
    col = jnp.concatenate([jnp.full((kz,), c_nll, w.dtype), jnp.stack([c_r, c_d]).astype(w.dtype)])
    dwb = dwb * col
    dh = c_nll * dh_mix + (c_r * g_r)[..., None] * w[:, kz] + (c_d * g_d)[..., None] * w[:, kz + 1]
    zeros = jnp.zeros_like
    return dwb[:-1], dwb[-1], dh, zeros(z_next), zeros(g_r), zeros(g_d), zeros(mask)


head_losses.defvjp(_forward, _bwd)
