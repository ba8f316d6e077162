"""Generate the README's tables, the results index and the figure from the JSON that benchmarks and experiments write.

    python -m wm_jax.report            # rewrite every generated file (below)
    python -m wm_jax.report --check    # write nothing; exit 1 naming each generated text file that is stale

Inputs: ``benchmarks/*.json`` (``wm-jax bench <stage>``); ``results/<run>/results.json`` and
``results/archive/<run>/results.json`` (``experiments/*.py``), each with its ``table.md`` and, when present,
``note.md`` (a person's reading of the run), ``dream_check.json`` and ``plots/``; ``results/index.yaml`` (each
run's status, baseline and lever in words); ``wm_jax.cli.commands.COMMANDS``.

Outputs: the sections of README.md between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` (headline,
takecover, carracing, dream, bench, cli; the rest of the file is left byte for byte), ``results/README.md`` (one
row per run folder), ``results/<run>/README.md`` (the run's note, table, stage times and dream-check), and
``docs/takecover.png`` (``--check`` does not compare the PNG: its bytes depend on the platform's fonts).
Nothing in those files is typed by hand; rerun this after a benchmark or an experiment. Imports no JAX.

This module holds the README's tables (benchmarks, headline experiments, run tables, CLI), the section splicing
and the command line; the run folders, ``results/README.md`` and the run pages are ``wm_jax.results_index``, the
figure ``wm_jax.report_figure`` (their public names are importable from here too).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from fnmatch import fnmatch
from pathlib import Path
from typing import Any, NamedTuple

from wm_jax.report_figure import (
    FIGURE,
    PAPER_TAU115,
    TAKECOVER_HEADLINE,
    TAKECOVER_PREFIX,
    TAKECOVER_TARGET,
    plot_takecover,
)
from wm_jax.results_index import (
    ARCHIVE,
    RESULTS_README_HEAD,
    STATUSES,
    Run,
    best_real,
    dream_check_table,
    index_table,
    load_index,
    load_runs,
    machine_cell,
    overrides_diff,
    parse_score,
    rel_path,
    results_readme,
    run_readme,
    stage_line,
)

# the names this module has always offered, those now defined in results_index and report_figure included
__all__ = [
    "ARCHIVE", "EXPERIMENT_TARGETS", "FIGURE", "HEADLINES", "PAPER_TAU115", "README_TABLES", "RESULTS_README_HEAD",
    "STATUSES", "TAKECOVER_PREFIX", "TAKECOVER_TARGET", "TARGETS", "Headline", "Run", "bench_table", "best_real",
    "cli_table", "dream_check_table", "generated_texts", "index_table", "load_index", "load_runs", "machine_cell",
    "main", "overrides_diff", "parse_args", "parse_score", "plot_takecover", "readme_sections", "replace_section",
    "results_readme", "run_readme", "run_table_section", "stage_line", "summary_table", "write_atomic",
]

# stage -> (headline key, unit, target on the 2-core machine from the issue, or None)
HEADLINES = {
    "peak": ("peak_gflops", "GFLOP/s (fp32 jitted matmul)", None),
    "collect": ("frames_per_s", "frames/s", None),
    "vae": ("images_per_s", "images/s (train, batch 100)", 800),
    "encode": ("frames_per_s", "frames/s", 5000),
    "mdnrnn": ("timesteps_per_s", "timesteps/s (train, 100 x 999)", 80_000),
    "dream": ("dream_steps_per_s", "candidate-steps/s (full generations)", None),
    "evaluate": ("frames_per_s", "frames/s with the policy", None),
}
TARGETS = {("collect", "carracing"): 480, ("collect", "takecover"): 5000,
           ("dream", "carracing"): 400_000, ("dream", "takecover"): 100_000}

# README section -> the runs whose table.md it shows (looked up in results/ and results/archive/)
README_TABLES = {
    "takecover": (TAKECOVER_HEADLINE,),
    "carracing": ("carracing_table_cpu", "carracing_table_cpu_v1"),
    "dream": ("carracing_dream_cpu",),
    "atari": ("atari100k_cpu",),
}


def _fmt(x: float | None) -> str:
    if x is None:
        return "–"
    if isinstance(x, float) and x < 10:
        return f"{x:.3f}"
    return f"{x:,.0f}"


def bench_table(folder: Path) -> str:
    rows = ["| stage | env | result | unit | issue target | fraction of measured peak | device | date |",
            "|---|---|---:|---|---:|---:|---|---|"]
    for path in sorted(folder.glob("*.json")):
        try:
            rec = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as e:
            print(f"skipping {path}: {e}", file=sys.stderr)
            continue
        stage = rec.get("stage", path.stem)
        key, unit, target = HEADLINES.get(stage, (None, "", None))
        env = rec.get("env", "")
        target = TARGETS.get((stage, env), target)
        if stage == "dream" and rec.get("end_prob"):  # episodes that end: what counts is the steps they lived
            key, target = "episode_steps_per_s", None
            probs = rec["end_prob"] if isinstance(rec["end_prob"], list) else [rec["end_prob"]]
            ends = "/".join(f"{p:g}" for p in probs)
            taus = rec.get("taus", [1.15])
            sweep = f"{len(taus)} τ, " if len(taus) > 1 else ""
            shrink = rec.get("compact_ratio", 0.5)
            ratio = f" ×{shrink:g}" if rec.get("compact") and shrink != 0.5 else ""
            unit = f"episode-steps/s ({sweep}ends p {ends}/step, es.dream_compact={rec.get('compact', 0)}{ratio})"
        frac = rec.get("fraction_of_peak")
        if stage.endswith("_scaling") or stage == "dream_unroll":
            key, unit, frac = _sweep_headline(rec, path)
            rec = {**rec, key: rec.get("_value")}
        if rec.get("ratio_vs_torch"):  # timed beside the PyTorch baseline in the same run
            unit += f"; {rec['ratio_vs_torch']:.2f}× PyTorch ({_fmt(_torch_rate(rec, key))}/s)"
        dev = rec.get("device", {})
        device = f"{dev.get('backend', '?')} ×{dev.get('device_count', '?')} ({dev.get('cpu_count', '?')} cores)"
        rows.append(f"| {stage} | {env or '–'} | {_fmt(rec.get(key))} | {unit} | {_fmt(target)} | "
                    f"{'–' if frac is None else f'{100 * frac:.0f}%'} | {device} | {rec.get('time', '')[:10]} |")
    return "\n".join(rows)


def _torch_rate(rec: dict, key: str | None) -> float | None:
    """The PyTorch baseline's rate in a record timed beside it: ``torch_<headline key>`` (torch_images_per_s,
    torch_timesteps_per_s, torch_dream_steps_per_s), else its one ``torch_*_per_s`` key."""
    if key and f"torch_{key}" in rec:
        return rec[f"torch_{key}"]
    rates = [k for k in rec if k.startswith("torch_") and k.endswith("_per_s")]
    return rec[rates[0]] if len(rates) == 1 else None


def _sweep_headline(rec: dict, path: Path) -> tuple[str, str, float | None]:
    """(key, unit, fraction of peak) of a sweep record, its value left in rec["_value"]: a scaling record's rate at
    its saturation width (where the device stops gaining; curve: the PNG beside it), or the best es.unroll."""
    if rec["stage"] == "dream_unroll":
        by = rec.get("by_unroll", {})
        best = max(by, key=lambda u: by[u]["dream_steps_per_s"]) if by else None
        rec["_value"] = by[best]["dream_steps_per_s"] if best else None
        per_cpu = ", ".join(f"{u}: {r['dream_steps_per_cpu_s']:,.0f}" for u, r in by.items())
        return "_value", f"candidate-steps/s at the best es.unroll ({best}); per CPU-second by unroll: {per_cpu}", None
    sat, key = rec.get("saturation") or {}, rec.get("headline", "")
    rec["_value"] = sat.get(key)
    at = next((p for p in rec.get("points", []) if p["width"] == sat.get("width")), {})
    widths = ", ".join(str(p["width"]) for p in rec.get("points", []))
    png = path.with_suffix(".png")
    curve = f"; [curve]({png.parent.name}/{png.name})" if png.exists() else ""
    return "_value", (f"{rec.get('unit', key)}: saturates at width {sat.get('width', '?')} of {widths}{curve}"), \
        at.get("fraction_of_peak")


def _pipeline_hours(rec: dict, row: str | tuple[str, ...] | None = None) -> float:
    """Wall time of one pipeline in hours: the world-model stages plus, for a table of controller rows, only
    the training and evaluation of row(s) `row` (stage labels "train-controller <row>:<title>",
    "evaluate <row>:..."; other rows' stages, e.g. a temperature sweep's, are left out)."""
    secs = rec.get("stage_seconds", {})
    if row is None:
        return sum(secs.values()) / 3600
    rows = (row,) if isinstance(row, str) else row
    ours = [f"{stage} {r}" for r in rows for stage in ("train-controller", "evaluate")]
    per_row = ("train-controller ", "evaluate ", "sweep-temperature", "choose-start ")

    def counted(label: str) -> bool:
        if not label.startswith(per_row):
            return True  # a world-model stage
        # a row's stages (row keys may be patterns: "finetune*"), or a stage named as a row ("sweep-temperature")
        return any(fnmatch(label.split(":")[0], p) for p in ours) or label.split(" ")[0] in rows

    return sum(s for label, s in secs.items() if counted(label)) / 3600


def _row_mean(rec: dict, title_start: str) -> tuple[float, str] | None:
    for r in rec.get("rows", []):
        if r.get("agent", "").startswith(title_start) and "mean" in r:
            return r["mean"], r["real"]
    return None


class Headline(NamedTuple):
    """One headline row: an experiment's score against issue #7's cpu-scale target on the 2-core machine."""

    folder: str  # results/<folder>/results.json
    what: str  # what is scored
    read: Callable[[dict], tuple[float, str] | None]  # results.json -> (mean, "mean ± std")
    target: float | None  # score target
    hours: float | None  # wall-time target
    row: str | tuple[str, ...] | None  # controller row(s) whose pipeline the wall time counts (None: all stages;
    # for atari100k: the game, whose seeds' runs are summed)
    optional: bool = False  # a row the experiment may be run without: no headline row when it is absent


EXPERIMENT_TARGETS = [
    ("takecover_tau_table_cpu", "TakeCover, C trained in the dream: real score at the best τ (100 episodes)",
     lambda r: (r["best_real_mean"], f"{r['best_real_mean']:.0f} ± {r['best_real_std']:.0f} at τ {r['best_tau']:g}"),
     1100, 2.0, None),
    ("carracing_table_cpu", "CarRacing, full world model (C trained in the real env): real score, 100 tracks",
     lambda r: _row_mean(r, "full world model, [z, h]"), 750, 3.0, "full"),
    ("carracing_dream_cpu", "CarRacing, full world model, C trained in the real env from the dream's C: real score, "
     "100 tracks", lambda r: _row_mean(r, "full world model, [z, h]: the dream's C"), 750, 3.0,
     ("dream", "finetune*", "sweep-temperature", "choose-start"),
     True),
    ("carracing_dream_cpu", "CarRacing, C trained only in the dream: real score, 100 tracks",
     lambda r: _row_mean(r, "C trained in the dream"), 700, None, "dream"),
    ("quick", "`make run`: dream-trained C at the best τ vs the random policy (20 episodes)",
     lambda r: (r["best_real_mean"], f"{r['best_real_mean']:.0f} ± {r['best_real_std']:.0f} vs random "
                                     f"{r['random_mean']:.0f}"), None, 0.25, None),
]


def _atari_game(game: str) -> Callable[[dict], tuple[float, str] | None]:
    """results.json of experiments/atari100k.py -> one game's mean over seeds, its seeds and wall time per seed."""
    def read(rec: dict) -> tuple[float, str] | None:
        g = rec.get("per_game", {}).get(game)
        if g is None:
            return None
        seeds = " / ".join(f"{m:.1f}" for m in g["means"])
        return g["mean"], (f"{g['mean']:.1f} (seeds {seeds}; ≤ {max(g['real_steps']):,} real steps, "
                           f"≤ {max(g['wall_h']):.2f} h per seed)")
    return read


# Atari 100k (issue 39): Pong and Freeway against SimPLe's score, Boxing and Breakout against random (no target).
EXPERIMENT_TARGETS += [
    ("atari100k_cpu", f"Atari 100k {game.capitalize()}, C trained only in the dream: mean over seeds of 100 real "
     f"episodes each", _atari_game(game), target, None, game, True)
    for game, target in (("pong", 12.8), ("freeway", 16.7), ("boxing", None), ("breakout", None))]
EXPERIMENT_TARGETS = [Headline(*h) for h in EXPERIMENT_TARGETS]


def summary_table(folder: Path) -> str:
    """One row per headline experiment present in `folder`: its score and wall time against issue #7's targets."""
    rows = ["| experiment | what is scored | result | target | wall time (target) | measured |",
            "|---|---|---|---:|---|---|"]
    for name, what, read, target, hours, row, optional in EXPERIMENT_TARGETS:
        path = folder / name / "results.json"
        if not path.exists():
            continue
        rec = json.loads(path.read_text())
        try:
            got = read(rec)
        except (KeyError, TypeError):
            got = None
        if got is None and optional:
            continue
        result = got[1] if got else "–"
        met = "" if got is None or target is None else (" ✓" if got[0] >= target else " ✗")
        per_game = rec.get("per_game", {})
        wall = sum(per_game[row]["wall_h"]) if isinstance(row, str) and row in per_game else _pipeline_hours(rec, row)
        wall_s = f"{wall:.2f} h" + (f" (≤ {hours:g} h{' ✓' if wall <= hours else ' ✗'})" if hours else "")
        rows.append(f"| [{name}](results/{name}/) | {what} | {result}{met} | "
                    f"{'–' if target is None else f'{target:,}'} | {wall_s} | "
                    f"{rec.get('date', '?')}, {rec.get('machine', '?')} |")
    return "\n".join(rows) if len(rows) > 2 else "No headline experiment has been run on this checkout yet."


# ---- README sections ----------------------------------------------------------------------------------------


def run_table_section(results: Path, names: tuple[str, ...], runs: list[Run] | None = None) -> str:
    """Each named run's table.md under a line naming its folder, date, machine and status."""
    runs = load_runs(results) if runs is None else runs
    by_name = {r.name: r for r in runs}
    _, defaults = load_index(results / "index.yaml")
    parts = []
    for name in names:
        run = by_name.get(name)
        if run is None or not (run.path / "table.md").exists():
            continue
        rec, rel = run.rec, f"results/{rel_path(run, results)}"
        what = f" -- {run.entry['lever']}" if run.entry.get("lever") else ""
        table = (run.path / "table.md").read_text().strip()
        parts.append(f"[{rel}]({rel}/) ({run.entry.get('status', '?')}, {rec.get('date', '?')}, "
                     f"{machine_cell(rec, run.entry, defaults)}){what}:\n\n{table}")
    return "\n\n".join(parts) or "No such experiment has been run on this checkout yet."


def _command_help(spec: Any) -> str:
    """A COMMANDS value's one-line help: (module, help) tuples, objects with .help, or the string itself."""
    if isinstance(spec, (tuple, list)):
        return str(spec[-1])
    return str(getattr(spec, "help", spec))


def cli_table() -> str:
    """`wm-jax <command>` and its one-line help, in the order of wm_jax.cli.commands.COMMANDS (no JAX is imported)."""
    from wm_jax.cli.commands import COMMANDS

    rows = ["| command | what it does |", "|---|---|"]
    rows += [f"| `wm-jax {name}` | {_command_help(spec)} |" for name, spec in COMMANDS.items()]
    return "\n".join(rows)


def replace_section(text: str, name: str, body: str) -> str:
    """`text` with the lines between <!-- name:start --> and <!-- name:end --> replaced by `body`; the rest of
    `text` is returned byte for byte. Raises ValueError when the markers are missing."""
    pat = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.DOTALL)
    if not pat.search(text):
        raise ValueError(f"README has no <!-- {name}:start --> ... <!-- {name}:end --> markers")
    return pat.sub(lambda m: m.group(1) + body.rstrip("\n") + "\n" + m.group(2), text)


def readme_sections(root: Path) -> dict[str, str]:
    """Every generated README section's body, by marker name."""
    results = root / "results"
    runs = load_runs(results)
    out = {"headline": summary_table(results)}
    out.update({key: run_table_section(results, names, runs) for key, names in README_TABLES.items()})
    out["bench"] = bench_table(root / "benchmarks")
    out["cli"] = cli_table()
    return out


def generated_texts(root: Path) -> dict[Path, str]:
    """Every generated text file's path and content: README.md, results/README.md, results/<run>/README.md."""
    readme = root / "README.md"
    text = readme.read_text()
    for name, body in readme_sections(root).items():
        text = replace_section(text, name, body)
    results = root / "results"
    out = {readme: text}
    if results.is_dir():
        runs = load_runs(results)
        _, defaults = load_index(results / "index.yaml")
        out[results / "README.md"] = results_readme(results)
        out.update({run.path / "README.md": run_readme(run, results, runs, defaults) for run in runs})
    return out


# ---- entry point -------------------------------------------------------------------------------------------


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


USAGE = """usage: python -m wm_jax.report [--root DIR] [--check]

Regenerate the README's tables, results/README.md and the run pages from results/ and benchmarks/.
  --root DIR  the repository root (README.md, results/, benchmarks/); default .
  --check     write nothing; exit 1 when a generated file is stale"""


def parse_args(argv: list[str]) -> tuple[Path, bool]:
    """(--root, --check) from `argv`; SystemExit(2) with the usage on anything else (no argparse: the CLI
    package alone uses it)."""
    root, check, rest = Path("."), False, list(argv)
    while rest:
        a = rest.pop(0)
        if a == "--check":
            check = True
        elif a == "--root" and rest:
            root = Path(rest.pop(0))
        elif a in ("-h", "--help"):
            print(USAGE)
            raise SystemExit(0)
        else:
            print(f"{USAGE}\nerror: unexpected argument {a!r}", file=sys.stderr)
            raise SystemExit(2)
    return root, check


def main(argv: list[str] | None = None) -> int:
    root, check = parse_args(sys.argv[1:] if argv is None else argv)
    texts = generated_texts(root)
    stale = [p for p, t in texts.items() if not p.exists() or p.read_text() != t]
    if check:
        for p in stale:
            print(f"stale: {p} (run `python -m wm_jax.report`)", file=sys.stderr)
        return 1 if stale else 0
    for p in stale:
        write_atomic(p, texts[p])
        print(f"updated {p}")
    if plot_takecover(root / "results", root / FIGURE):
        print(f"drew {root / FIGURE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
