"""``wm-jax bench vae``: V's training-step throughput (Adam, batch 100, fp32), compile excluded.

The machine may be shared, so every figure comes from blocks that alternate in one run: a block of JAX steps
(>= ``--seconds``), a block of fp32 matmuls (the measured peak), and with ``--compare-torch`` a block of the same
step in PyTorch (``benchmarks/torch_vae.py --serve``, a separate process, so that neither framework's idle
threads spin while the other is timed), ``--rounds`` times, with a short pause between blocks. Each rate is the
best block (the least disturbed); ``ratio_vs_torch`` divides the two best rates and ``ratio_vs_torch_median`` is
the median of the per-round ratios. Also reported: FLOPs per image (analytic, forward + backward), the fraction
of the measured peak, and images per CPU-second x cores (what the process would give with all cores its own).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

TORCH_SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "torch_vae.py"
Block = Callable[[], tuple[float, float, float]]  # () -> (items done, wall s, CPU s of the process doing them)


def add_arguments(parser) -> None:
    parser.add_argument("--batch", type=int, default=100, help="images per training step (paper: 100)")
    parser.add_argument("--z-dim", type=int, default=32, help="latent size Z (32 CarRacing, 64 Doom)")
    parser.add_argument("--plan", default="auto", help="a plan name (auto, cpu, xla, v1) or 8 comma-separated "
                                                      "entries (wm_jax.models.vae.resolve_plan)")
    parser.add_argument("--compare-reference", action="store_true",
                        help="also time the plain lax/flax ConvTranspose model (plan 'xla')")
    parser.add_argument("--compare-torch", action="store_true",
                        help="also time the same step in PyTorch (needs the bench extra: torch)")
    parser.add_argument("--seconds", type=float, default=2.0, help="timed seconds per block")
    parser.add_argument("--rounds", type=int, default=5, help="times every block runs, alternating")


def matmul_block(seconds: float, n: int = 2048) -> Block:
    """A block of fp32 [n,n] @ [n,n] jitted matmuls for >= `seconds`: (FLOPs, wall, CPU)."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    f = jax.jit(lambda x, y: x @ y)
    f(a, b).block_until_ready()

    def run() -> tuple[float, float, float]:
        k, t0, c0 = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - t0 < seconds:
            f(a, b).block_until_ready()
            k += 1
        return 2.0 * n**3 * k, time.perf_counter() - t0, time.process_time() - c0

    return run


def alternate(blocks: dict[str, Block], rounds: int, pause: float = 0.3) -> dict[str, list[tuple[float, float]]]:
    """Run every block once per round, in order, `rounds` times -> {name: [(items/wall s, items/CPU s), ...]}."""
    out: dict[str, list[tuple[float, float]]] = {name: [] for name in blocks}
    for _ in range(rounds):
        for name, block in blocks.items():
            items, wall, cpu = block()
            out[name].append((items / wall, items / max(cpu, 1e-9)))
            time.sleep(pause)
    return out


class TorchWorker:
    """``benchmarks/torch_vae.py --serve`` in a child process; ``block()`` times >= `seconds` of its steps."""

    def __init__(self, batch: int, seconds: float, script: Path = TORCH_SCRIPT):
        if not script.is_file():
            raise FileNotFoundError(f"--compare-torch needs {script} (run from a wm-jax checkout)")
        self.batch = batch
        self.proc = subprocess.Popen([sys.executable, str(script), "--serve", "--batch", str(batch)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.info = self._read()
        wall, _ = self._run(1)
        self.steps = max(1, round(seconds / wall))

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("benchmarks/torch_vae.py --serve ended early: is torch installed? "
                               "(pip install -e '.[bench]')")
        return json.loads(line)

    def _run(self, steps: int) -> tuple[float, float]:
        self.proc.stdin.write(f"{steps}\n")
        self.proc.stdin.flush()
        r = self._read()
        return r["wall_s"], r["cpu_s"]

    def block(self) -> tuple[float, float, float]:
        wall, cpu = self._run(self.steps)
        return float(self.batch * self.steps), wall, cpu

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=60)


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


def summarise(rates: dict[str, list[tuple[float, float]]], cores: int) -> dict[str, dict]:
    """Per block: best and median items/s (wall) and best items per CPU-second x cores."""
    return {name: {"best": max(w for w, _ in r), "median": statistics.median(w for w, _ in r),
                   "all": [round(w, 2) for w, _ in r], "best_cpu_x_cores": max(c for _, c in r) * cores}
            for name, r in rates.items()}


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
    worker = TorchWorker(args.batch, args.seconds) if args.compare_torch else None
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
        per_round = [j / t for (j, _), (t, _) in zip(rates["jax"], rates["torch"])]
        out.update({"torch": worker.info, "torch_images_per_s": s["torch"]["best"],
                    "torch_images_per_s_median": s["torch"]["median"],
                    "torch_images_per_cpu_s_x_threads": s["torch"]["best_cpu_x_cores"] / cores * worker.info["threads"],
                    "ratio_vs_torch": ips / s["torch"]["best"], "ratio_vs_torch_median": statistics.median(per_round),
                    "ratio_vs_torch_per_round": [round(r, 3) for r in per_round]})
    return out
