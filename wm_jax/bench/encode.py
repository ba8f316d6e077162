"""``wm-jax bench encode``: frames/s of V's jitted encoder (uint8 frames -> mu, logvar, to host), compile excluded.

Runs the encoder of ``wm-jax encode`` (``wm_jax.train.encode.make_encoder``) and, alternating with it in the same
run, a block of fp32 matmuls (the measured peak): see ``wm_jax.bench.vae`` for the method. The fraction of peak
counts the encoder's analytic forward FLOPs (4 convs + the two heads).
"""

from __future__ import annotations

import os
import time


def add_arguments(parser) -> None:
    parser.add_argument("--batch", type=int, default=1000, help="frames per call (vae.encode_batch_size)")
    parser.add_argument("--z-dim", type=int, default=32, help="latent size Z (32 CarRacing, 64 Doom)")
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per block")
    parser.add_argument("--rounds", type=int, default=5, help="times every block runs, alternating")


def encoder_flops(z_dim: int) -> float:
    """Analytic forward FLOPs of one frame through the encoder (the decoder does not run)."""
    from wm_jax.models.vae import DEC_LAYERS, flops_per_image

    macs, c, n = z_dim * 1024, 1024, 1
    for f, k in DEC_LAYERS:
        macs += n * n * k * k * c * f
        c, n = f, 2 * (n - 1) + k
    return flops_per_image(z_dim, training=False) - 2.0 * macs


def measure(args) -> dict:
    import jax
    import numpy as np

    from wm_jax.bench.compare import alternate, matmul_block, summarise
    from wm_jax.models import vae as V
    from wm_jax.parallel import make_mesh, replicate
    from wm_jax.train.encode import make_encoder

    mesh = make_mesh()
    enc = make_encoder(args.batch, mesh)
    params = replicate(V.init_params(jax.random.key(0), args.z_dim), mesh)
    frames = np.random.default_rng(0).integers(0, 256, (args.batch, 64, 64, 3), dtype=np.uint8)
    t0 = time.perf_counter()
    jax.block_until_ready(enc(params, frames))
    compile_s = time.perf_counter() - t0

    def block() -> tuple[float, float, float]:
        n, t0, c0 = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - t0 < args.seconds:
            mu, logvar = enc(params, frames)
            np.asarray(mu), np.asarray(logvar)  # to host, as `wm-jax encode` does
            n += 1
        return float(n * args.batch), time.perf_counter() - t0, time.process_time() - c0

    block()  # warm-up
    s = summarise(alternate({"encode": block, "peak": matmul_block(args.seconds)}, args.rounds), os.cpu_count() or 1)
    flops = encoder_flops(args.z_dim)
    fps, peak = s["encode"]["best"], s["peak"]["best"]
    return {"batch_size": args.batch, "z_dim": args.z_dim, "plan": list(V.resolve_plan("auto", training=False)[:4]),
            "chunk": V.ENCODE_CHUNK_CPU if jax.default_backend() == "cpu" else 0,
            "compiler_options": V.compiler_options(), "frames_per_s": fps, "frames_per_s_median": s["encode"]["median"],
            "frames_per_cpu_s_x_cores": s["encode"]["best_cpu_x_cores"], "flops_per_frame": flops,
            "peak_flops": peak, "fraction_of_peak": fps * flops / peak, "machine_limit_frames_per_s": peak / flops,
            "compile_s": compile_s, "rounds": args.rounds, "seconds_per_block": args.seconds, "blocks": s,
            "method": "alternating blocks in one run; rates = best block (wm_jax.bench.compare)"}
