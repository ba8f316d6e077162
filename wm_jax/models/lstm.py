"""M's LSTM: the cell, its state, and the scans that run it over time (the dream steps it one step at a time).

The weights are M's ``params["lstm"] = {"w_x": [I, 4H], "w_h": [H, 4H], "b": [4H]}`` (wm_jax.models.mdnrnn); every
function takes the whole M ``params`` or, for the training-speed scans, the arrays themselves. Gate order in the 4H
axis: input, forget, cell candidate, output.

Training speed: time-major throughout; :func:`lstm_scan_inputs` forms the input projection step by step inside a
custom-VJP scan (no [T, B, 4H] array), its forward stores each step's local derivative factors, its backward scan
carries only (dh, dc), and dW_x, db, dW_h are one GEMM per chunk of steps. Tested equal to plain autodiff
(:func:`lstm_scan_reference`; tests/test_mdnrnn.py). Profile and history: docs/performance.md.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp


class LSTMState(NamedTuple):
    c: jax.Array  # [..., H] cell state
    h: jax.Array  # [..., H] hidden state


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
