"""The interaction budget (``data.interaction_budget``; Atari 100k: 100,000 real agent steps per run).

Every real step a run's data holds counts: the random collection and each iterate round's agent episodes (their
lengths in the manifest; an episode of T actions is T steps). Evaluation episodes do not count, as in the
benchmark. Two checks keep a run inside the budget, both before any step is played:

- when the config loads (``wm_jax.config_checks.worst_case_steps``): every planned collection at its worst case,
  each episode played to its cap (``data.episode_steps``);
- before each collection starts (:func:`check_budget`): the steps already on disk plus that collection's worst
  case. A run resumed with a larger plan is refused here even if its config passed.

After each collection ``<run>/data/budget.json`` records the steps spent, by collection policy.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path
from typing import Iterable

from wm_jax.config_checks import ConfigError


class BudgetError(ConfigError):
    """A collection could exceed ``data.interaction_budget``."""


def steps_used(records: Iterable[dict]) -> int:
    """Real agent steps of the episodes whose manifest `records` are given."""
    return int(sum(r["length"] for r in records))


def check_budget(cfg, records: Iterable[dict], episodes: int, what: str) -> None:
    """Refuse to play `episodes` more episodes (each up to ``cfg.collect_steps`` steps) when the steps already in
    the data (`records`) plus their worst case exceed ``data.interaction_budget`` (0: no limit)."""
    budget = cfg.data.interaction_budget
    if not budget:
        return
    used, worst = steps_used(records), episodes * cfg.collect_steps
    if used + worst > budget:
        raise BudgetError(f"{what}: {episodes} episodes of up to {cfg.collect_steps:,} steps (data.episode_steps) "
                          f"may take {worst:,} real steps; {cfg.data_dir} already holds {used:,}, and "
                          f"data.interaction_budget is {budget:,}. Nothing was played.")


def ledger(cfg, records: Iterable[dict]) -> dict:
    """{budget, used, left, by_policy}: the real steps the data holds."""
    records = list(records)
    by = Counter()
    for r in records:
        by[r.get("policy", "?")] += int(r["length"])
    used = steps_used(records)
    budget = cfg.data.interaction_budget
    return {"budget": budget, "used": used, "left": (budget - used) if budget else None, "by_policy": dict(by),
            "episodes": len(records)}


def write_ledger(cfg, records: Iterable[dict]) -> dict:
    """Write :func:`ledger` to ``<data>/budget.json`` (atomically) and return it. Not through
    ``checkpoint.write_json_atomic``: the collection's import path stays free of JAX (tests/test_envs.py)."""
    out = ledger(cfg, records)
    path = Path(cfg.data_dir) / "budget.json"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(out, indent=1) + "\n")
    os.replace(tmp, path)
    return out
