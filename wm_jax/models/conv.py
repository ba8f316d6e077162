"""How V computes its stride-2 convolutions and transposed convolutions: formulations and per-backend plans.

Plans (``resolve_plan``): one entry per layer (4 convs, then 4 deconvs). An entry is one formulation, used
for the forward pass and differentiated by JAX, or ``"fwd/dx/dw"``: three formulations of the same linear
map, one for the forward pass, one whose input gradient and one whose kernel gradient the backward pass uses
(a ``jax.custom_vjp``). Formulations (all proved equal in tests/test_conv.py):

* ``xla``     — plain ``lax.conv_general_dilated`` / ``lax.conv_transpose`` (the reference);
* ``im2col``  — a strided conv as 16 strided slices concatenated + one matmul;
* ``s2d``     — a stride-2 k4 conv as a stride-1 k2 conv on the space-to-depth (2x2 blocks) input;
* ``dense``   — the first deconv sees a 1x1 input, so it is one [1024 -> 5*5*128] matmul;
* ``phase``   — a stride-2 transposed conv is 4 interleaved stride-1 convs (sub-pixel decomposition):
                one 3x3 stride-1 conv with 4*out channels on the input padded by 2, then depth-to-space;
* ``phase_mm``— the same, with the 3x3 conv written as im2col (9 slices) + one matmul;
* ``scatter`` — a transposed conv as one matmul [C -> 6*6*out] per input pixel, then overlap-add of the
                9 shifted 2x2 phase blocks (no zero-padded work; kernel 5 is padded to 6 and cropped);
* ``conv``    — (deconv kernel gradient only) the kernel gradient of the stride-2 conv the deconv is the
                adjoint of: <deconv(x, K), g> = <x, conv(g, flip(K)^T)>.

Why per-backend plans (profiles in docs/v_performance.md): GPUs and TPUs run plain ``lax`` convolutions and
their gradients well (``REFERENCE``). XLA:CPU does not: it sends convolutions to YNNPACK, whose kernel
gradients run at 6-55 GFLOP/s per core, and runs lhs-dilated convolutions (the transposed conv forward and a
strided conv's input gradient) far below the matmul peak. Its Eigen convolutions reach 80-160 GFLOP/s per core
on every direct and weight-gradient shape here, so the CPU plans compile with ``compiler_options()`` (YNNPACK
keeps the dots, Eigen takes the convolutions) and pick, per layer and per direction, the formulation that
stays off the slow paths.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax import lax

_DN = ("NHWC", "HWIO", "NHWC")

# One entry per layer: 4 encoder convs, then 4 decoder deconvs.
REFERENCE: tuple[str, ...] = ("xla",) * 8
# XLA:CPU training, chosen by timing each layer's forward, input gradient and kernel gradient apart under
# ``compiler_options()`` (docs/v_performance.md). The first conv's input gradient is never computed (frames
# need none).
CPU_TRAIN: tuple[str, ...] = ("s2d", "xla/s2d/xla", "xla", "xla/im2col/xla",
                              "dense", "xla/xla/conv", "phase/xla/conv", "phase/xla/conv")
# XLA:CPU forward only (encode / decode without gradients): the fastest forward per layer.
CPU_INFER: tuple[str, ...] = ("s2d", "xla", "xla", "xla", "dense", "xla", "phase", "phase")
# The CPU plan of 2026-11 (before per-direction plans), kept for comparisons: ``wm-jax bench vae --plan v1``.
V1: tuple[str, ...] = ("im2col", "im2col", "im2col", "im2col", "dense", "scatter", "phase_mm", "scatter")
FAST, INFER = CPU_TRAIN, CPU_INFER  # the CPU plans under their older names
PLANS: dict[str, tuple[str, ...]] = {"xla": REFERENCE, "reference": REFERENCE, "cpu": CPU_TRAIN,
                                     "cpu_infer": CPU_INFER, "v1": V1}
CONV_FORMS = ("xla", "im2col", "s2d")
DECONV_FORMS = ("xla", "dense", "phase", "phase_mm", "scatter")
# XLA:CPU debug options the CPU plans are tuned under: YNNPACK fusions for dots and reductions (jaxlib 0.10.2's
# default list minus INDIVIDUAL_CONVOLUTION), so convolutions run on XLA's Eigen kernels.
CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type":
                        "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"}


def resolve_plan(name: str = "auto", backend: str | None = None, training: bool = True) -> tuple[str, ...]:
    """A plan by name: ``auto`` (``cpu``/``cpu_infer`` on the CPU backend, ``xla`` on GPU/TPU), ``cpu``,
    ``cpu_infer``, ``xla`` (= ``reference``), ``v1``, or 8 comma-separated entries (module doc).
    `backend` defaults to ``jax.default_backend()``; `training` picks between the two CPU plans for ``auto``."""
    if name == "auto":
        backend = backend or jax.default_backend()
        name = ("cpu" if training else "cpu_infer") if backend == "cpu" else "xla"
    plan = PLANS.get(name) or tuple(s.strip() for s in name.split(","))
    check_plan(plan)
    return plan


def check_plan(plan: Sequence[str]) -> None:
    """Raise ValueError naming the bad entry unless `plan` has 8 valid entries (module doc)."""
    if len(plan) != 8:
        raise ValueError(f"V plan needs 8 entries (4 convs + 4 deconvs) or a name in {sorted(PLANS)} or 'auto', "
                         f"got {tuple(plan)}")
    for i, entry in enumerate(plan):
        forms = CONV_FORMS if i < 4 else DECONV_FORMS
        parts = _parts(entry)
        if any(p not in forms for p in parts[:2]) or parts[2] not in forms + (("conv",) if i >= 4 else ()):
            raise ValueError(f"V plan entry {i} {entry!r}: use a formulation in {forms} or 'fwd/dx/dw'"
                             + (" (dw may also be 'conv')" if i >= 4 else ""))
        if i != 4 and "dense" in parts:
            raise ValueError(f"V plan entry {i} {entry!r}: 'dense' only fits the first deconv (1x1 input)")


def compiler_options(backend: str | None = None) -> dict[str, str] | None:
    """``jax.jit(..., compiler_options=...)`` for V's programs: ``CPU_COMPILER_OPTIONS`` on the CPU backend
    (when this jaxlib accepts them; else None with a warning), None elsewhere."""
    if (backend or jax.default_backend()) != "cpu":
        return None
    return dict(CPU_COMPILER_OPTIONS) if _cpu_options_accepted() else None


@functools.lru_cache(maxsize=1)
def _cpu_options_accepted() -> bool:
    try:
        jax.jit(lambda x: x + 1, compiler_options=CPU_COMPILER_OPTIONS).lower(jnp.zeros(2)).compile()
        return True
    except jax.errors.JaxRuntimeError as e:  # an unknown option or enum value in another jaxlib
        warnings.warn(f"this jaxlib rejects V's XLA:CPU options {CPU_COMPILER_OPTIONS} ({e}); V runs slower")
        return False


# ---------------------------------------------------------------- convolution formulations


def _patches(x: jax.Array, k: int, stride: int) -> jax.Array:
    """im2col by slicing: [B,H,W,C] -> [B,Ho,Wo,k*k*C], feature order (ky, kx, c) like a HWIO kernel."""
    _, h, w, _ = x.shape
    ho, wo = (h - k) // stride + 1, (w - k) // stride + 1
    cols = [x[:, ky:ky + stride * (ho - 1) + 1:stride, kx:kx + stride * (wo - 1) + 1:stride, :]
            for ky in range(k) for kx in range(k)]
    return jnp.concatenate(cols, axis=-1)


def _space_to_depth(x: jax.Array, size: int) -> jax.Array:
    """[B,H,W,C] -> [B,size/2,size/2,4C] from the top-left size x size pixels, features (dy, dx, c)."""
    b, c = x.shape[0], x.shape[-1]
    x = x[:, :size, :size].reshape(b, size // 2, 2, size // 2, 2, c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(b, size // 2, size // 2, 4 * c)


def conv_s2(x: jax.Array, kernel: jax.Array, how: str) -> jax.Array:
    """Stride-2 VALID conv (no bias). x [B,H,W,C], kernel [k,k,C,O] -> [B,(H-k)//2+1,(W-k)//2+1,O]."""
    k, _, c, o = kernel.shape
    if how == "xla":
        return lax.conv_general_dilated(x, kernel, (2, 2), "VALID", dimension_numbers=_DN)
    if how == "im2col":
        return _patches(x, k, 2) @ kernel.reshape(k * k * c, o)
    if how == "s2d":
        if k % 2:
            raise ValueError(f"'s2d' conv needs an even kernel, got {k}")
        n_out = (x.shape[1] - k) // 2 + 1
        xs = _space_to_depth(x, 2 * (n_out + k // 2 - 1))
        ks = kernel.reshape(k // 2, 2, k // 2, 2, c, o).transpose(0, 2, 1, 3, 4, 5).reshape(k // 2, k // 2, 4 * c, o)
        return lax.conv_general_dilated(xs, ks, (1, 1), "VALID", dimension_numbers=_DN)
    raise ValueError(f"unknown conv formulation {how!r} (use one of {CONV_FORMS})")


def _phase_kernel(kernel: jax.Array) -> jax.Array:
    """[K,K,C,O] transposed-conv kernel (K in 5, 6) -> [3,3,C,4*O] stride-1 kernel, outputs (py, px, o).

    ``lax.conv_transpose`` (flax's ConvTranspose) computes out[2i + k'] += x[i] * kernel[K-1-k'] per axis;
    with out index 2m + p and k' = 2j + p this is out_p[m] = sum_j x[m - j] * v[2j + p] for the flipped
    kernel v, i.e. a 3-tap correlation of x padded by 2 with taps v[2(2 - j') + p] (v zero-padded to 6).
    """
    k, _, c, o = kernel.shape
    v = kernel[::-1, ::-1]
    if k == 5:
        v = jnp.pad(v, ((0, 1), (0, 1), (0, 0), (0, 0)))
    elif k != 6:
        raise ValueError(f"phase decomposition supports kernel 5 or 6, got {k}")
    v = v.reshape(3, 2, 3, 2, c, o)[::-1, :, ::-1]  # [j'y, py, j'x, px, c, o]
    return v.transpose(0, 2, 4, 1, 3, 5).reshape(3, 3, c, 4 * o)


def deconv_s2(x: jax.Array, kernel: jax.Array, how: str) -> jax.Array:
    """Stride-2 VALID transposed conv, as flax ConvTranspose (no bias). x [B,n,n,C] -> [B,2(n-1)+K,..,O]."""
    b, n, _, c = x.shape
    k, o = kernel.shape[0], kernel.shape[-1]
    size = 2 * (n - 1) + k
    if how == "xla":
        return lax.conv_transpose(x, kernel, (2, 2), "VALID", dimension_numbers=_DN)
    if how == "dense":
        if n != 1:
            raise ValueError(f"'dense' deconv needs a 1x1 input, got {n}x{n}")
        w = kernel[::-1, ::-1].transpose(2, 0, 1, 3).reshape(c, k * k * o)
        return (x.reshape(b, c) @ w).reshape(b, k, k, o)
    if how in ("phase", "phase_mm"):
        u = _phase_kernel(kernel)
        xp = jnp.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))
        if how == "phase":
            y = lax.conv_general_dilated(xp, u, (1, 1), "VALID", dimension_numbers=_DN)
        else:
            y = _patches(xp, 3, 1) @ u.reshape(9 * c, 4 * o)
        m = n + 2
        y = y.reshape(b, m, m, 2, 2, o).transpose(0, 1, 3, 2, 4, 5).reshape(b, 2 * m, 2 * m, o)
        return y[:, :size, :size]
    if how == "scatter":
        v = kernel[::-1, ::-1]
        if k == 5:
            v = jnp.pad(v, ((0, 1), (0, 1), (0, 0), (0, 0)))
        cols = (x.reshape(b * n * n, c) @ v.transpose(2, 0, 1, 3).reshape(c, 36 * o)).reshape(b, n, n, 3, 2, 3, 2, o)
        m = n + 2
        y = sum(jnp.pad(cols[:, :, :, jy, :, jx], ((0, 0), (jy, 2 - jy), (jx, 2 - jx), (0, 0), (0, 0), (0, 0)))
                for jy in range(3) for jx in range(3))
        y = y.transpose(0, 1, 3, 2, 4, 5).reshape(b, 2 * m, 2 * m, o)
        return y[:, :size, :size]
    raise ValueError(f"unknown deconv formulation {how!r} (use one of {DECONV_FORMS})")


def _parts(entry: str) -> tuple[str, str, str]:
    """A plan entry -> (forward, input-gradient, kernel-gradient) formulations."""
    parts = tuple(p.strip() for p in entry.split("/"))
    if len(parts) == 1:
        return parts * 3
    if len(parts) != 3:
        raise ValueError(f"V plan entry {entry!r}: one formulation or 'fwd/dx/dw'")
    return parts


def _flip_swap(kernel: jax.Array) -> jax.Array:
    """[k,k,C,O] -> [k,k,O,C] flipped in space: the kernel of the adjoint map."""
    return jnp.swapaxes(kernel[::-1, ::-1], 2, 3)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3))
def _split_linear(transpose: bool, fwd: str, dx: str, dw: str, x: jax.Array, kernel: jax.Array) -> jax.Array:
    return (deconv_s2 if transpose else conv_s2)(x, kernel, fwd)


def _split_fwd(transpose, fwd, dx, dw, x, kernel):
    return _split_linear(transpose, fwd, dx, dw, x, kernel), (x, kernel)


def _split_bwd(transpose, fwd, dx, dw, res, g):
    x, kernel = res
    op = deconv_s2 if transpose else conv_s2
    gx = jax.vjp(lambda a: op(a, kernel, dx), x)[1](g)[0]
    if dw == "conv":  # <deconv(x, K), g> = <x, conv(g, flip_swap(K))>: the strided conv's kernel gradient
        gk = jax.vjp(lambda k: conv_s2(g, _flip_swap(k), "xla"), kernel)[1](x)[0]
    else:
        gk = jax.vjp(lambda k: op(x, k, dw), kernel)[1](g)[0]
    return gx, gk


_split_linear.defvjp(_split_fwd, _split_bwd)


def apply_layer(x: jax.Array, kernel: jax.Array, entry: str, transpose: bool) -> jax.Array:
    """One stride-2 conv (or, `transpose`, deconv) by a plan entry (module doc); no bias."""
    fwd, dx, dw = _parts(entry)
    if fwd == dx == dw:
        return (deconv_s2 if transpose else conv_s2)(x, kernel, fwd)
    return _split_linear(transpose, fwd, dx, dw, x, kernel)


class StridedConv(nn.Module):
    """Same parameters (names, shapes, init) as ``nn.Conv(features, (k, k), (2, 2), padding="VALID")``."""

    features: int
    k: int
    how: str
    transpose: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param("kernel", nn.initializers.lecun_normal(), (self.k, self.k, x.shape[-1], self.features))
        bias = self.param("bias", nn.initializers.zeros_init(), (self.features,))
        return apply_layer(x, kernel, self.how, self.transpose) + bias
