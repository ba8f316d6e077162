"""Dream throughput of a run's M from Python: dream steps per second for a population of controllers.

    python examples/bench_dream.py RUN_DIR [--population 64] [--trials 16] [--repeats 3]

Compile time excluded (one warm-up call), results blocked on; the device and sizes are printed. For the full
benchmark (fraction of peak, JSON, scaling curves) use ``wm-jax bench dream``.
"""

import sys
import time

import jax
import numpy as np

import wm_jax


def main(argv: list[str]) -> None:
    run = wm_jax.load_run(argv[0])
    opt = {k: int(argv[argv.index(f"--{k}") + 1]) if f"--{k}" in argv else d
           for k, d in (("population", 64), ("trials", 16), ("repeats", 3))}
    if run.controller is None:
        raise SystemExit(f"{argv[0]}: no trained controller; run `wm-jax train-controller` first")
    # a population around the run's controller (as CMA-ES asks for one)
    pop = jax.tree.map(lambda x: x + 0.1 * jax.random.normal(jax.random.key(2), (opt["population"], *np.shape(x))),
                       run.controller)
    run.rollout(pop, jax.random.key(0), trials=opt["trials"]).returns.block_until_ready()  # compile
    best = float("inf")
    for i in range(opt["repeats"]):
        t = time.perf_counter()
        out = run.rollout(pop, jax.random.key(i + 1), trials=opt["trials"])
        out.returns.block_until_ready()
        best = min(best, time.perf_counter() - t)
    steps = int(out.slot_steps)
    print(f"{jax.devices()[0].device_kind} ({jax.default_backend()}): population {opt['population']} x "
          f"{opt['trials']} trials, {steps} dream steps in {best * 1e3:.1f} ms = {steps / best:,.0f} steps/s")


if __name__ == "__main__":
    main(sys.argv[1:])
