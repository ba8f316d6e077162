"""The results index: every run folder under ``results/`` and ``results/archive/``, read with its row of
``results/index.yaml``, and the pages drawn from them -- ``results/README.md`` (one row per run: status, baseline,
what changed, best real score, Δ against the baseline, machine) and each ``results/<run>/README.md`` (the run's
note, table, stage times, dream-check and plots).

Used by ``wm_jax.report`` (which writes the pages and the README's run tables) and ``wm_jax.report_figure``.
Reads JSON and YAML only; imports no JAX.
"""

from __future__ import annotations

import json
import math
import os
import re
import statistics
from pathlib import Path
from typing import Any, NamedTuple

STATUSES = ("headline", "ablation", "superseded")
ARCHIVE = "archive"  # results/archive/<run>: the superseded runs


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


def parse_score(text: str) -> tuple[float, float] | None:
    """'1,092 ± 556' -> (1092.0, 556.0); None when the cell holds no 'mean ± std'."""
    m = re.search(r"(-?[\d,.]+)\s*±\s*([\d,.]+)", text or "")
    return (float(m.group(1).replace(",", "")), float(m.group(2).replace(",", ""))) if m else None


def best_real(rec: dict) -> tuple[float, float, str] | None:
    """The run's best real score: (mean, std, which row), from best_real_* (τ tables) or the rows' 'real' cells."""
    games = rec.get("per_game", {})
    if games:  # an Atari table: its game's mean over seeds; of several games, the best human-normalised one's
        name = max(games, key=lambda k: games[k].get("human_normalised", 0.0))
        return _game_score(games, name) if len(games) == 1 else (*_game_score(games, name)[:2],
                                                                   f"{name}, best of {len(games)} games")
    if "best_real_mean" in rec:
        tau = rec.get("best_tau")
        return rec["best_real_mean"], rec.get("best_real_std", float("nan")), "τ ?" if tau is None else f"τ {tau:g}"
    best = None
    for r in rec.get("rows", []):
        score = parse_score(r.get("real", ""))
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


def _game_score(games: dict, name: str) -> tuple[float, float, str]:
    """An Atari game's (mean over seeds, std: one seed's or across the seeds', name) from results.json's per_game."""
    g = games[name]
    return g["mean"], g["stds"][0] if len(g["means"]) == 1 else statistics.pstdev(g["means"]), name


def _row_score(rec: dict, agent: str) -> tuple[float, float, str] | None:
    """(mean, std, agent) of the row whose agent title, cut as best_real cuts it, is `agent` (an Atari table: the
    game of that name)."""
    game = agent.split(",")[0]  # best_real's label of an Atari table: "<game>[, best of N games]"
    if game in rec.get("per_game", {}):
        return _game_score(rec["per_game"], game)
    for r in rec.get("rows", []):
        score = parse_score(r.get("real", ""))
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


def rel_path(run: Run, results: Path) -> str:
    """The run folder relative to `results`: "<name>" or "archive/<name>" (for links)."""
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
        base_s = f"[{base.name}]({rel_path(base, results)}/)" if base else "–"
        rows.append(f"| [{run.name}]({rel_path(run, results)}/) | {run.entry.get('status', 'not in index.yaml')} | "
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
