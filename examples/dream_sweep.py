"""Roll a trained controller out in M's dream and sweep the temperature τ, from Python.

    python examples/dream_sweep.py RUN_DIR [--trials 256] [--taus 0.1,0.5,1,1.15,1.3]

One compiled program plays all trials of one τ; ``Run.sweep_tau`` vmaps it over every τ at once (τ is data,
not a constant baked into the program).
"""

import sys

import jax
import jax.numpy as jnp

import wm_jax


def main(argv: list[str]) -> None:
    run = wm_jax.load_run(argv[0])
    trials = int(argv[argv.index("--trials") + 1]) if "--trials" in argv else 256
    taus = jnp.array([float(t) for t in (argv[argv.index("--taus") + 1] if "--taus" in argv
                                         else "0.1,0.5,1,1.15,1.3").split(",")])
    if run.controller is None:
        raise SystemExit(f"{argv[0]}: no trained controller; run `wm-jax train-controller` first")
    out = run.rollout(run.controller, jax.random.key(0), trials=trials)  # at the run's es.temperature
    print(f"τ {run.config.es.temperature:g}: dream return {float(out.returns.mean()):.1f} "
          f"(episode lengths {int(out.lengths.min())}..{int(out.lengths.max())})")
    returns = run.sweep_tau(run.controller, taus, jax.random.key(1), trials=trials)  # [n_tau, trials]
    for tau, r in zip(taus.tolist(), returns):
        print(f"τ {tau:<5g} mean {float(r.mean()):8.1f}  std {float(r.std()):7.1f}")


if __name__ == "__main__":
    main(sys.argv[1:])
