"""The paper's TakeCover τ table: C trained only in the dream at τ ∈ {0.10, 0.50, 1.00, 1.15, 1.30} (one batched
program), each scored over 100 real episodes, plus the random-policy row (paper: 210 ± 108; best 1092 ± 556).
A config may add τ values to es.taus (all train in the same program); their rows are marked as beyond the paper.

    python experiments/takecover_tau_table.py --scale {cpu,paper,gpu} [key=value ...]
    python experiments/takecover_tau_table.py --scale cpu --variant noiter iterate.rounds=0 name=takecover_cpu_noiter
"""

import argparse

from wm_jax.pipeline import Experiment, tau_table

# gpu: the paper's sizes with the dream batch widened for one accelerator (configs/takecover_gpu.yaml says how
# wide, and how to estimate the wall time from `wm-jax bench dream --scaling` on that device)
CONFIGS = {"cpu": "configs/takecover_cpu.yaml", "paper": "configs/takecover.yaml", "gpu": "configs/takecover_gpu.yaml"}
PAPER_TAUS = (0.10, 0.50, 1.00, 1.15, 1.30)

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", choices=sorted(CONFIGS), default="cpu")
    ap.add_argument("--variant", default="", help="suffix of the results folder (results/takecover_tau_table_"
                    "<scale>_<variant>), for an ablation run with overrides and its own run name")
    ap.add_argument("--record", action="store_true",
                    help="write the table into results/<name>/ (the committed results; default: <run>/results)")
    ap.add_argument("overrides", nargs="*", metavar="key=value")
    args = ap.parse_args()
    name = f"takecover_tau_table_{args.scale}" + (f"_{args.variant}" if args.variant else "")
    exp = Experiment(name, CONFIGS[args.scale], args.overrides, scale=args.scale, record=args.record)
    # es.taus: the paper's five (the default), plus any hotter ones a config adds (rows marked beyond the paper)
    tau_table(exp, exp.cfg.es.taus, paper=PAPER_TAUS)
