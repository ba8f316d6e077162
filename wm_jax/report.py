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
from pathlib import Path

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


def results_section(folder: Path) -> str:
    parts = []
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
