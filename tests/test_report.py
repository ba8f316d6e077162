"""README tables are generated from benchmark/experiment JSON, never typed by hand."""

import json
import re
from pathlib import Path

import pytest

from wm_jax import report, report_figure, results_index
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


def _run(tmp_path, name, rec, entry=None, archive=False):
    """A run folder results/[archive/]<name>/ with `rec` as its results.json."""
    d = tmp_path / "results" / ("archive" if archive else "") / name
    d.mkdir(parents=True)
    (d / "results.json").write_text(json.dumps(rec))
    return d


def test_run_readme_holds_what_the_readme_printed_per_run(tmp_path):
    """results/<run>/README.md: header, overrides, note (note.md wins over results.json's), table, stage times and
    the dream-check table, in that order."""
    d = _run(tmp_path, "quick_quick", {"experiment": "quick_quick", "scale": "quick", "date": "2026-11-21",
                                       "machine": "2 cores", "wall_time_h": 0.2,
                                       "stage_seconds": {"collect": 90.0, "train-controller z:V, z": 1500}})
    (d / "table.md").write_text("| agent | real |\n|---|---|\n| random | 210 ± 108 |\n")

    def page():
        runs = report.load_runs(tmp_path / "results")
        return report.run_readme(runs[0], tmp_path / "results", runs, {"backend": "cpu"})

    out = page()
    assert out.startswith("# quick_quick\n") and "not in results/index.yaml" in out
    assert "Scale `quick`, 2026-11-21, cpu · 2 cores, wall time 0.20 h." in out and "| random | 210 ± 108 |" in out
    assert "Stage wall times (min): collect 1.5 · train-controller z 25.0" in out
    assert "dream-check" not in out and "overrides" not in out and "Plots:" not in out
    rec = json.loads((d / "results.json").read_text())
    (d / "results.json").write_text(json.dumps({**rec, "overrides": ["iterate.rounds=0", "es.seed=1"],
                                                "note": "Measured before the iterate section existed."}))
    assert "0.20 h, overrides `iterate.rounds=0 es.seed=1`.\n\nMeasured before the iterate section existed." in page()
    (d / "note.md").write_text("A reading that survives reruns.\n")
    assert "es.seed=1`.\n\nA reading that survives reruns.\n\n| agent | real |" in page()  # note.md wins
    (d / "dream_check.json").write_text(json.dumps({
        "env": "takecover", "done_mode": "threshold", "episodes": 64, "max_steps": 2100,
        "scores": {"1.0": {"stay": {"mean": 84.7, "std": 29.9}, "sweep50": {"mean": 1345.9, "std": 247.6}},
                   "1.15": {"stay": {"mean": 82.2, "std": 29.7}, "sweep50": {"mean": 340.6, "std": 215.7}}}}))
    (d / "plots").mkdir()
    (d / "plots" / "vae_loss.png").write_bytes(b"png")
    out = page()
    assert "64 dream episodes each, done rule `threshold`" in out and "| τ | stay | sweep50 |" in out
    assert "| 1.00 | 85 ± 30 | 1,346 ± 248 |" in out and "| 1.15 | 82 ± 30 | 341 ± 216 |" in out
    assert out.endswith("Plots: [vae_loss](plots/vae_loss.png)\n")


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
    tc = next(x for x in lines if x.startswith("| [takecover_tau_table_cpu](results/takecover_tau_table_cpu/)"))
    assert "| 1001 ± 500 at τ 1.15 ✗ | 1,100 | 2.50 h (≤ 2 h ✗) |" in tc
    cr = next(x for x in lines if x.startswith("| [carracing_table_cpu]"))
    assert "| 760 ± 90 ✓ | 750 | 2.10 h (≤ 3 h ✓) |" in cr and "AMD EPYC" in cr  # the z row's 2 h not counted
    # carracing_dream without --finetune: its dream row only; with it, the fine-tuned row too, whose pipeline is the
    # whole experiment while the dream row's leaves out the fine-tuning
    dream = {"date": "d", "machine": "m", "stage_seconds": {
        "collect": 3600.0, "train-controller dream:C trained in the dream, [z, h]": 360.0,
        "evaluate dream:C trained in the dream, [z, h]": 360.0},
        "rows": [{"agent": "C trained in the dream, [z, h]", "real": "741 ± 217", "mean": 741.0}]}
    (res / "carracing_dream_cpu").mkdir()
    (res / "carracing_dream_cpu" / "results.json").write_text(json.dumps(dream))
    lines = [x for x in report.summary_table(res).splitlines() if x.startswith("| [carracing_dream_cpu]")]
    assert len(lines) == 1 and "| 741 ± 217 ✓ | 700 | 1.20 h |" in lines[0]
    # with --taus the fine-tuning starts from the best of the sweep's Cs: the sweep and that choice are in its pipeline;
    # other rows (an ES seed of the dream row) are in neither
    dream["stage_seconds"].update({"train-controller finetune_tau1.15:" + FINETUNE_TITLE: 3600.0,
                                   "sweep-temperature": 1800.0, "choose-start tau 1.15": 360.0,
                                   "train-controller dream_seed1:C trained in the dream, [z, h], ES seed 1": 7200.0})
    dream["rows"].append({"agent": FINETUNE_TITLE, "real": "770 ± 150", "mean": 770.0})
    (res / "carracing_dream_cpu" / "results.json").write_text(json.dumps(dream))
    lines = [x for x in report.summary_table(res).splitlines() if x.startswith("| [carracing_dream_cpu]")]
    assert len(lines) == 2
    assert "| 770 ± 150 ✓ | 750 | 2.80 h (≤ 3 h ✓) |" in lines[0]
    assert "| 741 ± 217 ✓ | 700 | 1.20 h |" in lines[1]


def _fake_tree(tmp_path):
    """A tiny results tree: a headline τ table, an ablation of it, a CarRacing table and its ablation, and a
    superseded run under archive/, with the index.yaml that names them."""
    tau = {"date": "2026-12-01", "machine": "2 cores, x86_64, AMD EPYC", "wall_time_h": 0.5, "episodes": 100,
           "overrides": ["es.trials=16"], "best_real_mean": 900.0, "best_real_std": 400.0, "best_tau": 1.15}
    _run(tmp_path, "tc", tau)
    _run(tmp_path, "tc_seed1", {**tau, "date": "2026-12-02",
                                "overrides": ["es.trials=16", "name=tc_seed1", "es.seed=1"], "best_real_mean": 600.0,
                                "best_real_std": 300.0, "best_tau": 1.0, "peak_gflops": 47.4,
                                "device": {"backend": "gpu", "device_kind": "NVIDIA H100", "device_count": 1}})
    car = {"date": "2026-12-03", "machine": "m", "episodes": 100, "overrides": ["iterate.rounds=2", "es.trials=4"],
           "rows": [{"agent": "C trained in the dream, [z, h]", "real": "741 ± 217", "mean": 741.0},
                    {"agent": "C trained in the dream, [z, h], ES seed 1", "real": "827 ± 130", "mean": 827.0}]}
    _run(tmp_path, "car", car)
    _run(tmp_path, "car_noiter", {**car, "overrides": car["overrides"] + ["iterate.rounds=0"],
                                  "rows": [{"agent": "C trained in the dream, [z, h]", "real": "-59 ± 8",
                                            "mean": -59.0}]})
    _run(tmp_path, "tc_v1", {**tau, "date": "2026-11-20", "episodes": 20}, archive=True)
    (tmp_path / "results" / "index.yaml").write_text(
        "defaults: {backend: cpu}\n"
        "runs:\n"
        "  tc: {status: headline, lever: the default, peak_gflops: 203}\n"
        "  tc_seed1: {status: ablation, baseline: tc, lever: another ES seed}\n"
        "  car: {status: headline}\n"
        "  car_noiter: {status: ablation, baseline: car}\n"
        "  tc_v1: {status: superseded, baseline: tc}\n")
    return tmp_path / "results"


def test_index_rows_from_a_fake_results_tree(tmp_path):
    results = _fake_tree(tmp_path)
    lines = report.results_readme(results).splitlines()
    rows = {line.split("]")[0][3:]: line for line in lines if line.startswith("| [")}
    assert list(rows) == ["tc", "tc_seed1", "car", "car_noiter", "tc_v1"]  # index.yaml's order
    # headline: its own overrides, the lever, best real at its τ, no Δ; the machine with index.yaml's peak
    assert rows["tc"] == ("| [tc](tc/) | headline | – | `es.trials=16`; the default | 900 ± 400 (τ 1.15) | – | "
                          "100 | 2026-12-01 | cpu · 2 cores, x86_64, AMD EPYC · 203 GFLOP/s | 0.50 h |")
    # ablation: only the override that differs (the name dropped); Δ = 600 - 900 ± sqrt(300²/100 + 400²/100) = 50;
    # results.json's device and peak win over index.yaml's defaults
    assert rows["tc_seed1"] == ("| [tc_seed1](tc_seed1/) | ablation | [tc](tc/) | `es.seed=1`; another ES seed | "
                                "600 ± 300 (τ 1) | -300 ± 50 | 100 | 2026-12-02 | gpu · 1 × NVIDIA H100 · "
                                "2 cores, x86_64, AMD EPYC · 47 GFLOP/s | 0.50 h |")
    # named rows: the baseline's row of the same name (741), not its best (827); sqrt(8² + 217²) / 10 = 21.7
    assert "| `iterate.rounds=0` | -59 ± 8 (C trained in the dream, [z, h]) | -800 ± 22 | 100 |" in rows["car_noiter"]
    assert "| 827 ± 130 (C trained in the dream, [z, h], ES seed 1) | – |" in rows["car"]
    # archived: linked under archive/, 20 episodes: SE sqrt(400²/20 + 400²/100) = 98
    assert rows["tc_v1"].startswith("| [tc_v1](archive/tc_v1/) | superseded | [tc](tc/) | – | 900 ± 400 (τ 1.15) | "
                                    "+0 ± 98 | 20 | 2026-11-20 |")
    page = report.run_readme(report.load_runs(results)[-1], results, report.load_runs(results), {})
    assert "Status **superseded**, baseline [tc](../../tc/)." in page


def test_index_refuses_inconsistent_status_and_baselines(tmp_path):
    results = _fake_tree(tmp_path)
    index = results / "index.yaml"
    good = index.read_text()
    index.write_text(good.replace("tc_seed1: {status: ablation", "tc_seed1: {status: superseded"))
    with pytest.raises(ValueError, match="'tc_seed1' has status 'superseded' but is not under results/archive/"):
        report.load_runs(results)
    index.write_text(good.replace("tc_v1: {status: superseded", "tc_v1: {status: ablation"))
    with pytest.raises(ValueError, match="'tc_v1' has status 'ablation' but is under results/archive/"):
        report.load_runs(results)
    index.write_text(good.replace("baseline: car}", "baseline: cars}"))
    with pytest.raises(ValueError, match="runs.car_noiter.baseline 'cars' names no run folder"):
        report.load_runs(results)
    index.write_text(good.replace("car: {status: headline}", "car: {status: best}"))
    with pytest.raises(ValueError, match="runs.car.status is 'best'; expected one of headline, ablation, superseded"):
        report.load_runs(results)
    index.write_text(good)
    _run(tmp_path, "car", {}, archive=True)
    with pytest.raises(ValueError, match="two run folders named 'car'"):
        report.load_runs(results)


def test_overrides_diff_keeps_the_last_value_and_names_what_only_the_baseline_sets():
    base = {"overrides": ["es.trials=4", "es.generations=80", "name=a"]}
    run = {"overrides": ["es.trials=4", "es.seed=1", "es.seed=2", "name=b"]}
    assert report.overrides_diff(run, base) == "es.seed=2 es.generations=(config)"
    assert report.overrides_diff(run, None) == "es.trials=4 es.seed=2"
    assert report.overrides_diff(base, base) == ""


MARKERS = ("headline", "takecover", "carracing", "dream", "atari", "bench", "cli")


def _readme(tmp_path, bodies):
    text = "# t\n\nfree text  with trailing spaces  \n| a | b |\n"
    for name, body in zip(MARKERS, bodies):
        text += f"\n## {name}\n\nprose é ✓ before\n<!-- {name}:start -->\n{body}\n"
        text += f"<!-- {name}:end -->\nafter {name}\n"
    (tmp_path / "README.md").write_text(text + "\nno final newline")
    return text + "\nno final newline"


def test_readme_rewrite_changes_only_the_marked_sections(tmp_path):
    _fake_tree(tmp_path)
    (tmp_path / "benchmarks").mkdir()
    original = _readme(tmp_path, [f"stale {m}" for m in MARKERS])
    out = report.generated_texts(tmp_path)[tmp_path / "README.md"]
    blank = re.compile(r"(<!-- (\w+):start -->\n).*?(<!-- \2:end -->)", re.DOTALL)
    assert blank.sub(r"\1\3", out) == blank.sub(r"\1\3", original)  # everything outside the markers, byte for byte
    assert "stale" not in out and "| [tc](results/tc/) |" not in out  # tc is not one of the headline experiments
    assert "[results/car](results/car/) (headline, 2026-12-03, cpu · m)" not in out  # car has no table.md
    assert "| `wm-jax collect` |" in out and "| `wm-jax evaluate` |" in out
    del_marker = original.replace("<!-- dream:end -->", "")
    (tmp_path / "README.md").write_text(del_marker)
    with pytest.raises(ValueError, match="dream:start"):
        report.generated_texts(tmp_path)


def test_check_reports_stale_files_and_writes_nothing(tmp_path, capsys):
    _fake_tree(tmp_path)
    (tmp_path / "benchmarks").mkdir()
    _readme(tmp_path, ["old"] * len(MARKERS))
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    assert report.main(["--root", str(tmp_path), "--check"]) == 1
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
    err = capsys.readouterr().err
    assert f"stale: {tmp_path / 'README.md'}" in err and f"stale: {tmp_path / 'results' / 'README.md'}" in err
    assert f"stale: {tmp_path / 'results' / 'archive' / 'tc_v1' / 'README.md'}" in err
    assert report.main(["--root", str(tmp_path)]) == 0
    assert (tmp_path / "results" / "tc_seed1" / "README.md").read_text().startswith("# tc_seed1\n")
    assert report.main(["--root", str(tmp_path), "--check"]) == 0


def test_takecover_figure_is_drawn_once_and_not_rewritten_when_unchanged(tmp_path):
    results = _fake_tree(tmp_path)
    assert not report.plot_takecover(results, tmp_path / "fig.png")  # no takecover_tau_table_cpu: nothing drawn
    rows = [{"agent": "random policy", "tau": None, "real": "219 ± 98"},
            {"agent": "C trained in the dream", "tau": "1.00", "virtual": "1,135", "real": "871 ± 579"},
            {"agent": "C trained in the dream", "tau": "1.15", "virtual": "1162", "real": "800 ± 466"}]
    _run(tmp_path, "takecover_tau_table_cpu", {"episodes": 100, "rows": rows, "random_mean": 219.0,
                                               "blind_mean": 764.0, "best_real_mean": 871.0, "best_real_std": 579.0,
                                               "best_tau": 1.0})
    assert report_figure._tau_rows({"rows": rows}) == [(1.0, 1135.0, 871.0, 579.0), (1.15, 1162.0, 800.0, 466.0)]
    assert report.plot_takecover(results, tmp_path / "fig.png")
    assert (tmp_path / "fig.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not report.plot_takecover(results, tmp_path / "fig.png")  # same bytes: the file is left alone


def test_the_committed_readme_and_results_index_are_up_to_date():
    """`python -m wm_jax.report --check` on this checkout: fails when a results.json, benchmark JSON, index.yaml or
    the CLI's COMMANDS changed without rerunning `python -m wm_jax.report`."""

    assert report.main(["--root", str(Path(__file__).resolve().parents[1]), "--check"]) == 0


def test_report_imports_no_jax(tmp_path):
    """The report runs where JAX is not installed or would be slow to start: it reads JSON and YAML only."""
    import os
    import subprocess
    import sys

    _fake_tree(tmp_path)
    (tmp_path / "benchmarks").mkdir()
    _readme(tmp_path, ["old"] * len(MARKERS))
    code = ("import sys; from wm_jax import report; assert report.main(['--root', sys.argv[1]]) == 0; "
            "assert 'jax' not in sys.modules and 'jaxlib' not in sys.modules, 'report imported JAX'")
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    subprocess.run([sys.executable, "-c", code, str(tmp_path)], check=True, env=env, capture_output=True)
    assert "| [tc](results/tc/)" not in (tmp_path / "README.md").read_text()
    assert (tmp_path / "results" / "README.md").exists()


def test_bench_table_names_the_pytorch_rate_of_any_stage(tmp_path):
    rec = {"stage": "mdnrnn", "timesteps_per_s": 30_000.0, "torch_timesteps_per_s": 20_000.0, "ratio_vs_torch": 1.5,
           "device": {"backend": "cpu", "device_count": 1, "cpu_count": 2}, "time": "2026-12-01T10:00:00"}
    (tmp_path / "mdnrnn.json").write_text(json.dumps(rec))
    row = report.bench_table(tmp_path).splitlines()[2]
    assert "| 30,000 |" in row and "1.50× PyTorch (20,000/s)" in row


def test_summary_table_has_one_row_per_atari_game_run(tmp_path):
    """experiments/atari100k.py's results.json: a headline row per game it ran (Pong and Freeway against SimPLe's
    score, Boxing and Breakout without a target), its wall time the sum of that game's seeds."""
    res = tmp_path / "results"
    (res / "atari100k_cpu").mkdir(parents=True)
    (res / "atari100k_cpu" / "results.json").write_text(json.dumps({
        "date": "2026-12-06", "machine": "m", "stage_seconds": {"pong s0 collect": 99999.0},
        "per_game": {"pong": {"means": [14.0, 11.0], "mean": 12.5, "real_steps": [99000, 98000], "wall_h": [1.0, 1.5]},
                     "boxing": {"means": [9.0], "mean": 9.0, "real_steps": [97000], "wall_h": [1.25]}}}))
    lines = [x for x in report.summary_table(res).splitlines() if x.startswith("| [atari100k_cpu]")]
    assert len(lines) == 2
    assert "Pong" in lines[0] and "| 12.5 (seeds 14.0 / 11.0; ≤ 99,000 real steps, ≤ 1.50 h per seed) ✗ | 12.8 | 2.50 h |" \
        in lines[0]
    assert "Boxing" in lines[1] and "| 9.0 (seeds 9.0; ≤ 97,000 real steps, ≤ 1.25 h per seed) | – | 1.25 h |" in lines[1]


def test_best_real_of_an_atari_table_is_its_game_or_its_best_human_normalised_game():
    """The index's "best real" of atari100k_*: one game's mean over seeds (std across seeds), of several games the
    one with the best human-normalised score, and a baseline's game of the same name for the Δ column."""
    pong = {"means": [-20.2], "stds": [1.1], "mean": -20.2, "human_normalised": 0.014}
    freeway = {"means": [21.7, 21.4], "stds": [1.5, 1.6], "mean": 21.55, "human_normalised": 0.728}
    assert report.best_real({"per_game": {"pong": pong}}) == (-20.2, 1.1, "pong")
    both = {"per_game": {"pong": pong, "freeway": freeway}}
    mean, std, label = report.best_real(both)
    assert (mean, label) == (21.55, "freeway, best of 2 games") and std == pytest.approx(0.15)
    plainv = report.Run("plainv", Path("x"), {"per_game": {"pong": {**pong, "means": [-20.8], "mean": -20.8}},
                                              "episodes": 100}, {})
    base = report.Run("atari", Path("y"), {**both, "episodes": 100}, {})
    assert results_index._delta(plainv, base) == "-1 ± 0"  # Pong against Pong, not against Freeway's 21.55
