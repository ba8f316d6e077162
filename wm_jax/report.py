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
"""

from __future__ import annotations

import json
import math
import os
import re
import statistics
import sys
from collections.abc import Callable
from fnmatch import fnmatch
from pathlib import Path
from typing import Any, NamedTuple

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

STATUSES = ("headline", "ablation", "superseded")
ARCHIVE = "archive"  # results/archive/<run>: the superseded runs
# README section -> the runs whose table.md it shows (looked up in results/ and results/archive/)
README_TABLES = {
    "takecover": ("takecover_tau_table_cpu",),
    "carracing": ("carracing_table_cpu", "carracing_table_cpu_v1"),
    "dream": ("carracing_dream_cpu",),
    "atari": ("atari100k_cpu",),
}
FIGURE = Path("docs") / "takecover.png"
TAKECOVER_PREFIX = "takecover_tau_table_"  # the runs the figure's right panel compares
PAPER_TAU115 = (1092, 556)  # the paper's τ 1.15 row (Ha & Schmidhuber 2018, table 2): real score mean, std
TAKECOVER_TARGET = 1100  # issue #7's cpu-scale target for the best τ


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


def dream_check_table(path: Path) -> str:
    """``dream_check.json`` (``wm-jax dream-check``) as markdown: one row per τ, one column per fixed policy."""
    rec = json.loads(path.read_text())
    scores = rec["scores"]
    policies = list(next(iter(scores.values())))
    rows = [f"Fixed policies in M's dream (`wm-jax dream-check`, {rec['episodes']} dream episodes each, "
            f"done rule `{rec['done_mode']}`):", "",
            "| τ | " + " | ".join(policies) + " |", "|---|" + "---:|" * len(policies)]
    for tau, by_policy in scores.items():
        cells = [f"{by_policy[p]['mean']:,.0f} ± {by_policy[p]['std']:,.0f}" for p in policies]
        rows.append(f"| {float(tau):.2f} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def stage_line(seconds: dict[str, float]) -> str:
    """Wall time of each stage, in minutes ("train-controller full:<title>" shortened to its key)."""
    cells = [f"{label.split(':')[0]} {s / 60:,.1f}" for label, s in seconds.items()]
    return "Stage wall times (min): " + " · ".join(cells)


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


# ---- the run folders and their index ----------------------------------------------------------------------


class Run(NamedTuple):
    """One run folder: results/<name>/ or results/archive/<name>/."""

    name: str  # the folder's name, unique across results/ and results/archive/
    path: Path  # the folder
    rec: dict[str, Any]  # its results.json ({} when it has none)
    entry: dict[str, Any]  # its row of results/index.yaml ({} when it has none)


def load_index(path: Path) -> tuple[dict[str, dict], dict[str, Any]]:
    """results/index.yaml -> ({run: {status, baseline, lever, peak_gflops}}, defaults). A missing file is empty."""
    if not path.exists():
        return {}, {}
    import yaml

    doc = yaml.safe_load(path.read_text()) or {}
    runs, defaults = doc.get("runs") or {}, doc.get("defaults") or {}
    for name, entry in runs.items():
        if not isinstance(entry, dict) or entry.get("status") not in STATUSES:
            got = entry.get("status") if isinstance(entry, dict) else entry
            raise ValueError(f"{path}: runs.{name}.status is {got!r}; expected one of {', '.join(STATUSES)}")
    return runs, defaults


def load_runs(results: Path) -> list[Run]:
    """Every run folder under `results` and `results/archive`, in index.yaml's order (unindexed ones last).

    Raises ValueError naming the folder when a superseded run is outside results/archive/ or an archived run
    is not superseded, when two folders share a name, or when a baseline names no folder."""
    index, _ = load_index(results / "index.yaml")
    folders = [p for p in sorted(results.iterdir()) if p.is_dir() and p.name != ARCHIVE] if results.is_dir() else []
    archive = results / ARCHIVE
    archived = sorted(p for p in archive.iterdir() if p.is_dir()) if archive.is_dir() else []
    runs: dict[str, Run] = {}
    for path in folders + archived:
        if path.name in runs:
            raise ValueError(f"results: two run folders named {path.name!r} ({runs[path.name].path} and {path})")
        res = path / "results.json"
        rec = json.loads(res.read_text()) if res.exists() else {}
        entry = index.get(path.name, {})
        in_archive = path.parent == archive
        if entry and (entry["status"] == "superseded") != in_archive:
            where = "is under results/archive/" if in_archive else "is not under results/archive/"
            raise ValueError(f"results/index.yaml: run {path.name!r} has status {entry['status']!r} but {where}")
        runs[path.name] = Run(path.name, path, rec, entry)
    for run in runs.values():
        base = run.entry.get("baseline")
        if base and base not in runs:
            raise ValueError(f"results/index.yaml: runs.{run.name}.baseline {base!r} names no run folder")
    order = {name: i for i, name in enumerate(index)}
    return sorted(runs.values(), key=lambda r: order.get(r.name, len(order)))


def _parse_score(text: str) -> tuple[float, float] | None:
    """'1,092 ± 556' -> (1092.0, 556.0); None when the cell holds no 'mean ± std'."""
    m = re.search(r"(-?[\d,.]+)\s*±\s*([\d,.]+)", text or "")
    return (float(m.group(1).replace(",", "")), float(m.group(2).replace(",", ""))) if m else None


def best_real(rec: dict) -> tuple[float, float, str] | None:
    """The run's best real score: (mean, std, which row), from best_real_* (τ tables) or the rows' 'real' cells."""
    games = rec.get("per_game", {})
    if len(games) == 1:  # an Atari table of one game: its mean over seeds (std: one seed's, or across the seeds')
        (name, g), = games.items()
        std = g["stds"][0] if len(g["means"]) == 1 else statistics.pstdev(g["means"])
        return g["mean"], std, name
    if "best_real_mean" in rec:
        tau = rec.get("best_tau")
        return rec["best_real_mean"], rec.get("best_real_std", float("nan")), "τ ?" if tau is None else f"τ {tau:g}"
    best = None
    for r in rec.get("rows", []):
        score = _parse_score(r.get("real", ""))
        if score and r.get("mean") is not None and (best is None or r["mean"] > best[0]):
            agent = re.split(r" \(|: ", r.get("agent", ""))[0]
            best = (float(r["mean"]), score[1], agent)
    return best


def _overrides(rec: dict) -> dict[str, str]:
    """results.json's overrides as {key: value}, the last of a repeated key winning, without the run's name."""
    out = dict(o.split("=", 1) for o in rec.get("overrides", []) if "=" in o)
    out.pop("name", None)
    return out


def overrides_diff(rec: dict, base: dict | None) -> str:
    """The overrides `rec` sets differently from its baseline's (all of its own without one); a key only the
    baseline sets shows as 'key=(config)'."""
    mine, theirs = _overrides(rec), _overrides(base or {})
    cells = [f"{k}={v}" for k, v in mine.items() if theirs.get(k) != v]
    cells += [f"{k}=(config)" for k in theirs if k not in mine]
    return " ".join(cells)


def machine_cell(rec: dict, entry: dict, defaults: dict) -> str:
    """'cpu · 2 cores, x86_64, AMD EPYC · 203 GFLOP/s': backend, machine, peak (results.json first, index.yaml)."""
    dev = rec.get("device") or {}
    backend = dev.get("backend") or rec.get("backend") or entry.get("backend") or defaults.get("backend")
    kind = dev.get("device_kind") if dev.get("backend") not in (None, "cpu") else None
    peak = rec.get("peak_gflops", entry.get("peak_gflops"))
    peak_s = f"{peak:,.0f}" if isinstance(peak, (int, float)) else peak
    parts = [backend, kind and f"{dev.get('device_count', 1)} × {kind}", rec.get("machine"),
             peak_s and f"{peak_s} GFLOP/s"]
    return " · ".join(str(p) for p in parts if p) or "–"


def _row_score(rec: dict, agent: str) -> tuple[float, float, str] | None:
    """(mean, std, agent) of the row whose agent title, cut as best_real cuts it, is `agent`."""
    for r in rec.get("rows", []):
        score = _parse_score(r.get("real", ""))
        if score and re.split(r" \(|: ", r.get("agent", ""))[0] == agent:
            return float(r.get("mean", score[0])), score[1], agent
    return None


def _delta(run: Run, base: Run | None) -> str:
    """Best real score minus the baseline's, ± one standard error of the difference (unpaired). For tables of
    named rows (CarRacing) the baseline's row of the same name, when it has one, rather than its best."""
    a = best_real(run.rec)
    b = base and ((a and "best_real_mean" not in run.rec and _row_score(base.rec, a[2])) or best_real(base.rec))
    if not (a and b):
        return "–"
    n_a, n_b = run.rec.get("episodes"), base.rec.get("episodes")
    if not (n_a and n_b):
        return f"{a[0] - b[0]:+,.0f}"
    se = math.sqrt(a[1] ** 2 / n_a + b[1] ** 2 / n_b)
    return f"{a[0] - b[0]:+,.0f} ± {se:,.0f}"


def _rel(run: Run, results: Path) -> str:
    return run.path.relative_to(results).as_posix()


def index_table(runs: list[Run], results: Path, defaults: dict) -> str:
    """One markdown row per run folder: status, baseline, what changed, best real score, Δ, episodes, date,
    machine, wall time."""
    by_name = {r.name: r for r in runs}
    header = "| run | status | baseline | what changed | best real | Δ best vs baseline | episodes | date | machine | "
    rows = [header + "wall time |", "|---|---|---|---|---|---:|---:|---|---|---:|"]
    for run in runs:
        base = by_name.get(run.entry.get("baseline", ""))
        diff = overrides_diff(run.rec, base.rec if base else None)
        changed = "; ".join(x for x in (diff and f"`{diff}`", run.entry.get("lever", "")) if x) or "–"
        best = best_real(run.rec)
        best_s = f"{best[0]:,.0f} ± {best[1]:,.0f} ({best[2]})" if best else "–"
        wall = run.rec.get("wall_time_h")
        base_s = f"[{base.name}]({_rel(base, results)}/)" if base else "–"
        rows.append(f"| [{run.name}]({_rel(run, results)}/) | {run.entry.get('status', 'not in index.yaml')} | "
                    f"{base_s} | {changed} | {best_s} | {_delta(run, base)} | {run.rec.get('episodes', '–')} | "
                    f"{run.rec.get('date', '–')} | {machine_cell(run.rec, run.entry, defaults)} | "
                    f"{'–' if wall is None else f'{wall:.2f} h'} |")
    return "\n".join(rows)


RESULTS_README_HEAD = """\
# Results

Generated by `python -m wm_jax.report` from each folder's `results.json` and [index.yaml](index.yaml) (status,
baseline, lever); do not edit by hand. One row per run folder. **headline**: the current recipe of an experiment
(the README's tables); **ablation**: one lever against its baseline; **superseded**: a replaced recipe, kept under
[archive/](archive/). "What changed" lists the overrides that differ from the baseline's, then the lever in words;
"Δ best vs baseline" is the difference of the best real scores ± one standard error of that difference (unpaired,
so an upper bound for runs on the same world model and episodes). A folder holds `results.json`, `table.md`,
`note.md` (a person's reading of the run), `plots/` and a generated `README.md` with all of it. Findings across
runs: [docs/findings.md](../docs/findings.md).
"""


def results_readme(results: Path) -> str:
    runs = load_runs(results)
    _, defaults = load_index(results / "index.yaml")
    return RESULTS_README_HEAD + "\n" + index_table(runs, results, defaults) + "\n"


def run_readme(run: Run, results: Path, runs: list[Run], defaults: dict) -> str:
    """results/<run>/README.md: what the README once printed per run -- header, note, table, stage times,
    dream-check -- plus the run's status, baseline and plots."""
    rec, by_name = run.rec, {r.name: r for r in runs}
    base = by_name.get(run.entry.get("baseline", ""))
    status = run.entry.get("status", "not in results/index.yaml")
    link = f", baseline [{base.name}]({os.path.relpath(base.path, run.path)}/)" if base else ""
    lever = f": {run.entry['lever']}." if run.entry.get("lever") else "."
    intro = ("Generated by `python -m wm_jax.report` from this folder's files (edit `note.md`, not this page). "
             f"Status **{status}**{link}{lever}")
    head = [f"# {run.name}", "", intro]
    if rec:
        line = (f"Scale `{rec.get('scale', '?')}`, {rec.get('date', '?')}, "
                f"{machine_cell(rec, run.entry, defaults)}, "
                f"wall time {rec.get('wall_time_h', 0):.2f} h")
        if rec.get("overrides"):
            line += f", overrides `{' '.join(rec['overrides'])}`"
        head += ["", line + "."]
    note = run.path / "note.md"
    note_text = note.read_text().strip() if note.exists() else rec.get("note", "")
    parts = ["\n".join(head)] + ([note_text] if note_text else [])
    if (run.path / "table.md").exists():
        parts.append((run.path / "table.md").read_text().strip())
    if rec.get("stage_seconds"):
        parts.append(stage_line(rec["stage_seconds"]))
    if (run.path / "dream_check.json").exists():
        parts.append(dream_check_table(run.path / "dream_check.json"))
    pngs = sorted(p.relative_to(run.path).as_posix() for p in run.path.rglob("*.png"))
    if pngs:
        parts.append("Plots: " + " · ".join(f"[{Path(p).stem}]({p})" for p in pngs))
    return "\n\n".join(parts) + "\n"


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
        rec, rel = run.rec, f"results/{_rel(run, results)}"
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


# ---- the figure -----------------------------------------------------------------------------------------------


def _tau_rows(rec: dict) -> list[tuple[float, float | None, float, float]]:
    """A τ table's controller rows: (τ, virtual score or None, real mean, real std)."""
    out = []
    for r in rec.get("rows", []):
        score = _parse_score(r.get("real", ""))
        if r.get("tau") and score:
            virtual = (r.get("virtual") or "").replace(",", "")
            out.append((float(r["tau"]), float(virtual) if virtual.replace(".", "").isdigit() else None, *score))
    return out


def plot_takecover(results: Path, out: Path) -> bool:
    """docs/takecover.png: left, the headline τ table (virtual and real score per τ, ± one standard error, the
    random and blind-sweep policies, the paper's τ 1.15); right, every TakeCover run's best real score. Returns
    whether the file changed (False, writing nothing, when the headline run is absent or the picture is the same)."""
    runs = [r for r in load_runs(results) if r.name.startswith(TAKECOVER_PREFIX) and best_real(r.rec)]
    head = next((r for r in runs if r.name == README_TABLES["takecover"][0]), None)
    if head is None:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rec, n = head.rec, head.rec.get("episodes", 100)
    rows = _tau_rows(rec)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 5.2), gridspec_kw={"width_ratios": [1, 1.15]})
    taus = [t for t, *_ in rows]
    ax.errorbar(taus, [m for _, _, m, _ in rows], [s / math.sqrt(n) for *_, s in rows], marker="o", capsize=3,
                label=f"real game ({n} episodes, ± 1 SE)")
    ax.plot(taus, [v for _, v, *_ in rows], "s--", label="in the dream (virtual)")
    ax.errorbar([1.15], [PAPER_TAU115[0]], [PAPER_TAU115[1] / 10], fmt="*", ms=12, color="k", label="paper, τ 1.15")
    for value, text, style in ((rec.get("random_mean"), "random policy", ":"),
                               (rec.get("blind_mean"), "sweeping blind (no models)", "-."),
                               (TAKECOVER_TARGET, "target", "-")):
        if value:
            ax.axhline(value, ls=style, lw=1, color="grey")
            ax.text(taus[0], value, f" {text} {value:,.0f}", va="bottom", fontsize=8, color="dimgrey")
    ax.set(xlabel="dream temperature τ", ylabel="steps survived", title=f"{head.name}: C trained in the dream")
    ax.legend(fontsize=8, loc="lower right")
    _plot_levers(bx, runs, head)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    if out.exists() and out.read_bytes() == tmp.read_bytes():
        tmp.unlink()  # the same picture: leave the tracked file untouched
        return False
    tmp.replace(out)
    return True


def _plot_levers(ax: Any, runs: list[Run], head: Run) -> None:
    """Horizontal bars: each TakeCover run's best real score ± one SE, sorted; superseded runs left out."""
    runs = sorted((r for r in runs if r.entry.get("status") != "superseded"), key=lambda r: best_real(r.rec)[0])
    means = [best_real(r.rec)[0] for r in runs]
    ses = [best_real(r.rec)[1] / math.sqrt(r.rec.get("episodes", 100)) for r in runs]
    colors = ["tab:orange" if r.name == head.name else "tab:blue" for r in runs]
    ax.barh(range(len(runs)), means, xerr=ses, color=colors, capsize=2)
    labels = [r.name.removeprefix(head.name).lstrip("_") or "headline" for r in runs]
    ax.set_yticks(range(len(runs)), labels, fontsize=8)
    for value, text, style in ((head.rec.get("blind_mean"), "blind sweep", "-."), (TAKECOVER_TARGET, "target", "-")):
        if value:
            ax.axvline(value, ls=style, lw=1, color="grey")
            ax.text(value, len(runs) - 0.4, f"{text} ", ha="right", fontsize=8, color="dimgrey")
    ax.set(xlabel="best real score over τ (± 1 SE)", title=f"every run {head.name}_* (orange: the headline)")


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
