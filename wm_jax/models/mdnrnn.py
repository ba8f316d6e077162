"""M: an LSTM with a mixture-density head over the next z, plus reward and done heads.

Parameters are a plain pytree of explicit weights, so the same functions serve training (the input
projection and the head leave the scan as big matmuls) and the dream (one step at a time, vmapped over a
population, with τ as runtime data)::

    params = {"lstm": {"w_x": [I, 4H], "w_h": [H, 4H], "b": [4H]},
              "head": {"w": [H, 3·K·Z + 2], "b": [3·K·Z + 2]}}

Input at step t is x_t = [z_t, a_t (, restart_t)]; the head on h_t predicts z_{t+1}, r_t and done_t.
Gate order in the 4H axis: input, forget, cell candidate, output.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp


class LSTMState(NamedTuple):
    c: jax.Array  # [..., H] cell state
    h: jax.Array  # [..., H] hidden state


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


def zero_state(hidden: int, batch_shape: tuple[int, ...] = ()) -> LSTMState:
    z = jnp.zeros((*batch_shape, hidden))
    return LSTMState(z, z)


def project_inputs(params: dict, x: jax.Array) -> jax.Array:
    """x @ W_x + b for any leading shape: [..., I] -> [..., 4H]. Hoisted out of the scan in training."""
    return x @ params["lstm"]["w_x"] + params["lstm"]["b"]


def lstm_cell(params: dict, state: LSTMState, x_proj: jax.Array) -> LSTMState:
    """One LSTM step from a projected input x_proj [..., 4H]."""
    gates = x_proj + state.h @ params["lstm"]["w_h"]
    i, f, g, o = jnp.split(gates, 4, axis=-1)
    c = jax.nn.sigmoid(f) * state.c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return LSTMState(c, h)


def lstm_step(params: dict, state: LSTMState, x: jax.Array) -> LSTMState:
    """One LSTM step from a raw input x_t [..., I]."""
    return lstm_cell(params, state, project_inputs(params, x))


def unroll(params: dict, state: LSTMState, x: jax.Array) -> tuple[LSTMState, jax.Array]:
    """Run the LSTM over time. x: [B, T, I] -> (final state, h: [B, T, H]).

    The input projection is one [B·T, I] x [I, 4H] matmul outside the scan; only h @ W_h recurs.
    """
    xp = jnp.swapaxes(project_inputs(params, x), 0, 1)  # [T, B, 4H]

    def body(s: LSTMState, xp_t: jax.Array) -> tuple[LSTMState, jax.Array]:
        s = lstm_cell(params, s, xp_t)
        return s, s.h

    state, hs = jax.lax.scan(body, state, xp)
    return state, jnp.swapaxes(hs, 0, 1)


def mdn_head(params: dict, h: jax.Array, z_dim: int) -> MDNOutput:
    """Head on h [..., H]: per-z-dimension mixture of K Gaussians, reward, done logit."""
    out = h @ params["head"]["w"] + params["head"]["b"]
    kz = out.shape[-1] - 2
    k = kz // (3 * z_dim)
    mix = out[..., :kz].reshape(*out.shape[:-1], 3, z_dim, k)
    log_pi = jax.nn.log_softmax(mix[..., 0, :, :], axis=-1)
    return MDNOutput(log_pi, mix[..., 1, :, :], mix[..., 2, :, :], out[..., kz], out[..., kz + 1])


LOG_SQRT_2PI = 0.5 * jnp.log(2 * jnp.pi)


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
