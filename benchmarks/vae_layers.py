"""Per-layer profile of V's eight convolutions: each layer's forward + input gradient + kernel gradient (or the
forward alone, ``--forward``) timed in isolation under one or more plans, optionally beside PyTorch's layer.

    taskset -c 0 python benchmarks/vae_layers.py --plans v1,cpu --torch [--batch 100] [--forward]

Round-robin over all candidates, ``--rounds`` times; each figure is the least process CPU time of one call (a
shared machine slows calls down, never speeds them up), so pin the process to one core (``taskset -c 0``) to
read per-core GFLOP/s. A plan's layers compile with ``compiler_options()`` when the plan is a CPU plan
(``cpu``, ``cpu_infer``) and without for the others, as the training step compiles them. torch (optional, the
``bench`` extra) runs channels-last ``nn.Conv2d`` / ``nn.ConvTranspose2d`` + ReLU.
Prints a markdown table and writes ``--out`` (JSON). Used for docs/v_performance.md.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import jax
import numpy as np

from wm_jax.models import conv as C
from wm_jax.models import vae as V

# (name, input size, C_in, C_out, kernel, transposed)
LAYERS = [("enc0", 64, 3, 32, 4, False), ("enc1", 31, 32, 64, 4, False), ("enc2", 14, 64, 128, 4, False),
          ("enc3", 6, 128, 256, 4, False), ("dec0", 1, 1024, 128, 5, True), ("dec1", 5, 128, 64, 5, True),
          ("dec2", 13, 64, 32, 6, True), ("dec3", 30, 32, 3, 6, True)]


def layer_flops(n: int, c: int, o: int, k: int, transposed: bool, first: bool, forward: bool, batch: int) -> float:
    n_out = 2 * (n - 1) + k if transposed else (n - k) // 2 + 1
    macs = (n * n if transposed else n_out * n_out) * k * k * c * o
    return 2.0 * macs * batch * (1 if forward else (2 if first else 3))


def jax_candidate(entry: str, n, c, o, k, transposed, first, forward, batch, options):
    rng = np.random.default_rng(0)
    n_out = 2 * (n - 1) + k if transposed else (n - k) // 2 + 1
    x = jax.numpy.asarray(rng.standard_normal((batch, n, n, c)).astype(np.float32))
    w = jax.numpy.asarray(rng.standard_normal((k, k, c, o)).astype(np.float32) * 0.05)
    g = jax.numpy.asarray(rng.standard_normal((batch, n_out, n_out, o)).astype(np.float32))

    def f(x, w):
        return jax.nn.relu(C.apply_layer(x, w, entry, transposed))

    if forward:
        fn, args = jax.jit(f, compiler_options=options), (x, w)
    else:
        def fb(x, w, g):
            _, vjp = jax.vjp(f, x, w)
            gx, gw = vjp(g)
            return (gw,) if first else (gx, gw)  # the frames need no gradient
        fn, args = jax.jit(fb, compiler_options=options), (x, w, g)
    jax.block_until_ready(fn(*args))
    return lambda: jax.block_until_ready(fn(*args))


def torch_candidate(n, c, o, k, transposed, first, forward, batch):
    import torch

    torch.set_num_threads(len(os.sched_getaffinity(0)))
    n_out = 2 * (n - 1) + k if transposed else (n - k) // 2 + 1
    cl = torch.channels_last
    x = torch.randn(batch, c, n, n).contiguous(memory_format=cl).requires_grad_(not first)
    m = (torch.nn.ConvTranspose2d(c, o, k, 2) if transposed else torch.nn.Conv2d(c, o, k, 2)).to(memory_format=cl)
    g = torch.randn(batch, o, n_out, n_out).contiguous(memory_format=cl)

    def run():
        if forward:
            with torch.no_grad():
                torch.relu(m(x))
        else:
            y = torch.relu(m(x))
            m.zero_grad(set_to_none=True)
            y.backward(g)

    run()
    return run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--plans", default="v1,cpu", help="comma-separated plan names (wm_jax.models.conv.PLANS)")
    ap.add_argument("--torch", action="store_true")
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--forward", action="store_true", help="forward only (encode/decode) instead of fwd + bwd")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out", default="checkpoints/bench/vae_layers.json")
    a = ap.parse_args()
    names = a.plans.split(",")
    cands = []  # (layer, column, flops, fn)
    for i, (layer, n, c, o, k, tr) in enumerate(LAYERS):
        fl = layer_flops(n, c, o, k, tr, i == 0, a.forward, a.batch)
        for name in names:
            plan = V.resolve_plan(name)
            opts = V.compiler_options() if name.startswith("cpu") else None
            cands.append((layer, name, plan[i], fl, jax_candidate(plan[i], n, c, o, k, tr, i == 0, a.forward,
                                                                  a.batch, opts)))
        if a.torch:
            cands.append((layer, "torch", "", fl, torch_candidate(n, c, o, k, tr, i == 0, a.forward, a.batch)))
    times: dict[tuple[str, str], list[float]] = {(c[0], c[1]): [] for c in cands}
    for _ in range(a.rounds):
        for layer, col, _, _, fn in cands:
            t0 = time.process_time()
            fn()
            times[(layer, col)].append(time.process_time() - t0)
    cols = names + (["torch"] if a.torch else [])
    rows, total = [], dict.fromkeys(cols, 0.0)
    for layer, col, entry, fl, _ in cands:
        t = min(times[(layer, col)])
        total[col] += t
        rows.append({"layer": layer, "column": col, "entry": entry, "ms": t * 1e3, "gflops": fl / t / 1e9})
    print(f"batch {a.batch}, {'forward' if a.forward else 'forward + backward'}, least CPU time of {a.rounds}, "
          f"{len(os.sched_getaffinity(0))} core(s)")
    print("| layer | " + " | ".join(f"{c} ms | {c} GFLOP/s" for c in cols) + " |")
    print("|---" * (1 + 2 * len(cols)) + "|")
    for layer, *_ in LAYERS:
        cells = [r for r in rows if r["layer"] == layer]
        print(f"| {layer} | " + " | ".join(f"{r['ms']:.1f} | {r['gflops']:.0f}" for r in cells) + " |")
    print("| sum | " + " | ".join(f"{total[c] * 1e3:.1f} | " for c in cols) + " |")
    os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
    with open(a.out, "w") as f:
        json.dump({"batch": a.batch, "forward": a.forward, "rounds": a.rounds, "rows": rows,
                   "cores": len(os.sched_getaffinity(0)), "jax": jax.__version__}, f, indent=1)


if __name__ == "__main__":
    main()
