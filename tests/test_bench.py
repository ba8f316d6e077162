"""Benchmark commands: argument parsing and the shape of what they report (timings themselves are not tested)."""

import argparse

import pytest

from wm_jax.bench import dream as bench_dream
from wm_jax.bench import evaluate as bench_evaluate


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
    with pytest.raises(SystemExit, match="one per"):
        bench_dream.measure(parser.parse_args([*base[:-1], "0.1,0.2"]))
