"""``wm-jax bench <stage>``: throughput benchmarks that print one JSON object and write it to a file.

Each stage module (``wm_jax.bench.<stage>``) exposes ``add_arguments(parser)`` and ``measure(args) -> dict``.
Compile time is excluded, results are blocked on, and the conditions (device, sizes, versions) are included.
The JSON is also written to ``/tmp/wm-jax-bench/<stage>.json`` (``--out`` to change); ``--record`` writes the
tracked ``benchmarks/<stage>.json`` instead, from which the README's tables are generated (``python -m wm_jax.report``).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

STAGES = ("collect", "vae", "encode", "mdnrnn", "dream", "evaluate", "peak")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("stage", choices=STAGES)
    parser.add_argument("--out", default=None, help="JSON output file (default /tmp/wm-jax-bench/<stage>[_<env>].json; "
                        "with --record benchmarks/<stage>[_<env>].json)")
    parser.add_argument("--record", action="store_true", help="write the tracked benchmarks/*.json (README tables)")
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="stage options (see wm-jax bench <stage> --help)")


def run(args: argparse.Namespace) -> int:
    module = importlib.import_module(f"wm_jax.bench.{args.stage}")
    sub = argparse.ArgumentParser(prog=f"wm-jax bench {args.stage}")
    module.add_arguments(sub)
    late = argparse.ArgumentParser(add_help=False)  # --out / --record also accepted after the stage
    late.add_argument("--out", default=args.out)
    late.add_argument("--record", action="store_true", default=args.record)
    outs, rest = late.parse_known_args(args.rest)
    args.out, args.record = outs.out, outs.record
    sargs = sub.parse_args(rest)
    from wm_jax.sysinfo import conditions

    result = {"stage": args.stage, **module.measure(sargs), **conditions()}
    text = json.dumps(result, indent=2, sort_keys=True)
    print(text)
    env = result.get("env")
    name = f"{args.stage}_{env}.json" if env else f"{args.stage}.json"
    out = Path(args.out) if args.out else Path("benchmarks" if args.record else "/tmp/wm-jax-bench") / name
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(text + "\n")
    tmp.replace(out)
    print(f"wrote {out}", file=sys.stderr)
    return 0
