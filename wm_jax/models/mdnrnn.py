"""M: an LSTM with a mixture-density head over the next z, plus reward and done heads.

Parameters are a plain pytree of explicit weights, so the same functions serve training (the input
projection and the head leave the scan as big matmuls) and the dream (one step at a time, vmapped over a
population, with τ as runtime data)::

    params = {"lstm": {"w_x": [I, 4H], "w_h": [H, 4H], "b": [4H]},
              "head": {"w": [H, 3·K·Z + 2], "b": [3·K·Z + 2]}}

Input at step t is x_t = [z_t, a_t (, restart_t)]; the head on h_t predicts z_{t+1}, r_t and done_t.
Gate order in the 4H axis: input, forget, cell candidate, output. Head columns: mixture logits, μ, log σ
(each a component-major [K, Z] block), reward, done logit; ``mdn_head`` returns them per dimension [Z, K].

Training speed (``sequence_loss``): time-major throughout; :func:`lstm_scan_inputs` forms the input
projection step by step inside a custom-VJP scan (no [T, B, 4H] array), its forward stores each step's local
derivative factors, its backward scan carries only (dh, dc), and dW_x, db, dW_h are one GEMM per chunk of steps;
the head is one big matmul; :func:`mdn_nll_raw` forms the NLL's closed-form gradient in its forward pass. All
are tested equal to plain autodiff (tests/test_mdnrnn.py). Profile and history: docs/performance.md.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from wm_jax.models.latent import reparameterize


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


def unroll(params: dict, state: LSTMState, x: jax.Array, reset: jax.Array | None = None,
           *, scan_unroll: int = 1) -> tuple[LSTMState, jax.Array]:
    """Run the LSTM over time. x: [B, T, I], optional reset [B, T] (1 = zero the state before step t)
    -> (final state, h: [B, T, H]).

    The input projection is one [B·T, I] x [I, 4H] matmul outside the scan; only h @ W_h recurs, and the
    gradient uses the custom-VJP :func:`lstm_scan` (weight gradients as one matmul after the scan).
    """
    xp = jnp.swapaxes(project_inputs(params, x), 0, 1)  # [T, B, 4H]
    keep = jnp.ones(xp.shape[:2], xp.dtype) if reset is None else 1.0 - jnp.swapaxes(reset, 0, 1).astype(xp.dtype)
    hs, h, c = lstm_scan(params["lstm"]["w_h"], xp, keep, state.h, state.c, scan_unroll)
    return LSTMState(c, h), jnp.swapaxes(hs, 0, 1)


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


LOG_SQRT_2PI = 0.5 * jnp.log(2 * jnp.pi)


def mdn_nll(out: MDNOutput, z_next: jax.Array) -> jax.Array:
    """Negative log-likelihood of z_next [..., Z] under each dimension's mixture: returns [..., Z]."""
    z = z_next[..., None]
    log_n = -0.5 * ((z - out.mu) * jnp.exp(-out.log_sigma)) ** 2 - out.log_sigma - LOG_SQRT_2PI
    return -jax.nn.logsumexp(out.log_pi + log_n, axis=-1)


@jax.custom_vjp
def mdn_nll_raw(logits: jax.Array, mu: jax.Array, log_sigma: jax.Array, z_next: jax.Array) -> jax.Array:
    """:func:`mdn_nll` from raw component-major head outputs [..., K, Z] (z_next [..., Z]) -> [..., Z].

    Training path: the forward pass also forms the closed-form gradient (γ = posterior responsibilities,
    u = (z - μ)/σ): ∂/∂logits = π - γ, ∂/∂μ = -γ·u/σ, ∂/∂log σ = γ·(1 - u²), so the backward pass is one
    multiply instead of re-walking log_softmax and logsumexp. z_next gets no gradient (it is data).
    """
    return _nll_raw_fwd(logits, mu, log_sigma, z_next)[0]


def _nll_raw_fwd(logits, mu, log_sigma, z_next):
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
    grads = (e / se - gamma, -gamma * u * inv_s, gamma * (1.0 - u * u))
    return nll, grads


def _nll_raw_vjp_fwd(logits, mu, log_sigma, z_next):
    nll, grads = _nll_raw_fwd(logits, mu, log_sigma, z_next)
    return nll, (grads, z_next)


def _nll_raw_vjp_bwd(res, ct):
    (g_logits, g_mu, g_ls), z_next = res
    c = ct[..., None, :]
    return c * g_logits, c * g_mu, c * g_ls, jnp.zeros_like(z_next)


mdn_nll_raw.defvjp(_nll_raw_vjp_fwd, _nll_raw_vjp_bwd)


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


# ---------------------------------------------------------------- training-speed path: custom-VJP LSTM scan
#
# Time-major throughout: xp [T, B, 4H], keep [T, B] (0 = reset the state to zero *before* step t).
# The forward scan also forms each step's local derivative factors (they fuse with the gate math there):
#   p = (g·σ'(i), c_{t-1}·σ'(f), i·tanh'(g), tanh(c)·σ'(o)) [B, 4H],  q = o·tanh'(c),  fk = f·keep  [B, H],
# so the backward scan carries only (dh, dc) and is one elementwise fusion plus the [B, 4H] x [4H, H] product
# dgates_t @ W_hᵀ:  dc = dc' + dh·q,  dgates = (dc, dc, dc, dh)·p. The weight gradient dW_h = Σ_t h_{t-1}ᵀ dgates_t
# is ONE [T·B, H]ᵀ x [T·B, 4H] matmul after the scan (contracting the flattened time-batch axis in place, no
# transposed copy), and dxp = dgates leaves the scan so dW_x, db are big matmuls too.


def _gate_consts(hidden: int, dtype) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Per-column constants of the fused activation act = tanh(s·x)·a + b over the 4H gate axis.

    σ(x) = ½·tanh(x/2) + ½ for i, f, o (s = a = ½, b = ½) and tanh for g (s = a = 1, b = 0): ONE tanh
    over [B, 4H] instead of split / three sigmoids / tanh / concat.
    """
    half, one = jnp.full((hidden,), 0.5, dtype), jnp.ones((hidden,), dtype)
    s = jnp.concatenate([half, half, one, half])
    return s, s, jnp.concatenate([half, half, 0 * one, half])


def _scan_forward(w_h, xp, keep, h0, c0, unroll, proj=None):
    """Forward recurrence. Returns (hs [T, B, H], p [T, B, 4H], q [T, B, H], fk [T, B, H], h_T, c_T).

    proj = (w_x [I, 4H], b [4H]): xp holds raw inputs [T, B, I], projected step by step inside the scan.
    """
    s, a, b = _gate_consts(h0.shape[-1], h0.dtype)

    def body(carry, inp):
        h, c = carry
        xp_t, k_t = inp
        if proj is not None:
            xp_t = xp_t @ proj[0] + proj[1]
        k_t = k_t[:, None]
        h, c = h * k_t, c * k_t
        act = jnp.tanh((xp_t + h @ w_h) * s) * a + b  # (σ(i), σ(f), tanh(g), σ(o)) [B, 4H]
        i, f, g, o = jnp.split(act, 4, axis=-1)
        c_new = f * c + i * g
        tc = jnp.tanh(c_new)
        h = o * tc
        sig = lambda y: y * (1.0 - y)  # noqa: E731  σ' from σ
        p = jnp.concatenate([g * sig(i), c * sig(f), i * (1.0 - g * g), tc * sig(o)], -1)
        return (h, c_new), (h, p, o * (1.0 - tc * tc), f * k_t)

    (h_t, c_t), (hs, p, q, fk) = jax.lax.scan(body, (h0, c0), (xp, keep), unroll=unroll)
    return hs, p, q, fk, h_t, c_t


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def lstm_scan(w_h: jax.Array, xp: jax.Array, keep: jax.Array, h0: jax.Array, c0: jax.Array,
              unroll: int = 1) -> tuple[jax.Array, jax.Array, jax.Array]:
    """LSTM over time from projected inputs. xp: [T, B, 4H], keep: [T, B], h0, c0: [B, H].

    Returns (hs [T, B, H], h_T [B, H], c_T [B, H]). Gradients flow to w_h, xp, h0, c0; `keep` is data
    (its cotangent is returned as zeros). Equals :func:`lstm_scan_reference` and its autodiff gradient.
    """
    hs, _, _, _, h_t, c_t = _scan_forward(w_h, xp, keep, h0, c0, unroll)
    return hs, h_t, c_t


def _lstm_scan_fwd(w_h, xp, keep, h0, c0, unroll):
    hs, p, q, fk, h_t, c_t = _scan_forward(w_h, xp, keep, h0, c0, unroll)
    return (hs, h_t, c_t), (w_h, keep, h0, hs, p, q, fk)


def _lstm_scan_bwd(unroll, res, cot):
    dw_h, dgates, dh0, dc0 = _scan_backward(unroll, res, cot)
    return dw_h, dgates, jnp.zeros_like(res[1]), dh0, dc0


def _scan_backward(unroll, res, cot):
    """Backward recurrence from the forward's residuals -> (dW_h, dgates [T, B, 4H], dh0, dc0)."""
    w_h, keep, h0, hs = res[:4]
    dh0, dc0, dgates = _scan_backward_carry(unroll, res, cot)
    h_prev = jnp.concatenate([h0[None], hs[:-1]], 0) * keep[..., None]  # the h_{t-1} each step used
    return matmul_flat_t(h_prev, dgates), dgates, dh0, dc0


def _scan_backward_carry(unroll, res, cot):
    """The reverse scan alone: carries (dh, dc), returns (dh0, dc0, dgates [T, B, 4H])."""
    w_h, keep, h0, hs, p, q, fk = res
    d_hs, d_ht, d_ct = cot
    hidden = h0.shape[-1]
    w_ht = w_h.T
    is_o = (jnp.arange(4) == 3)[None, :, None]  # the output gate's factor takes dh, the others dc

    def body(carry, inp):
        dh_next, dc_next = carry
        dh_out, p_t, q_t, fk_t, k = inp
        dh = dh_out + dh_next
        dc = dc_next + dh * q_t
        dgates = (jnp.where(is_o, dh[:, None], dc[:, None]) * p_t.reshape(-1, 4, hidden)).reshape(p_t.shape)
        return ((dgates @ w_ht) * k[:, None], dc * fk_t), dgates

    (dh0, dc0), dgates = jax.lax.scan(body, (d_ht, d_ct), (d_hs, p, q, fk, keep), reverse=True, unroll=unroll)
    return dh0, dc0, dgates


lstm_scan.defvjp(_lstm_scan_fwd, _lstm_scan_bwd)


def matmul_flat_t(a: jax.Array, b: jax.Array) -> jax.Array:
    """aᵀ b over the flattened leading axes: a [..., M], b [..., N] -> [M, N] (no transposed copy)."""
    return jax.lax.dot_general(a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1]), (((0,), (0,)), ((), ())))


@functools.partial(jax.custom_vjp, nondiff_argnums=(7,))
def lstm_scan_inputs(w_x: jax.Array, b: jax.Array, w_h: jax.Array, x: jax.Array, keep: jax.Array, h0: jax.Array,
                     c0: jax.Array, unroll: int = 1) -> tuple[jax.Array, jax.Array, jax.Array]:
    """:func:`lstm_scan` of xp = x @ w_x + b from raw inputs x [T, B, I], projected inside the scan.

    The [T, B, 4H] projection is never stored (one small matmul per step instead). The backward runs in chunks
    of ≤ 32 steps (the largest divisor of T): each chunk's dgates [n, B, 4H] stay small and feed one GEMM
    [x_t, 1, h_{t-1}]ᵀ dgates accumulating dW_x, db, dW_h, so no [T, B, 4H] array is stacked either.
    Same outputs and gradients as :func:`lstm_scan` of x @ w_x + b.
    """
    hs, _, _, _, h_t, c_t = _scan_forward(w_h, x, keep, h0, c0, unroll, (w_x, b))
    return hs, h_t, c_t


def _inputs_fwd(w_x, b, w_h, x, keep, h0, c0, unroll):
    hs, p, q, fk, h_t, c_t = _scan_forward(w_h, x, keep, h0, c0, unroll, (w_x, b))
    return (hs, h_t, c_t), ((w_h, keep, h0, hs, p, q, fk), w_x, x)


def _inputs_bwd(unroll, res, cot):
    (w_h, keep, h0, hs, p, q, fk), w_x, x = res
    t, n_in = x.shape[0], x.shape[-1]
    n = max(d for d in range(1, 33) if t % d == 0)  # steps per chunk
    # [x_t, 1, h_{t-1}]: one GEMM per chunk gives dW_x, db and dW_h from that chunk's dgates (no [T, B, 4H] stack)
    h_prev = jnp.concatenate([h0[None], hs[:-1]], 0) * keep[..., None]
    lhs = jnp.concatenate([x, jnp.ones_like(x[..., :1]), h_prev], -1)
    chunks = [a.reshape(t // n, n, *a.shape[1:]) for a in (lhs, cot[0], p, q, fk, keep)]

    def outer(carry, inp):
        dh, dc, dw = carry
        lhs_c, d_hs_c, p_c, q_c, fk_c, k_c = inp
        dh, dc, dg = _scan_backward_carry(unroll, (w_h, k_c, h0, None, p_c, q_c, fk_c), (d_hs_c, dh, dc))
        return (dh, dc, dw + matmul_flat_t(lhs_c, dg)), dg @ w_x.T

    dw0 = jnp.zeros((lhs.shape[-1], w_h.shape[-1]), w_h.dtype)
    (dh0, dc0, dw), dx = jax.lax.scan(outer, (cot[1], cot[2], dw0), chunks, reverse=True)
    return dw[:n_in], dw[n_in], dw[n_in + 1:], dx.reshape(x.shape), jnp.zeros_like(keep), dh0, dc0


lstm_scan_inputs.defvjp(_inputs_fwd, _inputs_bwd)


def lstm_scan_reference(w_h, xp, keep, h0, c0, unroll: int = 1):
    """Plain-autodiff twin of :func:`lstm_scan` (same outputs); for tests and the benchmark baseline."""
    def body(s, inp):
        xp_t, k_t = inp
        s = LSTMState(s.c * k_t[:, None], s.h * k_t[:, None])
        s = lstm_cell({"lstm": {"w_h": w_h}}, s, xp_t)
        return s, s.h

    s, hs = jax.lax.scan(body, LSTMState(c0, h0), (xp, keep), unroll=unroll)
    return hs, s.h, s.c


def forward_sequence(params: dict, x: jax.Array, keep: jax.Array, z_dim: int, *, unroll: int = 1,
                     custom_grad: bool = True, raw: bool = False,
                     head_mask: jax.Array | None = None) -> MDNOutput | MDNRaw:
    """Teacher-forced pass from zero state. x: [B, T, I], keep: [B, T] -> MDNOutput (MDNRaw if `raw`) with
    leading axes [T, B].

    keep[b, t] = 0 resets the state to zero before step t (an episode's first step in a packed window).
    `head_mask` [B, H]: multiplies the head's input h at every step of sequence b (dropout; the state is unmasked).
    """
    hidden, _ = sizes(params)
    lp, x_tm = params["lstm"], jnp.swapaxes(x, 0, 1)  # transpose the narrow x, never a [.., 4H] product
    z0 = jnp.zeros((x.shape[0], hidden), x.dtype)
    keep = jnp.swapaxes(keep, 0, 1).astype(x.dtype)
    if custom_grad:  # input projection inside the scan: no [T, B, 4H] array
        hs, _, _ = lstm_scan_inputs(lp["w_x"], lp["b"], lp["w_h"], x_tm, keep, z0, z0, unroll)
    else:
        hs, _, _ = lstm_scan_reference(lp["w_h"], project_inputs(params, x_tm), keep, z0, z0, unroll)
    if head_mask is not None:
        hs = hs * head_mask[None]
    return (head_raw if raw else mdn_head)(params, hs, z_dim)


def bce_with_logits(logit: jax.Array, target: jax.Array, pos_weight: float | jax.Array) -> jax.Array:
    """Binary cross-entropy, positive class weighted: -w·y·log σ(l) - (1-y)·log(1-σ(l)), elementwise."""
    return pos_weight * target * jax.nn.softplus(-logit) + (1.0 - target) * jax.nn.softplus(logit)


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
    out = forward_sequence(params, x, 1.0 - batch["restart"], z.shape[-1], unroll=unroll, custom_grad=custom_grad,
                           raw=True, head_mask=head_mask)
    tm = lambda a: jnp.swapaxes(a, 0, 1).astype(z.dtype)  # noqa: E731  [B, L, ...] -> [L, B, ...]
    mask = tm(batch["mask"])
    n = jnp.maximum(mask.sum(), 1.0)
    target = tm(z[:, 1:])
    if custom_grad:
        nll_tbz = mdn_nll_raw(out.logits, out.mu, out.log_sigma, target)
    else:  # plain autodiff through log_softmax / logsumexp (the reference the tests compare with)
        zk = lambda a: jnp.swapaxes(a, -1, -2)  # noqa: E731
        nll_tbz = mdn_nll(MDNOutput(jax.nn.log_softmax(zk(out.logits), -1), zk(out.mu), zk(out.log_sigma),
                                    out.reward, out.done_logit), target)
    nll = (nll_tbz.mean(-1) * mask).sum() / n
    rewards = jnp.sign(batch["rewards"]) if reward_sign else batch["rewards"]
    r_mse = (((out.reward - tm(rewards)) ** 2) * mask).sum() / n
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
