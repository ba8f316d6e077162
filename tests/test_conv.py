"""V's convolution plans (wm_jax.models.conv): every formulation == the lax / flax reference in value and both
gradients, split 'fwd/dx/dw' entries, whole-model plans == the reference plan, plan choice by backend and config."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wm_jax.models import conv as C
from wm_jax.models import vae as V
from wm_jax.train import vae_loss as L

Z = 8
# Real spatial sizes and kernels of every layer; few channels (the maths does not depend on them) to keep
# compiles cheap. The whole-model test below runs the real channel counts.
ENC = [(64, 3, 4), (31, 4, 5), (14, 5, 6), (6, 6, 7)]  # (input size, C_in, C_out), kernel 4
DEC = [(1, 9, 4, 5), (5, 4, 5, 5), (13, 5, 3, 6), (30, 3, 3, 6)]  # (input size, C_in, C_out, kernel)


def _fwd_vjp(fn, x, w, proj, compiler_options=None):
    """One compiled call: forward output and the gradients of <output, proj> wrt input and kernel."""
    def f(x, w):
        y, vjp = jax.vjp(fn, x, w)
        return (y, *vjp(proj))
    return jax.jit(f, compiler_options=compiler_options)(x, w)


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _assert_same(got, want):
    for a, b in zip(got, want):
        a, b = np.asarray(a), np.asarray(b)
        scale = float(np.abs(b).max())
        assert scale > 0
        np.testing.assert_allclose(a / scale, b / scale, atol=1e-5)


def test_conv_formulations_match_lax():
    for n, c, o in ENC:
        x, w = _rand(2, n, n, c, seed=1), _rand(4, 4, c, o, seed=2)
        proj = _rand(2, (n - 4) // 2 + 1, (n - 4) // 2 + 1, o, seed=3)
        want = _fwd_vjp(lambda a, b: C.conv_s2(a, b, "xla"), x, w, proj)
        assert want[0].shape == proj.shape
        for how in ("im2col", "s2d"):
            _assert_same(_fwd_vjp(lambda a, b, how=how: C.conv_s2(a, b, how), x, w, proj), want)


def test_deconv_formulations_match_flax_conv_transpose():
    import flax.linen as nn

    for n, c, o, k in DEC:
        x, w = _rand(2, n, n, c, seed=1), _rand(k, k, c, o, seed=2)
        ct = nn.ConvTranspose(o, (k, k), (2, 2), padding="VALID", use_bias=False)
        size = 2 * (n - 1) + k  # 1 -> 5 -> 13 -> 30 -> 64
        proj = _rand(2, size, size, o, seed=3)
        want = _fwd_vjp(lambda a, b, ct=ct: ct.apply({"params": {"kernel": b}}, a), x, w, proj)
        assert want[0].shape == proj.shape
        for how in (["dense"] if n == 1 else []) + ["phase", "phase_mm", "scatter"]:
            _assert_same(_fwd_vjp(lambda a, b, how=how: C.deconv_s2(a, b, how), x, w, proj), want)


def test_split_entries_take_each_direction_from_its_own_formulation():
    """'fwd/dx/dw' entries (custom VJP) == the lax reference in value, input gradient and kernel gradient, for
    every entry of the CPU plans, also under the XLA:CPU options they are tuned with."""
    opts = C.compiler_options()
    assert opts == C.CPU_COMPILER_OPTIONS  # the CPU test backend accepts them
    for i, (n, c, o) in enumerate(ENC):
        x, w = _rand(2, n, n, c, seed=1), _rand(4, 4, c, o, seed=2)
        proj = _rand(2, (n - 4) // 2 + 1, (n - 4) // 2 + 1, o, seed=3)
        want = _fwd_vjp(lambda a, b: C.conv_s2(a, b, "xla"), x, w, proj)
        for entry in {C.CPU_TRAIN[i], "s2d/im2col/xla", "im2col/xla/s2d"} - {"s2d", "xla"}:
            got = _fwd_vjp(lambda a, b, e=entry: C.apply_layer(a, b, e, False), x, w, proj, opts)
            _assert_same(got, want)
    for i, (n, c, o, k) in enumerate(DEC):
        x, w = _rand(2, n, n, c, seed=1), _rand(k, k, c, o, seed=2)
        size = 2 * (n - 1) + k
        proj = _rand(2, size, size, o, seed=3)
        want = _fwd_vjp(lambda a, b: C.deconv_s2(a, b, "xla"), x, w, proj)
        entries = {C.CPU_TRAIN[4 + i], "phase/scatter/conv", "xla/phase/phase_mm", "scatter/xla/conv"}
        for entry in entries - ({"phase/scatter/conv", "xla/phase/phase_mm", "scatter/xla/conv"} if n == 1 else set()):
            got = _fwd_vjp(lambda a, b, e=entry: C.apply_layer(a, b, e, True), x, w, proj, opts)
            _assert_same(got, want)


@pytest.mark.parametrize("name", ["cpu", "cpu_infer", "v1"])
def test_named_plans_equal_the_reference_model(name):
    """Whole VAE, real sizes, compiled as the training step compiles it: same params and key -> same loss and
    gradients as the REFERENCE plan (plain lax)."""
    params = V.init_params(jax.random.key(0), Z)
    frames = jnp.asarray(np.random.default_rng(0).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8))
    key = jax.random.key(5)

    def both(p):
        out = {}
        for tag, plan in (("plan", C.resolve_plan(name)), ("ref", C.REFERENCE)):
            out[tag] = jax.value_and_grad(lambda q, plan=plan: L.loss_fn(q, frames, key, 0.5, plan)[0])(p)
        return out

    out = jax.jit(both, compiler_options=C.compiler_options())(params)
    (l_plan, g_plan), (l_ref, g_ref) = out["plan"], out["ref"]
    np.testing.assert_allclose(float(l_plan), float(l_ref), rtol=1e-5)
    _assert_same(jax.tree.leaves(g_plan), jax.tree.leaves(g_ref))


def test_plans_resolve_by_backend_and_config_and_bad_ones_are_named():
    from wm_jax.config import VAEConfig
    from wm_jax.train.vae import make_train_step

    assert C.resolve_plan("auto", "cpu") == C.CPU_TRAIN == C.resolve_plan(VAEConfig().plan)
    assert C.resolve_plan("auto", "cpu", training=False) == C.CPU_INFER
    for backend in ("gpu", "tpu"):
        assert C.resolve_plan("auto", backend) == C.resolve_plan("auto", backend, training=False) == C.REFERENCE
        assert C.compiler_options(backend) is None
    assert C.resolve_plan("xla", "cpu") == C.REFERENCE  # an explicit name overrides the backend
    assert C.resolve_plan(",".join(C.CPU_TRAIN)) == C.CPU_TRAIN
    for bad, match in (("xla,xla", "needs 8 entries"), ("cpu_fast", "needs 8 entries"),
                       (",".join(["phase"] + ["xla"] * 7), "entry 0 'phase'"),
                       (",".join(["xla"] * 5 + ["xla/conv/xla"] + ["xla"] * 2), "entry 5 'xla/conv/xla'"),
                       (",".join(["xla/xla"] + ["xla"] * 7), "entry 'xla/xla'"),
                       (",".join(["xla"] * 6 + ["dense"] + ["xla"]), "'dense' only fits")):
        with pytest.raises(ValueError, match=match):
            C.resolve_plan(bad)
    with pytest.raises(ValueError, match="V plan"):
        make_train_step(VAEConfig(plan="nonsense"))
