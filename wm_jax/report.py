"""Generate the README's tables from the JSON that benchmarks and experiments write.

    python -m wm_jax.report            # rewrite the marked sections of README.md in place

Benchmarks: ``benchmarks/*.json`` (written by ``wm-jax bench <stage>``).
Results: ``results/<experiment>/results.json`` (written by ``experiments/*.py``), with its ``table.md`` and,
when present, ``dream_check.json`` and ``note.md`` (a person's reading of the run, kept across reruns).
Nothing in those sections is typed by hand; rerun this after a benchmark or an experiment.
"""

from __future__ import annotations

import json
import re
import sys
from fnmatch import fnmatch
from pathlib import Path
from typing import Callable, NamedTuple

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
        dev = rec.get("device", {})
        device = f"{dev.get('backend', '?')} ×{dev.get('device_count', '?')} ({dev.get('cpu_count', '?')} cores)"
        rows.append(f"| {stage} | {env or '–'} | {_fmt(rec.get(key))} | {unit} | {_fmt(target)} | "
                    f"{'–' if frac is None else f'{100 * frac:.0f}%'} | {device} | {rec.get('time', '')[:10]} |")
    return "\n".join(rows)


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
    row: str | tuple[str, ...] | None  # controller row(s) whose pipeline the wall time counts (None: all stages)
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
        wall = _pipeline_hours(rec, row)
        wall_s = f"{wall:.2f} h" + (f" (≤ {hours:g} h{' ✓' if wall <= hours else ' ✗'})" if hours else "")
        rows.append(f"| {name} | {what} | {result}{met} | {'–' if target is None else f'{target:,}'} | {wall_s} | "
                    f"{rec.get('date', '?')}, {rec.get('machine', '?')} |")
    return "\n".join(rows) if len(rows) > 2 else ""


def results_section(folder: Path) -> str:
    parts = []
    summary = summary_table(folder)
    if summary:
        parts.append("Headline results against issue #7's cpu-scale targets (each experiment's full table below):\n\n"
                     + summary)
    for path in sorted(folder.glob("*/results.json")):
        rec = json.loads(path.read_text())
        table = path.with_name("table.md")
        head = (f"**{path.parent.name}** (scale `{rec.get('scale', '?')}`, "
                f"{rec.get('date', '?')}, {rec.get('machine', '?')}, wall time {rec.get('wall_time_h', 0):.2f} h)")
        if rec.get("overrides"):
            head += f", overrides `{' '.join(rec['overrides'])}`"
        note = path.with_name("note.md")
        note = note.read_text().strip() if note.exists() else rec.get("note", "")
        if note:
            head += f"\n\n{note}"
        parts.append(head + "\n\n" + (table.read_text().strip() if table.exists() else "(no table)"))
        if rec.get("stage_seconds"):
            parts.append(stage_line(rec["stage_seconds"]))
        if path.with_name("dream_check.json").exists():
            parts.append(dream_check_table(path.with_name("dream_check.json")))
    return "\n\n".join(parts) if parts else "No experiment has been run on this checkout yet."


def replace_section(text: str, name: str, body: str) -> str:
    pat = re.compile(rf"(<!-- {name}:start -->\n).*?(<!-- {name}:end -->)", re.S)
    if not pat.search(text):
        raise ValueError(f"README has no <!-- {name}:start --> ... <!-- {name}:end --> markers")
    return pat.sub(lambda m: m.group(1) + body.rstrip("\n") + "\n" + m.group(2), text)


def main(root: str = ".") -> int:
    root_p = Path(root)
    readme = root_p / "README.md"
    text = readme.read_text()
    text = replace_section(text, "bench", bench_table(root_p / "benchmarks"))
    text = replace_section(text, "results", results_section(root_p / "results"))
    tmp = readme.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(readme)
    print(f"updated {readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
