"""Checkpoints: an orbax CheckpointManager per stage, with the resolved config.json beside it.

Layout of a stage folder (e.g. ``checkpoints/<run>/vae``)::

    config.json        the resolved Config of the run that wrote it
    <step>/            orbax step folders (written atomically by orbax: tmp dir + rename)
    DONE               present once the stage finished (experiments skip finished stages)

A stage resumes by restoring ``latest_step()`` into a template pytree of the same structure.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from wm_jax.config import Config, load_saved_config, save_config


class Checkpointer:
    """Save / restore pytrees (params, optimiser and ES states, PRNG keys as uint32 data) for one stage."""

    def __init__(self, directory: str | os.PathLike, config: Config | None = None, max_to_keep: int = 3):
        self.directory = Path(directory).absolute()
        self.directory.mkdir(parents=True, exist_ok=True)
        if config is not None:
            save_config(config, self.directory / "config.json")
        self._mgr = ocp.CheckpointManager(
            self.directory,
            options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True),
        )

    def latest_step(self) -> int | None:
        return self._mgr.latest_step()

    def all_steps(self) -> list[int]:
        """Every step kept on disk, ascending."""
        return sorted(int(s) for s in self._mgr.all_steps())

    def save(self, step: int, tree: Any, metadata: dict | None = None) -> None:
        """Save `tree` at `step`; blocks until the write is durable (so a kill right after loses nothing)."""
        self._mgr.save(step, args=ocp.args.StandardSave(tree), force=True)
        self._mgr.wait_until_finished()
        if metadata is not None:
            write_json_atomic(self.directory / f"meta_{step}.json", metadata)

    def restore(self, template: Any, step: int | None = None) -> Any:
        """Restore into the structure/dtypes of `template` (latest step if `step` is None)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template)
        return self._mgr.restore(step, args=ocp.args.StandardRestore(abstract))

    def restore_raw(self, step: int | None = None) -> Any:
        """Restore without a template (nested dicts of numpy/jax arrays)."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {self.directory}")
        return self._mgr.restore(step, args=ocp.args.StandardRestore())

    def mark_done(self, summary: dict | None = None) -> None:
        write_json_atomic(self.directory / "DONE", summary or {})

    @property
    def done(self) -> bool:
        return (self.directory / "DONE").exists()

    def close(self) -> None:
        self._mgr.wait_until_finished()
        self._mgr.close()

    def __enter__(self) -> "Checkpointer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def stage_config(directory: str | os.PathLike) -> Config:
    """The config saved beside a stage's checkpoints."""
    return load_saved_config(Path(directory) / "config.json")


def write_json_atomic(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON to `path` via a temp file in the same folder + os.replace."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, default=_json_default) + "\n")
    os.replace(tmp, path)


def _json_default(o: Any) -> Any:
    if isinstance(o, (np.generic, jax.Array)):
        return np.asarray(o).tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


# Keys a stage may change when it resumes a folder whose config.json says otherwise (docs in check_resume_config).
RESUME_EXTENDS = (  # how long to train, how much to collect: a resumed run continues to the new goal
    "data.episodes", "data.long_hold_episodes", "data.sweep_episodes", "data.follow_episodes",
    "vae.epochs", "vae.max_steps", "mdnrnn.steps", "es.generations", "iterate.rounds", "iterate.mdnrnn_steps",
)
RESUME_BOOKKEEPING = (  # where the run lives, how often it reports and saves, how many host workers: same numbers
    "name", "root", "data.workers", "vae.log_every", "vae.checkpoint_every", "vae.encode_batch_size",
    "mdnrnn.log_every", "mdnrnn.checkpoint_every", "mdnrnn.scan_unroll", "es.checkpoint_every",
    "es.generations_per_call", "eval.",  # "eval.": every key of the section (no training stage reads it)
)


def resume_allowed(key: str) -> bool:
    """Whether dotted `key` may differ from the saved config when a stage resumes (RESUME_EXTENDS and
    RESUME_BOOKKEEPING; an entry ending in '.' allows its whole section)."""
    return any(key == k or (k.endswith(".") and key.startswith(k)) for k in (*RESUME_EXTENDS, *RESUME_BOOKKEEPING))


def check_resume_config(folder: str | os.PathLike, cfg: Config, allow: bool = False,
                        sections: tuple[str, ...] | None = None) -> list[str]:
    """Refuse to resume a stage folder whose saved config.json differs from `cfg` in a key that changes results.

    Allowed without asking: keys that only extend the run (RESUME_EXTENDS: more steps, generations, episodes or
    iterate rounds; the pipeline's iterate rounds raise mdnrnn.steps) and bookkeeping that leaves the numbers
    alone (RESUME_BOOKKEEPING: name, root, log/checkpoint cadence, worker counts, the eval section). Anything
    else (a learning rate, a model size, a seed, es.population, ...) raises ConfigError naming the keys and both
    values, unless `allow` (``--allow-config-change``). No config.json (a fresh folder): nothing to check.
    `sections`: only keys starting with one of these prefixes count (e.g. ``("seed", "env.", "data.", "vae.")``
    for V, which no es.* key changes); None: every key.
    Call it before ``Checkpointer(folder, cfg)``, which writes `cfg` over the saved config.json.
    Returns every key that differs (allowed ones included), for the caller to report.
    """
    from wm_jax.config import ConfigError
    from wm_jax.config_show import config_diff, flatten

    path = Path(folder) / "config.json"
    if not path.exists():
        return []
    saved = load_saved_config(path)
    diff = [k for k in config_diff(saved, cfg) if sections is None or k.startswith(sections)]
    refused = [k for k in diff if not resume_allowed(k)]
    if refused and not allow:
        old, new = flatten(saved), flatten(cfg)
        changes = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in refused)
        raise ConfigError(f"{Path(folder)} was trained with another config ({changes}); resuming it would mix the two. "
                          "Rerun with the saved values, use another run name, or allow the change "
                          "(--allow-config-change)")
    return diff
