"""The quick TakeCover experiment behind `make run`: collect → V → M → C in the dream with a small τ sweep →
real-environment scores next to the random policy. Minutes on a 2-core CPU; rerun to resume.

    python experiments/quick.py [key=value ...]
"""

import sys

from wm_jax.pipeline import Experiment, tau_table

TAUS = (1.0, 1.15, 1.3)

if __name__ == "__main__":
    exp = Experiment("quick", "configs/quick.yaml", overrides=sys.argv[1:])
    tau_table(exp, TAUS)
