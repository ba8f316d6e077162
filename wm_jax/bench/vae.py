"""``wm-jax bench vae``: V's training-step throughput (Adam, batch 100, fp32), compile excluded.

Every figure comes from blocks that alternate in one run (``wm_jax.bench.compare``): a block of JAX steps
(>= ``--seconds``), a block of fp32 matmuls (the measured peak), and with ``--compare-torch`` a block of the same
step in PyTorch (``benchmarks/torch_vae.py --serve``), ``--rounds`` times. Each rate is the best block;
``ratio_vs_torch`` divides the two best rates and ``ratio_vs_torch_median`` is the median of the per-round ratios.
Also reported: FLOPs per image (analytic, forward + backward), the fraction of the measured peak, and images per
CPU-second x cores (what the process would give with all cores its own).
"""

from __future__ import annotations

import os
import time

from wm_jax.bench.compare import Block, TorchWorker, alternate, matmul_block, summarise, torch_figures


def add_arguments(parser) -> None:
    parser.add_argument("--batch", type=int, default=100, help="images per training step (paper: 100)")
    parser.add_argument("--z-dim", type=int, default=32, help="latent size Z (32 CarRacing, 64 Doom)")
    parser.add_argument("--plan", default="auto", help="a plan name (auto, cpu, xla, v1) or 8 comma-separated "
                                                      "entries (wm_jax.models.conv.resolve_plan)")
    parser.add_argument("--compare-reference", action="store_true",
                        help="also time the plain lax/flax ConvTranspose model (plan 'xla')")
    parser.add_argument("--compare-torch", action="store_true",
                        help="also time the same step in PyTorch (needs the bench extra: torch)")
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per block")
    parser.add_argument("--rounds", type=int, default=5, help="times every block runs, alternating")


def jax_block(v, mesh, plan: tuple[str, ...], params, frames, seconds: float) -> tuple[Block, float]:
    """(block of >= `seconds` of jitted train steps, compile seconds); the step is warmed up first."""
    import jax

    from wm_jax.parallel import replicate
    from wm_jax.train.vae import make_optimizer, make_train_step

    step = make_train_step(v, mesh, plan)
    key_data = jax.random.key_data(jax.random.key(1))
    state = [replicate(params, mesh), replicate(make_optimizer(v).init(params), mesh)]
    t0 = time.perf_counter()
    state[0], state[1], m = step(state[0], state[1], frames, key_data, 0)
    jax.block_until_ready(m)
    compile_s = time.perf_counter() - t0

    def run() -> tuple[float, float, float]:
        n, t0, c0 = 0, time.perf_counter(), time.process_time()
        while True:
            state[0], state[1], m = step(state[0], state[1], frames, key_data, n)
            n += 1
            if n % 2 == 0:
                jax.block_until_ready(m)
                if time.perf_counter() - t0 >= seconds:
                    break
        jax.block_until_ready(state)
        return float(n * frames.shape[0]), time.perf_counter() - t0, time.process_time() - c0

    run()  # warm-up block
    return run, compile_s


def measure(args) -> dict:
    import jax
    import numpy as np

    from wm_jax.config import VAEConfig
    from wm_jax.models import vae as V
    from wm_jax.parallel import make_mesh

    v = VAEConfig(z_dim=args.z_dim, batch_size=args.batch)
    mesh = make_mesh()
    frames = np.random.default_rng(0).integers(0, 256, (args.batch, 64, 64, 3), dtype=np.uint8)
    params = jax.device_get(V.init_params(jax.random.key(0), args.z_dim))
    flops = V.flops_per_image(args.z_dim)
    cores = os.cpu_count() or 1
    plans = {"jax": V.resolve_plan(args.plan)}
    if args.compare_reference:
        plans["reference"] = V.REFERENCE
    blocks: dict[str, Block] = {}
    compile_s = {}
    for name, plan in plans.items():
        blocks[name], compile_s[name] = jax_block(v, mesh, plan, params, frames, args.seconds)
    blocks["peak"] = matmul_block(args.seconds)
    worker = TorchWorker("torch_vae.py", ["--batch", args.batch], args.seconds) if args.compare_torch else None
    try:
        if worker is not None:
            blocks["torch"] = worker.block
        rates = alternate(blocks, args.rounds)
    finally:
        if worker is not None:
            worker.close()
    s = summarise(rates, cores)
    peak = s["peak"]["best"]
    ips = s["jax"]["best"]
    out: dict = {"batch_size": args.batch, "z_dim": args.z_dim, "dtype": "float32", "params": V.count_params(params),
                 "plan": list(plans["jax"]), "compiler_options": V.compiler_options(), "flops_per_image": flops,
                 "images_per_s": ips, "images_per_s_median": s["jax"]["median"],
                 "images_per_cpu_s_x_cores": s["jax"]["best_cpu_x_cores"], "peak_flops": peak,
                 "fraction_of_peak": ips * flops / peak, "machine_limit_images_per_s": peak / flops,
                 "compile_s": compile_s["jax"], "rounds": args.rounds, "seconds_per_block": args.seconds,
                 "blocks": s, "method": "alternating blocks in one run; rates = best block (see module doc)"}
    if args.compare_reference:
        out.update({"reference_plan": list(V.REFERENCE), "reference_images_per_s": s["reference"]["best"],
                    "reference_compile_s": compile_s["reference"]})
    if worker is not None:
        out.update(torch_figures(rates, s, worker.info, "images", cores))
    return out
