"""M: an LSTM with a mixture-density head over the next z, plus reward and done heads.

Parameters are a plain pytree of explicit weights, so the same functions serve training (the input
projection and the head leave the scan as big matmuls) and the dream (one step at a time, vmapped over a
population, with τ as runtime data)::

    params = {"lstm": {"w_x": [I, 4H], "w_h": [H, 4H], "b": [4H]},
              "head": {"w": [H, 3·K·Z + 2], "b": [3·K·Z + 2]}}

Input at step t is x_t = [z_t, a_t (, restart_t)]; the head on h_t predicts z_{t+1}, r_t and done_t.
Gate order in the 4H axis: input, forget, cell candidate, output. Head columns: mixture logits, μ, log σ
(each a component-major [K, Z] block), reward, done logit; ``mdn_head`` returns them per dimension [Z, K].

Training speed (``sequence_loss``): the LSTM runs in the custom-VJP scans of wm_jax.models.lstm (its cell and
state are re-exported here); the head and its losses run in wm_jax.models.mdn_loss, chunked over time with the
gradients formed in the forward pass. All are tested equal to plain autodiff (tests/test_mdnrnn.py). Profile:
docs/performance.md.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from wm_jax.models.latent import reparameterize
from wm_jax.models.mdn_loss import LOG_SQRT_2PI, bce_with_logits, head_losses  # noqa: F401  (M's API)
from wm_jax.models.lstm import (  # noqa: F401  (the LSTM is part of M's API: wm_jax.models.mdnrnn.lstm_step, ...)
    LSTMState,
    lstm_cell,
    lstm_scan,
    lstm_scan_inputs,
    lstm_scan_reference,
    lstm_step,
    matmul_flat_t,
    project_inputs,
    zero_state,
)


class MDNOutput(NamedTuple):
    log_pi: jax.Array  # [..., Z, K] normalised log mixture weights (log_softmax over K)
    mu: jax.Array  # [..., Z, K]
    log_sigma: jax.Array  # [..., Z, K]
    reward: jax.Array  # [...] predicted reward r_t
    done_logit: jax.Array  # [...] logit of done_t


def input_dim(z_dim: int, action_dim: int, restart_flag: bool) -> int:
    return z_dim + action_dim + int(restart_flag)


def head_dim(z_dim: int, mixtures: int) -> int:
    return 3 * mixtures * z_dim + 2


def init_params(key: jax.Array, z_dim: int, action_dim: int, hidden: int, mixtures: int = 5,
                restart_flag: bool = False) -> dict:
    """Glorot-uniform input/head weights, orthogonal recurrent weights, forget-gate bias 1."""
    n_in = input_dim(z_dim, action_dim, restart_flag)
    k1, k2, k3 = jax.random.split(key, 3)
    glorot = jax.nn.initializers.glorot_uniform()
    w_h = jnp.concatenate([jax.nn.initializers.orthogonal()(k, (hidden, hidden)) for k in jax.random.split(k2, 4)], 1)
    b = jnp.zeros((4 * hidden,)).at[hidden:2 * hidden].set(1.0)
    return {
        "lstm": {"w_x": glorot(k1, (n_in, 4 * hidden)), "w_h": w_h, "b": b},
        "head": {"w": glorot(k3, (hidden, head_dim(z_dim, mixtures))), "b": jnp.zeros((head_dim(z_dim, mixtures),))},
    }


def sizes(params: dict) -> tuple[int, int]:
    """(hidden, input_dim) read off the weights."""
    n_in, four_h = params["lstm"]["w_x"].shape
    return four_h // 4, n_in


class MDNRaw(NamedTuple):
    """The head's raw output, component-major (K before Z: reductions over K are elementwise over Z)."""

    logits: jax.Array  # [..., K, Z] unnormalised mixture logits
    mu: jax.Array  # [..., K, Z]
    log_sigma: jax.Array  # [..., K, Z]
    reward: jax.Array  # [...]
    done_logit: jax.Array  # [...]


def head_raw(params: dict, h: jax.Array, z_dim: int) -> MDNRaw:
    """h [..., H] -> MDNRaw. Head columns: [logits (K·Z) | mu (K·Z) | log_sigma (K·Z) | reward | done]."""
    return split_head(h @ params["head"]["w"] + params["head"]["b"], z_dim)


def split_head(out: jax.Array, z_dim: int) -> MDNRaw:
    """Slice a head output [..., 3·K·Z + 2] into MDNRaw (no arithmetic)."""
    kz = out.shape[-1] - 2
    mix = out[..., :kz].reshape(*out.shape[:-1], 3, kz // (3 * z_dim), z_dim)
    return MDNRaw(mix[..., 0, :, :], mix[..., 1, :, :], mix[..., 2, :, :], out[..., kz], out[..., kz + 1])


def mdn_head(params: dict, h: jax.Array, z_dim: int) -> MDNOutput:
    """Head on h [..., H]: per-z-dimension mixture of K Gaussians ([..., Z, K]), reward, done logit."""
    r = head_raw(params, h, z_dim)
    zk = lambda a: jnp.swapaxes(a, -1, -2)  # noqa: E731
    return MDNOutput(jax.nn.log_softmax(zk(r.logits), axis=-1), zk(r.mu), zk(r.log_sigma), r.reward, r.done_logit)


def mdn_nll(out: MDNOutput, z_next: jax.Array) -> jax.Array:
    """Negative log-likelihood of z_next [..., Z] under each dimension's mixture: returns [..., Z]."""
    z = z_next[..., None]
    log_n = -0.5 * ((z - out.mu) * jnp.exp(-out.log_sigma)) ** 2 - out.log_sigma - LOG_SQRT_2PI
    return -jax.nn.logsumexp(out.log_pi + log_n, axis=-1)


def sample_z(key: jax.Array, out: MDNOutput, tau: jax.Array | float) -> jax.Array:
    """The paper's temperature sampling, independently per z dimension: returns z' [..., Z].

    Mixture logits ÷ τ → softmax over K → one component per dimension → z' = μ + σ·√τ·ε.
    τ is data (a traced scalar), so it can be vmapped.
    """
    k_cat, k_eps = jax.random.split(key)
    comp = jax.random.categorical(k_cat, out.log_pi / tau, axis=-1)  # [..., Z]
    mu = jnp.take_along_axis(out.mu, comp[..., None], axis=-1)[..., 0]
    log_sigma = jnp.take_along_axis(out.log_sigma, comp[..., None], axis=-1)[..., 0]
    eps = jax.random.normal(k_eps, mu.shape, mu.dtype)
    return mu + jnp.exp(log_sigma) * jnp.sqrt(tau) * eps


def forward_sequence(params: dict, x: jax.Array, keep: jax.Array, z_dim: int, *, unroll: int = 1,
                     custom_grad: bool = True, head_mask: jax.Array | None = None) -> MDNOutput:
    """Teacher-forced pass from zero state. x: [B, T, I], keep: [B, T] -> MDNOutput with leading axes [T, B].

    keep[b, t] = 0 resets the state to zero before step t (an episode's first step in a packed window).
    `head_mask` [B, H]: multiplies the head's input h at every step of sequence b (dropout; the state is unmasked).
    """
    hs = hidden_sequence(params, x, keep, unroll=unroll, custom_grad=custom_grad, head_mask=head_mask)
    return mdn_head(params, hs, z_dim)


def hidden_sequence(params: dict, x: jax.Array, keep: jax.Array, *, unroll: int = 1, custom_grad: bool = True,
                    head_mask: jax.Array | None = None) -> jax.Array:
    """The LSTM's outputs h [T, B, H] of :func:`forward_sequence` (what its head reads, `head_mask` applied)."""
    hidden, _ = sizes(params)
    lp, x_tm = params["lstm"], jnp.swapaxes(x, 0, 1)  # transpose the narrow x, never a [.., 4H] product
    z0 = jnp.zeros((x.shape[0], hidden), x.dtype)
    keep = jnp.swapaxes(keep, 0, 1).astype(x.dtype)
    if custom_grad:  # input projection inside the scan: no [T, B, 4H] array
        hs, _, _ = lstm_scan_inputs(lp["w_x"], lp["b"], lp["w_h"], x_tm, keep, z0, z0, unroll)
    else:
        hs, _, _ = lstm_scan_reference(lp["w_h"], project_inputs(params, x_tm), keep, z0, z0, unroll)
    return hs if head_mask is None else hs * head_mask[None]


def sample_latents(key: jax.Array, mu: jax.Array, logvar: jax.Array) -> jax.Array:
    """z = μ + exp(logvar / 2)·ε, ε ~ N(0, I): a fresh draw from V's posterior (any shape)."""
    return reparameterize(mu, logvar, jax.random.normal(key, mu.shape, mu.dtype))


def model_inputs(z: jax.Array, actions: jax.Array, restart: jax.Array, restart_flag: bool) -> jax.Array:
    """x_t = [z_t, a_t (, restart_t)]. z: [B, L+1, Z] (row L is only a target), actions [B, L, A] -> [B, L, I]."""
    parts = [z[:, :-1], actions.astype(z.dtype)]
    if restart_flag:
        parts.append(restart[..., None].astype(z.dtype))
    return jnp.concatenate(parts, -1)


def dropout_mask(key: jax.Array, rate: float, shape: tuple[int, ...]) -> jax.Array:
    """Inverted-dropout mask: each entry 0 with probability `rate`, else 1 / (1 - rate) (mean 1)."""
    return jax.random.bernoulli(key, 1.0 - rate, shape).astype(jnp.float32) / (1.0 - rate)


def sequence_loss(params: dict, batch: dict, key: jax.Array, *, restart_flag: bool, done_pos_weight: float,
                  reward_weight: float = 1.0, done_weight: float = 1.0, unroll: int = 1,
                  custom_grad: bool = True, head_dropout: float = 0.0,
                  reward_sign: bool = False) -> tuple[jax.Array, dict]:
    """M's training loss on one batch of `sequence_batches` (see wm_jax.data.sequences).

    batch: mu, logvar [B, L+1, Z]; actions [B, L, A]; rewards, dones, mask, restart [B, L].
    z is sampled from V's posterior with `key`; the input at t, [z_t, a_t], is scored against z_{t+1}
    (mixture NLL, mean over Z), r_t (squared error) and done_t (BCE, positives × done_pos_weight); steps
    with mask 0 count for nothing. Returns (loss, {"nll", "reward_mse", "done_bce"}), each a masked mean.
    `head_dropout` p > 0: the head reads h · mask, one inverted-dropout mask per window (key folded with 1).
    `reward_sign`: the reward target is sign(r_t) (Atari's clipped reward).
    """
    z = sample_latents(key, batch["mu"], batch["logvar"])
    x = model_inputs(z, batch["actions"], batch["restart"], restart_flag)
    head_mask = None
    if head_dropout > 0:  # one mask per window, as the dream holds one per episode
        head_mask = dropout_mask(jax.random.fold_in(key, 1), head_dropout, (x.shape[0], sizes(params)[0]))
    tm = lambda a: jnp.swapaxes(a, 0, 1).astype(z.dtype)  # noqa: E731  [B, L, ...] -> [L, B, ...]
    mask, target = tm(batch["mask"]), tm(z[:, 1:])
    rewards = tm(jnp.sign(batch["rewards"]) if reward_sign else batch["rewards"])
    hs = hidden_sequence(params, x, 1.0 - batch["restart"], unroll=unroll, custom_grad=custom_grad,
                         head_mask=head_mask)
    if custom_grad:  # head, NLL, reward and done in one chunked pass (wm_jax.models.mdn_loss)
        nll, r_mse, d_bce = head_losses(params["head"]["w"], params["head"]["b"], hs, target, rewards,
                                        tm(batch["dones"]), mask, z.shape[-1], done_pos_weight)
    else:  # plain autodiff through log_softmax / logsumexp (the reference the tests compare with)
        n = jnp.maximum(mask.sum(), 1.0)
        out = mdn_head(params, hs, z.shape[-1])
        nll = (mdn_nll(out, target).mean(-1) * mask).sum() / n
        r_mse = (((out.reward - rewards) ** 2) * mask).sum() / n
        d_bce = (bce_with_logits(out.done_logit, tm(batch["dones"]), done_pos_weight) * mask).sum() / n
    loss = nll + reward_weight * r_mse + done_weight * d_bce
    return loss, {"nll": nll, "reward_mse": r_mse, "done_bce": d_bce}


def flops_per_timestep(z_dim: int, action_dim: int, hidden: int, mixtures: int = 5,
                       restart_flag: bool = False) -> dict[str, float]:
    """Matmul FLOPs of one training timestep (forward + backward = 3x forward), per sample.

    Forward: input projection 2·I·4H, recurrence 2·H·4H, head 2·H·(3KZ+2). Elementwise work is not counted.
    """
    n_in, g = input_dim(z_dim, action_dim, restart_flag), 4 * hidden
    fwd = {"input": 2 * n_in * g, "recurrent": 2 * hidden * g, "head": 2 * hidden * head_dim(z_dim, mixtures)}
    return {"forward": float(sum(fwd.values())), "train": float(3 * sum(fwd.values())),
            **{f"forward_{k}": float(v) for k, v in fwd.items()}}
