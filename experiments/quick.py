"""The quick TakeCover experiment behind `make run`: collect → V → M → C in the dream with a small τ sweep →
real-environment scores next to the random policy. Minutes on a 2-core CPU; rerun to resume.

    python experiments/quick.py [--record] [key=value ...]

The table, plots and GIFs land in ``checkpoints/<name>/results/``; ``--record`` writes them into ``results/<name>/``
(the committed results the README's tables are generated from) instead.

Two τ (1.00 and the paper's best, 1.15) and no dream-check stage keep it within 15 minutes on 2 cores; the
diagnostic stays one command away: ``wm-jax dream-check --config configs/quick.yaml --taus 1,1.15``.

A ``name=NAME`` override names the run folder and the results folder (default ``quick``), e.g. another seed:
``python experiments/quick.py name=quick_seed1 seed=1 data.seed=100000 es.seed=1``.
"""

import sys

from wm_jax.pipeline import Experiment, tau_table

TAUS = (1.0, 1.15)  # each τ's ES is independent of the others in the batch (tests/test_es.py)

if __name__ == "__main__":
    record = "--record" in sys.argv[1:]
    overrides = [a for a in sys.argv[1:] if a != "--record"]
    name = next((o.split("=", 1)[1] for o in overrides if o.startswith("name=")), "quick")
    tau_table(Experiment(name, "configs/quick.yaml", overrides=overrides, scale="quick", record=record), TAUS,
              dream_check=False)
