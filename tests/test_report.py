"""README tables are generated from benchmark/experiment JSON, never typed by hand."""

import json

import pytest

from wm_jax import report
from wm_jax.pipeline_carracing import FINETUNE_TITLE


def test_bench_table_reads_json_and_computes_fraction(tmp_path):
    (tmp_path / "benchmarks").mkdir()
    rec = {"stage": "vae", "images_per_s": 432.1, "fraction_of_peak": 0.8612,
           "device": {"backend": "cpu", "device_count": 1, "cpu_count": 2}, "time": "2026-11-21T10:00:00"}
    (tmp_path / "benchmarks" / "vae.json").write_text(json.dumps(rec))
    table = report.bench_table(tmp_path / "benchmarks")
    row = table.splitlines()[2]
    assert "| vae |" in row and "| 432 |" in row and "| 800 |" in row and "| 86% |" in row
    assert "2026-11-21" in row


def test_replace_section_rewrites_only_between_markers():
    text = "a\n<!-- bench:start -->\nold\n<!-- bench:end -->\nb\n"
    out = report.replace_section(text, "bench", "new table")
    assert out == "a\n<!-- bench:start -->\nnew table\n<!-- bench:end -->\nb\n"
    with pytest.raises(ValueError, match="results:start"):
        report.replace_section(text, "results", "x")


def test_results_section_lists_each_experiment(tmp_path):
    d = tmp_path / "results" / "quick_quick"
    d.mkdir(parents=True)
    (d / "results.json").write_text(json.dumps({"experiment": "quick_quick", "scale": "quick", "date": "2026-11-21",
                                                "machine": "2 cores", "wall_time_h": 0.2,
                                                "stage_seconds": {"collect": 90.0, "train-controller z:V, z": 1500}}))
    (d / "table.md").write_text("| agent | real |\n|---|---|\n| random | 210 ± 108 |\n")
    out = report.results_section(tmp_path / "results")
    assert "**quick_quick**" in out and "0.20 h" in out and "| random | 210 ± 108 |" in out
    assert "Stage wall times (min): collect 1.5 · train-controller z 25.0" in out
    assert "dream-check" not in out  # no dream_check.json: no dream table
    assert "overrides" not in out
    rec = json.loads((d / "results.json").read_text())
    (d / "results.json").write_text(json.dumps({**rec, "overrides": ["iterate.rounds=0", "es.seed=1"],
                                                "note": "Measured before the iterate section existed."}))
    out = report.results_section(tmp_path / "results")
    assert "0.20 h), overrides `iterate.rounds=0 es.seed=1`\n\nMeasured before the iterate section existed." in out
    (d / "note.md").write_text("A reading that survives reruns.\n")
    out = report.results_section(tmp_path / "results")
    assert "es.seed=1`\n\nA reading that survives reruns.\n\n| agent | real |" in out  # note.md wins
    (d / "note.md").unlink()
    (d / "dream_check.json").write_text(json.dumps({
        "env": "takecover", "done_mode": "threshold", "episodes": 64, "max_steps": 2100,
        "scores": {"1.0": {"stay": {"mean": 84.7, "std": 29.9}, "sweep50": {"mean": 1345.9, "std": 247.6}},
                   "1.15": {"stay": {"mean": 82.2, "std": 29.7}, "sweep50": {"mean": 340.6, "std": 215.7}}}}))
    out = report.results_section(tmp_path / "results")
    assert "64 dream episodes each, done rule `threshold`" in out and "| τ | stay | sweep50 |" in out
    assert "| 1.00 | 85 ± 30 | 1,346 ± 248 |" in out and "| 1.15 | 82 ± 30 | 341 ± 216 |" in out


def test_episode_hazard_hand_computed():
    from wm_jax.metrics import episode_hazard

    # edges 0 / 10 / 20: a death at step 4 (length 5); a death at step 14 (length 15); a survivor cut at 30
    # live steps per bucket: [5 + 10 + 10, 0 + 5 + 10, 0 + 0 + 10] = [25, 15, 10]; deaths [1, 1, 0]
    got = episode_hazard([5, 15, 30], [True, True, False], edges=(0, 10, 20))
    assert got == [40.0, pytest.approx(66.667, abs=1e-3), 0.0]
    # a death on the last step of a bucket counts in that bucket; no episode alive in a bucket -> None
    assert episode_hazard([10], [True], edges=(0, 10, 20)) == [100.0, None, None]
    # the tau table's column: the buckets from step 400 on (400-800 / 800-1,400 / 1,400+)
    from wm_jax.pipeline import late_hazard

    rec = {"lengths": [500, 900, 2100], "terminated": [True, True, False]}
    # live 400-800: 100 + 400 + 400 = 900, 1 death; 800-1,400: 100 + 600 = 700, 1 death; 1,400+: 700, none
    assert late_hazard(rec) == "1.1 / 1.4 / 0.0"
    assert late_hazard({"lengths": [300], "terminated": [True]}) == "– / – / –"


def test_summary_table_scores_headline_experiments_against_targets(tmp_path):
    """The README's headline table reads each experiment's results.json: score vs the issue's target (✓/✗), and the
    wall time of one pipeline (for a CarRacing table: the world model plus the full row only)."""
    res = tmp_path / "results"
    (res / "carracing_table_cpu").mkdir(parents=True)
    (res / "carracing_table_cpu" / "results.json").write_text(json.dumps({
        "date": "2026-12-01", "machine": "2 cores, x86_64, AMD EPYC",
        "stage_seconds": {"collect": 1800.0, "train-vae": 1800.0, "train-controller full:full world model, [z, h]":
                          3600.0, "evaluate full:full world model, [z, h]": 360.0,
                          "train-controller z:V model, z only": 7200.0},
        "rows": [{"agent": "V model, z only", "real": "500 ± 100", "mean": 500.0},
                 {"agent": "full world model, [z, h]", "real": "760 ± 90", "mean": 760.2}]}))
    (res / "takecover_tau_table_cpu").mkdir()
    (res / "takecover_tau_table_cpu" / "results.json").write_text(json.dumps({
        "date": "2026-12-01", "machine": "m", "stage_seconds": {"collect": 3600.0, "sweep-temperature": 5400.0},
        "best_real_mean": 1001.4, "best_real_std": 500.2, "best_tau": 1.15}))
    lines = report.summary_table(res).splitlines()
    assert len(lines) == 4  # header, rule, two experiments (absent ones are skipped)
    tc = next(x for x in lines if x.startswith("| takecover_tau_table_cpu"))
    assert "| 1001 ± 500 at τ 1.15 ✗ | 1,100 | 2.50 h (≤ 2 h ✗) |" in tc
    cr = next(x for x in lines if x.startswith("| carracing_table_cpu"))
    assert "| 760 ± 90 ✓ | 750 | 2.10 h (≤ 3 h ✓) |" in cr and "AMD EPYC" in cr  # the z row's 2 h not counted
    assert report.results_section(res).startswith("Headline results")
    # carracing_dream without --finetune: its dream row only; with it, the fine-tuned row too, whose pipeline is the
    # whole experiment while the dream row's leaves out the fine-tuning
    dream = {"date": "d", "machine": "m", "stage_seconds": {
        "collect": 3600.0, "train-controller dream:C trained in the dream, [z, h]": 360.0,
        "evaluate dream:C trained in the dream, [z, h]": 360.0},
        "rows": [{"agent": "C trained in the dream, [z, h]", "real": "741 ± 217", "mean": 741.0}]}
    (res / "carracing_dream_cpu").mkdir()
    (res / "carracing_dream_cpu" / "results.json").write_text(json.dumps(dream))
    lines = [x for x in report.summary_table(res).splitlines() if x.startswith("| carracing_dream_cpu")]
    assert len(lines) == 1 and "| 741 ± 217 ✓ | 700 | 1.20 h |" in lines[0]
    # with --taus the fine-tuning starts from the best of the sweep's Cs: the sweep and that choice are in its pipeline;
    # other rows (an ES seed of the dream row) are in neither
    dream["stage_seconds"].update({"train-controller finetune_tau1.15:" + FINETUNE_TITLE: 3600.0,
                                   "sweep-temperature": 1800.0, "choose-start tau 1.15": 360.0,
                                   "train-controller dream_seed1:C trained in the dream, [z, h], ES seed 1": 7200.0})
    dream["rows"].append({"agent": FINETUNE_TITLE, "real": "770 ± 150", "mean": 770.0})
    (res / "carracing_dream_cpu" / "results.json").write_text(json.dumps(dream))
    lines = [x for x in report.summary_table(res).splitlines() if x.startswith("| carracing_dream_cpu")]
    assert len(lines) == 2
    assert "| 770 ± 150 ✓ | 750 | 2.80 h (≤ 3 h ✓) |" in lines[0] and "| 741 ± 217 ✓ | 700 | 1.20 h |" in lines[1]
