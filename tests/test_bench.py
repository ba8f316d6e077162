"""Benchmark commands: argument parsing, where records go, the scaling sweeps, and the shape of what they report
(timings themselves are not tested)."""

import argparse
import json
from pathlib import Path

import pytest

from wm_jax.bench import dream as bench_dream
from wm_jax.bench import evaluate as bench_evaluate
from wm_jax.bench import scaling


def test_parse_layouts():
    assert bench_evaluate.parse_layouts("2x2, 4X2") == [(2, 2), (4, 2)]
    for bad in ("2", "2x", "0x2", "2x2x2", "ax2", ","):
        with pytest.raises(ValueError, match="layout"):
            bench_evaluate.parse_layouts(bad)


def test_evaluate_bench_times_every_layout_and_reports_the_fastest(monkeypatch):
    monkeypatch.setattr(bench_evaluate, "_policy_alone", lambda spec, params, n: {"policy_alone_batch": n})
    parser = argparse.ArgumentParser()
    bench_evaluate.add_arguments(parser)
    args = parser.parse_args(["--env", "carracing", "--layouts", "1x2,2x1", "--episodes", "4", "--max-steps", "8",
                              "--groups", "1", "--repeats", "1", "--factory", "wm_jax.envs.vector:make_toy_env"])
    out = bench_evaluate.measure(args)
    assert set(out["by_layout"]) == {"1x2", "2x1"}
    best = max(out["by_layout"].values(), key=lambda r: r["frames_per_s"])
    assert out["frames_per_s"] == best["frames_per_s"] > 0
    assert out["workers"] * out["envs_per_worker"] == out["slots"] == 2
    assert out["policy_alone_batch"] == out["slots"]


def test_dream_bench_of_a_tau_sweep_counts_the_same_episodes_on_fewer_slots_when_compacted(monkeypatch):
    """--taus with one end probability per τ (a sweep whose dreams end at different rates): compaction across τ
    plays the same episodes (same lived steps) on fewer computed slot-steps, and the record says what ran."""
    import wm_jax.sysinfo

    monkeypatch.setattr(wm_jax.sysinfo, "peak_flops", lambda: 1e9)
    parser = argparse.ArgumentParser()
    bench_dream.add_arguments(parser)
    base = ["--env", "takecover", "--pop", "4", "--trials", "2", "--steps", "60", "--hidden", "8",
            "--chunk", "5", "--repeats", "1", "--taus", "0.5,1,1.5", "--end-prob", "0.002,0.05,0.1"]
    # sharded over the 4 forced host devices: this hung ~1 run in 4 until CMA-ES's eigh stopped being one batched
    # LAPACK call (wm_jax/es.py, ESProgram.__init__; test_es checks the compiled program)
    plain = bench_dream.measure(parser.parse_args(base))
    packed = bench_dream.measure(parser.parse_args([*base, "--compact", "2", "--compact-ratio", "0.75"]))
    assert plain["taus"] == [0.5, 1.0, 1.5] and plain["end_prob"] == [0.002, 0.05, 0.1]
    assert packed["episode_steps"] == plain["episode_steps"] < plain["slot_steps"] == 3 * 4 * 2 * 60
    assert packed["slot_steps"] < plain["slot_steps"] and packed["compact_ratio"] == 0.75
    with pytest.raises(ValueError, match="one per"):
        bench_dream.measure(parser.parse_args([*base[:-1], "0.1,0.2"]))


# ---------------------------------------------------------------- where records go

@pytest.fixture
def fake_peak(monkeypatch, tmp_path):
    """`wm-jax bench peak` with a canned measurement, and the default and record folders moved under tmp_path."""
    import wm_jax.sysinfo
    from wm_jax import bench
    from wm_jax.bench import peak

    monkeypatch.setattr(peak, "measure", lambda args: {"peak_gflops": 1.5})
    monkeypatch.setattr(wm_jax.sysinfo, "conditions", lambda: {"device": {"backend": "cpu"}})
    monkeypatch.setattr(bench, "DEFAULT_DIR", tmp_path / "scratch")
    monkeypatch.setattr(bench, "RECORD_DIR", tmp_path / "benchmarks")
    return tmp_path


def test_bench_writes_outside_git_by_default_and_the_tracked_record_only_with_record(fake_peak, capsys):
    from wm_jax.cli import main

    tmp_path = fake_peak
    assert main(["bench", "peak"]) == 0
    rec = json.loads((tmp_path / "scratch" / "peak.json").read_text())
    assert rec["peak_gflops"] == 1.5 and set(rec["provenance"]) >= {"commit", "dirty", "backend"}
    assert not (tmp_path / "benchmarks").exists()
    assert main(["bench", "peak", "--record"]) == 0  # after the stage, where the stage's own options go
    assert (tmp_path / "benchmarks" / "peak.json").exists()
    assert main(["bench", "peak", "--out", str(tmp_path / "x" / "mine.json")]) == 0
    assert (tmp_path / "x" / "mine.json").exists() and not list((tmp_path / "x").glob("*.tmp*"))
    assert main(["bench", "peak", "--record", "--out", str(tmp_path / "y.json")]) == 2
    assert "exclude each other" in capsys.readouterr().err


def test_the_default_bench_output_is_never_a_tracked_file():
    from wm_jax import bench

    out = bench.output_path("dream", "takecover", None, False)
    assert out == Path("checkpoints/bench/dream_takecover.json")  # git-ignored
    assert bench.output_path("dream_scaling", "carracing", None, True) == Path(
        "benchmarks/dream_scaling_carracing.json")


# ---------------------------------------------------------------- scaling sweeps

def test_sweep_stops_at_the_first_width_that_runs_out_of_memory_and_finds_saturation():
    rates = {64: 100.0, 128: 170.0, 256: 190.0, 512: 200.0}

    def one(w):
        if w == 1024:
            raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 9 GiB")
        return {"steps_per_s": rates[w], "seconds": 0.1}

    widths = scaling.widths_to_try("", 4096)
    assert widths == [64, 128, 256, 512, 1024, 2048, 4096]
    points, why = scaling.sweep(widths, one, max_seconds=10, seconds_key="seconds")
    assert [p["width"] for p in points] == [64, 128, 256, 512] and "out of memory at width 1024" in why
    assert all(p["peak_bytes"] > 0 for p in points)
    sat = scaling.saturation(points, "steps_per_s")
    assert sat["width"] == 256 and sat["best_width"] == 512  # 190 >= 0.9 * 200 = 180 > 170
    def broken(w):
        raise ValueError("a bug, not memory")

    with pytest.raises(ValueError, match="not memory"):  # any other error is a failure, not the end of the sweep
        scaling.sweep([64], broken, 10, "seconds")


def test_sweep_stops_after_a_width_slower_than_max_seconds():
    points, why = scaling.sweep([64, 128, 256], lambda w: {"seconds": w / 64}, max_seconds=1.5, seconds_key="seconds")
    assert [p["width"] for p in points] == [64, 128] and "--max-seconds" in why


def test_wall_time_estimate_interpolates_the_measured_rates_log_log():
    record = {"points": [{"width": 64, "dream_steps_per_s": 100.0}, {"width": 256, "dream_steps_per_s": 400.0}]}
    assert scaling.rate_at(record["points"], "dream_steps_per_s", 128) == pytest.approx(200.0)  # sqrt(100 * 400)
    assert scaling.rate_at(record["points"], "dream_steps_per_s", 1024) == 400.0  # past the widest: saturated
    est = scaling.estimate_seconds(record, width=128, steps=1000, generations=36)
    assert est["seconds_per_generation"] == pytest.approx(128 * 1000 / 200.0)
    assert est["hours"] == pytest.approx(640 * 36 / 3600)


def test_dream_scaling_measures_each_width_and_draws_the_curve(monkeypatch, tmp_path):
    import wm_jax.sysinfo

    monkeypatch.setattr(wm_jax.sysinfo, "peak_flops", lambda: 1e9)
    parser = argparse.ArgumentParser()
    bench_dream.add_arguments(parser)
    args = parser.parse_args(["--scaling", "--env", "takecover", "--hidden", "8", "--trials", "4", "--steps", "20",
                              "--chunk", "5", "--repeats", "1", "--widths", "64,128", "--unroll", "2",
                              "--single-device"])
    out = bench_dream.measure(args)
    assert out["stage"] == "dream_scaling" and out["unroll"] == 2 and out["stopped_by"] == "last width"
    assert [p["width"] for p in out["points"]] == [64, 128] and [p["population"] for p in out["points"]] == [16, 32]
    for p in out["points"]:
        assert p["slot_steps"] == p["width"] * 20 and p["dream_steps_per_s"] > 0 and p["program_bytes"] > 0
    assert out["saturation"]["width"] in (64, 128)
    png = bench_dream.figure({**out, "device": {"backend": "cpu", "device_kind": "cpu"}, "time": "t"},
                             tmp_path / "curve.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="multiple of trials"):
        bench_dream.measure(parser.parse_args(["--scaling", "--trials", "4", "--widths", "66", "--hidden", "8"]))


def test_model_scaling_runs_the_stage_benchmark_at_each_batch_width(monkeypatch):
    from wm_jax.bench import mdnrnn as bench_mdnrnn

    seen = []

    def fake(args):
        seen.append((args.batch, args.seq_len, args.min_seconds))
        return {"timesteps_per_s": 1000.0 * args.batch, "step_seconds": 0.01, "fraction_of_peak": 0.1}

    monkeypatch.setattr(bench_mdnrnn, "measure", fake)
    from wm_jax.cli.commands import parse_stage_options

    parser = argparse.ArgumentParser()
    scaling.add_arguments(parser)
    parser.set_defaults(parse_stage_options=parse_stage_options)  # as the CLI hands it over
    out = scaling.measure(parser.parse_args(["--model", "mdnrnn", "--widths", "64,128", "--model-args",
                                             "--seq-len 30"]))
    assert seen == [(64, 30, 1.0), (128, 30, 1.0)]
    assert out["stage"] == "mdnrnn_scaling" and out["saturation"]["width"] == 128



def test_dream_bench_times_each_unroll_in_turn_on_the_same_episodes():
    parser = argparse.ArgumentParser()
    bench_dream.add_arguments(parser)
    out = bench_dream.measure(parser.parse_args(["--env", "carracing", "--hidden", "8", "--pop", "4", "--trials", "2",
                                                 "--steps", "10", "--chunk", "5", "--repeats", "2",
                                                 "--unrolls", "1,2", "--single-device"]))
    assert out["stage"] == "dream_unroll" and set(out["by_unroll"]) == {"1", "2"}
    for r in out["by_unroll"].values():
        assert r["slot_steps"] == 4 * 2 * 10 and len(r["rounds"]) == 2 and r["dream_steps_per_s"] > 0


def test_device_check_script_is_valid_bash_and_names_every_record():
    import subprocess

    script = Path(__file__).parents[1] / "scripts" / "device_check.sh"
    subprocess.run(["bash", "-n", str(script)], check=True)
    text = script.read_text()
    for record in ("dream_takecover", "tau_sweep_20", "dream_scaling_takecover", "mdnrnn_scaling", "vae_scaling",
                   "sharding_tests", "device_check.json"):
        assert record in text
