"""``wm-jax bench <stage>``: throughput benchmarks that print one JSON object and write it to a file.

Each stage module (``wm_jax.bench.<stage>``) exposes ``add_arguments(parser)`` and ``measure(args) -> dict``, and
may expose ``figure(result, path)`` (a PNG beside the JSON, e.g. a ``--scaling`` curve).
Compile time is excluded, results are blocked on, and the conditions (device, sizes, versions) are included.
The JSON goes to ``--out FILE``, else to ``/tmp/wm-jax-bench/<name>.json``; only ``--record`` writes the tracked
``benchmarks/<name>.json`` from which the README's tables are generated (``python -m wm_jax.report``). ``<name>``
is the record's stage (``dream_scaling`` for ``bench dream --scaling``) and its env, if any.
``--out`` and ``--record`` may come before or after the stage's own options.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

STAGES = ("collect", "vae", "encode", "mdnrnn", "dream", "evaluate", "peak", "scaling")
SCRATCH = Path("/tmp/wm-jax-bench")  # where a run that is not recorded writes
RECORD = Path("benchmarks")  # the tracked records, rewritten only with --record


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("stage", choices=STAGES)
    _add_output_arguments(parser)
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="stage options (see wm-jax bench <stage> --help)")


def _add_output_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default=None, help=f"JSON output file (default {SCRATCH}/<stage>[_<env>].json)")
    parser.add_argument("--record", action="store_true",
                        help=f"write the tracked {RECORD}/<stage>[_<env>].json (the README's tables) instead")


def output_path(result: dict, out: str | None, record: bool) -> Path:
    """Where a result goes: `out` if given, else benchmarks/ with `record`, else /tmp (never a tracked file)."""
    if out and record:
        raise SystemExit("wm-jax bench: --out and --record exclude each other")
    if out:
        return Path(out)
    env = result.get("env")
    name = f"{result['stage']}_{env}.json" if env else f"{result['stage']}.json"
    return (RECORD if record else SCRATCH) / name


def write_json(result: dict, out: Path) -> None:
    """Atomic write (temp file, then rename) of one record."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    tmp.replace(out)


def run(args: argparse.Namespace) -> int:
    module = importlib.import_module(f"wm_jax.bench.{args.stage}")
    late = argparse.ArgumentParser(add_help=False)  # --out / --record written after the stage's options
    _add_output_arguments(late)
    where, rest = late.parse_known_args(args.rest)
    sub = argparse.ArgumentParser(prog=f"wm-jax bench {args.stage}")
    module.add_arguments(sub)
    sargs = sub.parse_args(rest)
    from wm_jax.sysinfo import conditions

    result = {"stage": args.stage, **module.measure(sargs), **conditions()}
    print(json.dumps(result, indent=2, sort_keys=True))
    out = output_path(result, where.out or args.out, where.record or args.record)
    write_json(result, out)
    print(f"wrote {out}", file=sys.stderr)
    if hasattr(module, "figure"):
        png = module.figure(result, out.with_suffix(".png"))
        if png:
            print(f"wrote {png}", file=sys.stderr)
    return 0
