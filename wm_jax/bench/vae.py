"""``wm-jax bench vae``: V's training-step throughput (Adam, batch 100, fp32), compile excluded.

Reports wall images/s and, because the benchmark machine may be shared, images per CPU-second x cores
(what a quiet machine would give if the process kept all cores busy); FLOPs per image (analytic, forward +
backward) and both as a fraction of the measured matmul peak (``wm_jax.sysinfo.peak_flops``).
"""

from __future__ import annotations

import os
import time


def add_arguments(parser) -> None:
    parser.add_argument("--batch", type=int, default=100, help="images per training step (paper: 100)")
    parser.add_argument("--z-dim", type=int, default=32, help="latent size Z (32 CarRacing, 64 Doom)")
    parser.add_argument("--plan", default="fast", help="'fast', 'reference' or 8 comma-separated formulations")
    parser.add_argument("--compare-reference", action="store_true",
                        help="also time the plain lax/flax ConvTranspose model")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per repeat")


def cpu_peak_flops(n: int = 2048, repeats: int = 5) -> float:
    """fp32 matmul FLOP/s per CPU-second x cores: the matmul peak a quiet machine would show, measured with
    process CPU time so that other jobs sharing the cores do not lower it (compare with the *_cpu figures)."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    f(a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        c0 = time.process_time()
        f(a).block_until_ready()
        best = min(best, time.process_time() - c0)
    return 2 * n**3 / (best / (os.cpu_count() or 1))


def _plan(text: str) -> tuple[str, ...]:
    from wm_jax.models import vae as V

    return {"fast": V.FAST, "reference": V.REFERENCE, "infer": V.INFER}.get(text) or tuple(text.split(","))


def time_steps(step, state, frames, seconds: float, repeats: int = 3) -> tuple[float, float]:
    """(best wall s/step, best CPU s/step) over `repeats` runs of >= `seconds`; first call = warm-up."""
    import jax

    params, opt_state, key_data = state
    params, opt_state, _ = step(params, opt_state, frames, key_data, 0)
    jax.block_until_ready(params)
    best_wall = best_cpu = float("inf")
    for _ in range(repeats):
        n, t0, c0 = 0, time.perf_counter(), time.process_time()
        while True:
            params, opt_state, m = step(params, opt_state, frames, key_data, n)
            n += 1
            if n % 2 == 0:
                jax.block_until_ready(m)
                if time.perf_counter() - t0 >= seconds:
                    break
        jax.block_until_ready(params)
        best_wall = min(best_wall, (time.perf_counter() - t0) / n)
        best_cpu = min(best_cpu, (time.process_time() - c0) / n)
    return best_wall, best_cpu


def measure(args) -> dict:
    import jax
    import numpy as np

    from wm_jax.config import VAEConfig
    from wm_jax.models import vae as V
    from wm_jax.parallel import make_mesh, replicate
    from wm_jax.sysinfo import peak_flops
    from wm_jax.train.vae import make_optimizer, make_train_step

    v = VAEConfig(z_dim=args.z_dim, batch_size=args.batch)
    mesh = make_mesh()
    frames = np.random.default_rng(0).integers(0, 256, (args.batch, 64, 64, 3), dtype=np.uint8)
    params = jax.device_get(V.init_params(jax.random.key(0), args.z_dim))
    key_data = jax.random.key_data(jax.random.key(1))
    flops = V.flops_per_image(args.z_dim)
    cores = os.cpu_count() or 1
    peak, peak_cpu = peak_flops(), cpu_peak_flops()
    plans = {"fast": _plan(args.plan)}
    if args.compare_reference:
        plans["reference"] = V.REFERENCE
    out: dict = {"batch_size": args.batch, "z_dim": args.z_dim, "flops_per_image": flops, "peak_flops": peak,
                 "dtype": "float32", "params": V.count_params(params),
                 "peak_flops_cpu_normalised": peak_cpu}
    for name, plan in plans.items():
        step = make_train_step(v, mesh, plan)
        state = (replicate(params, mesh), replicate(make_optimizer(v).init(params), mesh), key_data)
        t0 = time.perf_counter()
        jax.block_until_ready(step(*state[:2], frames, key_data, 0)[2])
        compile_s = time.perf_counter() - t0
        state = (replicate(params, mesh), replicate(make_optimizer(v).init(params), mesh), key_data)
        wall, cpu = time_steps(step, state, frames, args.seconds)
        ips, ips_cpu = args.batch / wall, args.batch / (cpu / cores)
        prefix = "" if name == "fast" else "reference_"
        out.update({f"{prefix}plan": list(plan), f"{prefix}images_per_s": ips,
                    f"{prefix}images_per_cpu_s_x_cores": ips_cpu,
                    f"{prefix}fraction_of_peak": ips * flops / peak,
                    f"{prefix}fraction_of_peak_cpu_normalised": ips_cpu * flops / peak_cpu,
                    f"{prefix}compile_s": compile_s})
    out["machine_limit_images_per_s"] = peak / flops
    out["machine_limit_images_per_s_cpu_normalised"] = peak_cpu / flops
    return out
