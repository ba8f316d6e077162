"""The paper's CarRacing table: z only / z with a hidden layer / full world model / untrained M (C trained by CMA-ES in the real env), 100 tracks each.

    python experiments/carracing_table.py --scale {cpu,paper,gpu} [--rows full,z,...] [key=value ...]

Rows train one after another (each resumes or is skipped when done); `--rows` picks some, in that order.
"""

import argparse

from wm_jax.pipeline import Experiment
from wm_jax.pipeline_carracing import CARRACING_ROWS, PAPER_ROWS, carracing_table

# gpu: the paper's sizes on one accelerator host, environments laid out over its cores (configs/carracing_gpu.yaml)
CONFIGS = {"cpu": "configs/carracing_cpu.yaml", "paper": "configs/carracing.yaml", "gpu": "configs/carracing_gpu.yaml"}

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", choices=sorted(CONFIGS), default="cpu")
    ap.add_argument("--rows", default="", help=f"comma-separated subset of: {','.join(CARRACING_ROWS)} (default: "
                    f"all at cpu scale; {','.join(PAPER_ROWS)} at paper scale)")
    ap.add_argument("--record", action="store_true",
                    help="write the table into results/<name>/ (the committed results; default: <run>/results)")
    ap.add_argument("overrides", nargs="*", metavar="key=value")
    args = ap.parse_args()
    args.rows = args.rows or ",".join(CARRACING_ROWS if args.scale == "cpu" else PAPER_ROWS)
    carracing_table(Experiment(f"carracing_table_{args.scale}", CONFIGS[args.scale], args.overrides,
                               record=args.record),
                    tuple(r for r in args.rows.split(",") if r))
