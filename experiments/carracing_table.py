"""The paper's CarRacing table: z only / z with a hidden layer / full world model / untrained M (C trained by CMA-ES in the real env), 100 tracks each.

    python experiments/carracing_table.py --scale {cpu,paper} [key=value ...]
"""

import argparse

from wm_jax.pipeline import Experiment, carracing_table

CONFIGS = {"cpu": "configs/carracing_cpu.yaml", "paper": "configs/carracing.yaml"}

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", choices=sorted(CONFIGS), default="cpu")
    ap.add_argument("overrides", nargs="*", metavar="key=value")
    args = ap.parse_args()
    carracing_table(Experiment(f"carracing_table_{args.scale}", CONFIGS[args.scale], args.overrides))
