"""``wm-jax bench encode``: frames/s of V's jitted encoder (uint8 frames -> mu, logvar), compile excluded."""

from __future__ import annotations

import os
import time


def add_arguments(parser) -> None:
    parser.add_argument("--batch", type=int, default=1000, help="frames per call (vae.encode_batch_size)")
    parser.add_argument("--z-dim", type=int, default=32, help="latent size Z (32 CarRacing, 64 Doom)")
    parser.add_argument("--seconds", type=float, default=3.0, help="timed seconds per repeat")


def measure(args) -> dict:
    import jax
    import numpy as np

    from wm_jax.models import vae as V
    from wm_jax.parallel import make_mesh, replicate
    from wm_jax.sysinfo import peak_flops
    from wm_jax.train.encode import make_encoder

    mesh = make_mesh()
    enc = make_encoder(args.batch, mesh)
    params = replicate(V.init_params(jax.random.key(0), args.z_dim), mesh)
    frames = np.random.default_rng(0).integers(0, 256, (args.batch, 64, 64, 3), dtype=np.uint8)
    jax.block_until_ready(enc(params, frames))
    best_wall = best_cpu = float("inf")
    for _ in range(3):
        n, t0, c0 = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - t0 < args.seconds:
            mu, logvar = enc(params, frames)
            np.asarray(mu), np.asarray(logvar)  # to host, as `wm-jax encode` does
            n += 1
        best_wall = min(best_wall, (time.perf_counter() - t0) / n)
        best_cpu = min(best_cpu, (time.process_time() - c0) / n)
    # encoder forward: 4 convs + the two heads (the decoder does not run)
    flops = V.flops_per_image(args.z_dim, training=False) - _decoder_flops(args.z_dim)
    from wm_jax.bench.vae import cpu_peak_flops

    peak, peak_cpu = peak_flops(), cpu_peak_flops()
    cores = os.cpu_count() or 1
    fps, fps_cpu = args.batch / best_wall, args.batch / (best_cpu / cores)
    return {"batch_size": args.batch, "z_dim": args.z_dim, "plan": list(V.INFER[:4]), "frames_per_s": fps,
            "frames_per_cpu_s_x_cores": fps_cpu, "flops_per_frame": flops, "peak_flops": peak,
            "fraction_of_peak": fps * flops / peak, "fraction_of_peak_cpu_normalised": fps_cpu * flops / peak_cpu,
            "peak_flops_cpu_normalised": peak_cpu, "machine_limit_frames_per_s": peak / flops,
            "machine_limit_frames_per_s_cpu_normalised": peak_cpu / flops}


def _decoder_flops(z_dim: int) -> float:
    from wm_jax.models.vae import DEC_LAYERS

    macs, c, n = z_dim * 1024, 1024, 1
    for f, k in DEC_LAYERS:
        macs += n * n * k * k * c * f
        c, n = f, 2 * (n - 1) + k
    return 2.0 * macs
