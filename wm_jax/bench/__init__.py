"""``wm-jax bench <stage>``: throughput benchmarks that print one JSON object and write it to a file.

Each stage module (``wm_jax.bench.<stage>``) declares its options with ``add_arguments(parser)`` (the CLI passes
an argparse parser), measures with ``measure(opts) -> dict``, and may expose ``figure(result, path)`` (a PNG beside
the JSON, e.g. a ``--scaling`` curve). Compile time is excluded, results are blocked on, and the conditions
(device, sizes, versions, git commit) are included. The JSON goes to ``--out`` (default
``checkpoints/bench/<name>.json``, outside version control); ``--record`` writes the tracked
``benchmarks/<name>.json``, from which the README's tables are generated (``python -m wm_jax.report``). ``<name>``
is the record's stage (``dream_scaling`` for ``bench dream --scaling``) and its env, if any.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

STAGES = ("collect", "vae", "encode", "mdnrnn", "dream", "evaluate", "peak", "scaling")
DEFAULT_DIR = Path("checkpoints") / "bench"  # where a run that is not recorded writes (git-ignored)
RECORD_DIR = Path("benchmarks")  # the tracked records, rewritten only with --record


def add_stage_options(stage: str, parser: Any) -> None:
    """Let benchmark `stage` declare its options on `parser` (anything with argparse's ``add_argument``)."""
    importlib.import_module(f"wm_jax.bench.{stage}").add_arguments(parser)


def output_path(stage: str, env: str | None, out: str | os.PathLike | None, record: bool) -> Path:
    """Where a result goes: `out` if given, else benchmarks/ when recording, else checkpoints/bench/."""
    if out and record:
        raise ValueError("--out and --record exclude each other")
    if out:
        return Path(out)
    name = f"{stage}_{env}.json" if env else f"{stage}.json"
    return (RECORD_DIR if record else DEFAULT_DIR) / name


def write_json(result: dict, path: Path) -> None:
    """Atomic write (temp file in the same folder, then rename) of one record."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    tmp.replace(path)


def run_stage(stage: str, opts: Any, out: str | os.PathLike | None = None, record: bool = False) -> Path:
    """Measure `stage` with options `opts`; print the JSON, write it atomically (and the stage's figure beside
    it, if it draws one); return the JSON's path."""
    from wm_jax.sysinfo import conditions, provenance

    if out and record:
        raise ValueError("--out and --record exclude each other")
    module = importlib.import_module(f"wm_jax.bench.{stage}")
    result = {"stage": stage, **module.measure(opts), **conditions(), "provenance": provenance(),
              "options": _options(opts)}
    print(json.dumps(result, indent=2, sort_keys=True))
    path = output_path(result["stage"], result.get("env"), out, record)
    write_json(result, path)
    print(f"wrote {path}", file=sys.stderr)
    if hasattr(module, "figure"):
        png = module.figure(result, path.with_suffix(".png"))
        if png:
            print(f"wrote {png}", file=sys.stderr)
    return path


def _options(opts: Any) -> dict:
    """The benchmark's resolved options (JSON-safe), recorded beside its numbers."""
    items = vars(opts).items() if hasattr(opts, "__dict__") else dict(opts).items()
    return {k: v if isinstance(v, (int, float, str, bool, type(None), list)) else str(v) for k, v in items
            if not callable(v)}
