"""The command line as a user meets it: every command's flags documented, the common flags everywhere,
one-line errors with exit 2, benchmark output outside version control unless recorded."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from wm_jax import __version__
from wm_jax.bench import STAGES, add_stage_options, output_path
from wm_jax.cli import build_parser, main
from wm_jax.cli.commands import COMMANDS


def subparsers() -> dict[str, argparse.ArgumentParser]:
    top = build_parser()
    action = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def undocumented(parser: argparse.ArgumentParser) -> list[str]:
    return [a.dest for a in parser._actions if not isinstance(a, argparse._HelpAction) and not a.help]


def test_every_command_takes_the_common_flags_and_documents_every_flag():
    subs = subparsers()
    assert set(subs) == set(COMMANDS)
    for name, p in subs.items():
        dests = {a.dest for a in p._actions}
        assert {"no_progress", "no_plots"} <= dests, name
        assert ("config" in dests) == COMMANDS[name].config, name
        assert undocumented(p) == [], f"wm-jax {name}: flags without help"


@pytest.mark.parametrize("stage", STAGES)
def test_every_benchmark_option_is_documented(stage):
    p = argparse.ArgumentParser()
    add_stage_options(stage, p)
    assert undocumented(p) == [], f"wm-jax bench {stage}: options without help"


def test_version(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"wm-jax {__version__}"


def test_a_missing_prerequisite_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["encode", "--config", "configs/quick.yaml", f"root={tmp_path}", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("wm-jax encode: missing prerequisite:") and "train-vae" in err


def test_an_unknown_config_key_is_one_line_naming_the_key(capsys):
    assert main(["train-vae", "--config", "configs/quick.yaml", "vae.learnig_rate=0.1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "config error" in err and "vae.learnig_rate" in err


def test_bench_takes_out_after_the_stage_and_writes_outside_git_by_default(tmp_path, capsys):
    out = tmp_path / "peak.json"
    assert main(["bench", "peak", "--n", "64", "--out", str(out)]) == 0
    rec = json.loads(out.read_text())
    assert rec["stage"] == "peak" and rec["matmul_n"] == 64 and rec["peak_gflops"] > 0
    assert output_path("dream", "takecover", None, record=False) == Path("checkpoints/bench/dream_takecover.json")
    assert output_path("dream", None, None, record=True) == Path("benchmarks/dream.json")
    assert output_path("vae", None, tmp_path / "x.json", record=False) == tmp_path / "x.json"
    with pytest.raises(ValueError, match="exclude"):
        output_path("vae", None, tmp_path / "x.json", record=True)


def test_experiments_write_into_the_run_folder_unless_recorded(tmp_path):
    from wm_jax.pipeline import Experiment

    exp = Experiment("q", "configs/quick.yaml", [f"root={tmp_path}"])
    assert exp.results_dir == tmp_path / "quick" / "results"
    rec = Experiment("q", "configs/quick.yaml", [f"root={tmp_path}"], record=True)
    assert rec.results_dir == Path("results") / "q"
    rec.results_dir.rmdir()  # made by the constructor; nothing else written there


def test_config_show_takes_1e4_and_round_trips(tmp_path, capsys):
    from wm_jax.config import load_config

    assert main(["config", "show", "--config", "configs/quick.yaml", "vae.learning_rate=1e-4", "es.sigma_init=.05"]) == 0
    shown = tmp_path / "shown.yaml"
    shown.write_text(capsys.readouterr().out)
    want = load_config("configs/quick.yaml", ["vae.learning_rate=1e-4", "es.sigma_init=.05"])
    assert load_config(shown) == want and want.vae.learning_rate == 1e-4 and want.es.sigma_init == 0.05


def test_resuming_with_a_result_changing_key_is_refused_naming_it(tmp_path, capsys):
    from wm_jax.config import ConfigError, load_config, save_config
    from wm_jax.stages import train_vae

    cfg = load_config("configs/quick.yaml", [f"root={tmp_path}"])
    save_config(cfg, cfg.run_dir / "vae" / "config.json")  # as a V run left it
    with pytest.raises(ConfigError, match=r"vae\.z_dim: 32 -> 16"):
        train_vae(cfg.replace(**{"vae.z_dim": 16}))
    argv = ["train-vae", "--config", "configs/quick.yaml", f"root={tmp_path}", "vae.z_dim=16", "--no-progress"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "config error" in err and "vae.z_dim" in err and "--allow-config-change" in err
    assert main([*argv, "--allow-config-change"]) == 2  # allowed: it goes on, and stops at the missing data
    assert "missing prerequisite" in capsys.readouterr().err
    # keys other stages own (es.*) and extensions of V's own run do not count for V
    with pytest.raises(FileNotFoundError):
        train_vae(cfg.replace(**{"es.population": 8, "vae.max_steps": 10_000}))
