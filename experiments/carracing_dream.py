"""CarRacing with C trained only in M's dream (reward and done heads), scored over 100 real tracks (best published: 528 ± 221).

    python experiments/carracing_dream.py --scale {cpu,paper} [key=value ...]
"""

import argparse

from wm_jax.pipeline import Experiment, carracing_dream

CONFIGS = {"cpu": "configs/carracing_cpu.yaml", "paper": "configs/carracing.yaml"}

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", choices=sorted(CONFIGS), default="cpu")
    ap.add_argument("overrides", nargs="*", metavar="key=value")
    args = ap.parse_args()
    carracing_dream(Experiment(f"carracing_dream_{args.scale}", CONFIGS[args.scale], args.overrides))
