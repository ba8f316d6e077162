"""Benchmark commands: argument parsing and the shape of what they report (timings themselves are not tested)."""

import argparse

import pytest

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
