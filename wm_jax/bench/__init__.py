"""``wm-jax bench <stage>``: throughput benchmarks that print one JSON object and write it to a file.

Each stage module (``wm_jax.bench.<stage>``) declares its options with ``add_arguments(parser)`` (the CLI passes
an argparse parser) and measures with ``measure(opts) -> dict``. Compile time is excluded, results are blocked
on, and the conditions (device, sizes, versions) are included. The JSON goes to ``--out`` (default
``checkpoints/bench/<stage>[_<env>].json``, outside version control); ``--record`` writes
``benchmarks/<stage>[_<env>].json``, from which the README's tables are generated (``python -m wm_jax.report``).
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from pathlib import Path
from typing import Any

STAGES = ("collect", "vae", "encode", "mdnrnn", "dream", "evaluate", "peak")
DEFAULT_DIR = Path("checkpoints") / "bench"
RECORD_DIR = Path("benchmarks")


def add_stage_options(stage: str, parser: Any) -> None:
    """Let benchmark `stage` declare its options on `parser` (anything with argparse's ``add_argument``)."""
    importlib.import_module(f"wm_jax.bench.{stage}").add_arguments(parser)


def output_path(stage: str, env: str | None, out: str | os.PathLike | None, record: bool) -> Path:
    """Where a result goes: `out` if given, else benchmarks/ when recording, else checkpoints/bench/."""
    if out:
        return Path(out)
    name = f"{stage}_{env}.json" if env else f"{stage}.json"
    return (RECORD_DIR if record else DEFAULT_DIR) / name


def run_stage(stage: str, opts: Any, out: str | os.PathLike | None = None, record: bool = False) -> Path:
    """Measure `stage` with options `opts`; print the JSON, write it atomically; return its path."""
    from wm_jax.sysinfo import conditions, provenance

    result = {"stage": stage, **importlib.import_module(f"wm_jax.bench.{stage}").measure(opts), **conditions(),
              "provenance": provenance(), "options": _options(opts)}
    text = json.dumps(result, indent=2, sort_keys=True)
    print(text)
    path = output_path(stage, result.get("env"), out, record)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text + "\n")
    tmp.replace(path)
    print(f"wrote {path}", file=sys.stderr)
    return path


def _options(opts: Any) -> dict:
    """The benchmark's resolved options (JSON-safe), recorded beside its numbers."""
    items = vars(opts).items() if hasattr(opts, "__dict__") else dict(opts).items()
    return {k: v if isinstance(v, (int, float, str, bool, type(None), list)) else str(v) for k, v in items}
