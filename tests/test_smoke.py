"""A tiny end-to-end run of the whole pipeline on real TakeCover frames, through the experiment runner:
collect → train-vae → encode → train-mdnrnn → one iteration round (C in the dream → real episodes played
by C → encode → M trained further) → sweep-temperature (batched τ) → evaluate (real env) → table."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wm_jax.pipeline import Experiment, StageError, sweep_and_score, tau_table

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from test_api import check_examples  # noqa: E402 -- the README/examples checks, run on this test's programs

TINY = [
    "data.episodes=4", "data.long_hold_episodes=1", "data.sweep_episodes=1", "data.workers=2", "env.max_steps=60",
    "vae.z_dim=8", "vae.max_steps=3", "vae.batch_size=20", "vae.checkpoint_every=2", "vae.holdout_episodes=1",
    "mdnrnn.hidden=16", "mdnrnn.seq_len=20", "mdnrnn.batch_size=4", "mdnrnn.steps=3",
    "mdnrnn.checkpoint_every=2", "mdnrnn.holdout_episodes=1",
    "es.population=4", "es.trials=2", "es.generations=2", "es.dream_max_steps=30", "es.initial_states=4",
    "es.eval_every=1", "es.eval_trials=2", "es.scale_inputs=true",
    "eval.episodes=2", "eval.workers=1",
    "iterate.rounds=1", "iterate.episodes=2", "iterate.mdnrnn_steps=2", "iterate.epsilon=0.5",
]


def git_status() -> str | None:
    """`git status --porcelain` of this checkout (None where git or a checkout is missing)."""
    try:
        proc = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout if proc.returncode == 0 else None


def test_whole_pipeline_on_real_frames(tmp_path, monkeypatch):
    before = git_status()
    exp = Experiment("smoke_quick", "configs/quick.yaml", [f"root={tmp_path / 'runs'}", *TINY])  # not recorded
    out = tau_table(exp, (0.5, 1.0), paper=(0.5,))  # 1.0 plays a τ beyond the paper's table
    assert out == tmp_path / "runs" / "quick" / "results"  # the table lands in the run folder, not in results/
    assert git_status() == before  # the run changed no tracked file and left nothing new in the checkout
    rec = json.loads((out / "results.json").read_text())
    assert [r["agent"] for r in rec["rows"]] == ["random policy", "sweeping left/right every 120 steps (no models)",
                                                 "C trained in the dream",
                                                 "C trained in the dream (τ beyond the paper's table)"]
    assert [r["tau"] for r in rec["rows"][2:]] == ["0.50", "1.00"]
    assert all(r["hazard"] == "– / – / –" for r in rec["rows"])  # real hazard from step 400: the cap is 60
    blind = json.loads((tmp_path / "runs" / "quick" / "eval" / "sweep120" / "results.json").read_text())
    assert blind["policy"] == "sweep120" and rec["blind_mean"] == blind["mean"] and len(blind["returns"]) == 2
    assert rec["best_paper_tau"] == 0.5 and rec["best_tau"] in (0.5, 1.0)
    assert rec["best_real_mean"] >= rec["best_paper_real_mean"]
    run = tmp_path / "runs" / "quick"
    manifest = json.loads((run / "data" / "manifest.json").read_text())
    assert len(manifest["episodes"]) == 6 + 2
    policies = [e["policy"] for e in manifest["episodes"]]
    assert policies.count("repeat20-150") == 1 and policies[5].startswith("sweep")
    agent = [e for e in manifest["episodes"] if e["policy"] == "agent_round0"]  # played by the round's C
    assert [e["index"] for e in agent] == [6, 7] and all(1 <= e["length"] <= 60 for e in agent)
    assert len(json.loads((run / "data" / "latents" / "manifest.json").read_text())["episodes"]) == 8  # encoded
    assert json.loads((run / "mdnrnn" / "DONE").read_text())["step"] == 3 + 2  # M trained on, over all 8
    assert (tmp_path / "runs" / "quick_iter0" / "controller" / "params.npz").exists()
    for tau in ("0.5", "1"):
        res = json.loads((run / "eval" / f"tau_{tau}" / "results.json").read_text())
        assert len(res["returns"]) == 2 and all(1 <= r <= 60 for r in res["returns"])  # 1 per step alive, cap 60
    assert (out / "table.md").read_text().count("\n") == 2 + 4
    assert (out / "plots" / "sweep_curves.png").stat().st_size > 0  # ES curves, one line per τ
    for tau in ("0.5", "1"):  # one decoded dream episode per τ, copied next to the table
        assert (out / "plots" / f"dream_rollout_tau_{tau}.gif").stat().st_size > 0
    for tag in ("random", "tau_0.5", "tau_1"):  # the best and worst real episode of each evaluation
        assert (out / "plots" / f"real_{tag}_best.gif").stat().st_size > 0
        assert (out / "plots" / f"real_{tag}_worst.gif").stat().st_size > 0
    assert set(rec["stage_seconds"]) >= {"collect", "train-vae", "encode", "train-mdnrnn", "sweep-temperature",
                                         "iterate 0 train-controller", "iterate 0 collect-agent",
                                         "iterate 0 train-mdnrnn"}
    assert rec["compile_cache_programs_at_start"] == 0  # the suite runs with the cache off (conftest)
    assert (out / "dream_check.json").exists()  # the fixed policies' dream scores, beside the table
    # rerunning the experiment resumes: every stage is skipped or cached, the table is the same
    again = json.loads((tau_table(Experiment("smoke_quick", "configs/quick.yaml",
                                             [f"root={tmp_path / 'runs'}", *TINY]), (0.5, 1.0), paper=(0.5,),
                                   dream_check=False)
                        / "results.json")
                       .read_text())
    assert again["rows"] == rec["rows"]
    assert not (out / "dream_check.json").exists()  # no check this time: the earlier run's copy is not kept
    # M trained again after the sweep (here: its DONE marker is newer): the sweep's controllers learned an older
    # dream, and the experiment says so instead of scoring them as this M's
    t = time.time() + 60
    os.utime(run / "mdnrnn" / "DONE", (t, t))
    with pytest.raises(StageError, match="older M"):
        tau_table(Experiment("smoke_quick", "configs/quick.yaml", [f"root={tmp_path / 'runs'}", *TINY],
                             results_root=tmp_path / "results"), (0.5, 1.0))
    # The same stages from Python (examples/train_tiny.py, the smoke's sizes: this process's compiled programs
    # serve it), then the README's API example and examples/ on that run (tests/test_api.py).
    check_examples(tmp_path / "api", monkeypatch)


def test_sweep_older_than_a_dynamics_model_is_refused(tmp_path):
    """es.dream_models=2: a second model trained after the sweep also makes its controllers stale."""
    exp = Experiment("stale", "configs/quick.yaml", [f"root={tmp_path / 'runs'}", "es.dream_models=2"],
                     results_root=tmp_path / "results")
    run = exp.cfg.run_dir
    for part in ("sweep", "mdnrnn", "mdnrnn_1"):
        (run / part).mkdir(parents=True)
    for t, marker in ((1, run / "mdnrnn" / "DONE"), (2, run / "sweep" / "DONE"), (3, run / "mdnrnn_1" / "DONE")):
        marker.touch()
        os.utime(marker, (1e9 + t, 1e9 + t))  # M, then the sweep, then model 1
    with pytest.raises(StageError, match="mdnrnn_1 finished after them"):
        sweep_and_score(exp, run, (1.0,))


def test_tau_table_needs_every_paper_tau(tmp_path):
    exp = Experiment("tau_check", "configs/quick.yaml", [f"root={tmp_path / 'runs'}"], results_root=tmp_path)
    with pytest.raises(StageError, match=r"lacks the paper's \[1.15\]"):  # before any stage runs
        tau_table(exp, (0.1, 1.0), paper=(0.1, 1.15))
    assert not (tmp_path / "runs").exists()


CAR_TINY = [
    "data.episodes=2", "data.follow_episodes=1", "data.workers=1", "env.max_steps=40",
    "vae.max_steps=2", "vae.batch_size=16", "vae.checkpoint_every=2", "vae.holdout_episodes=1",
    "mdnrnn.hidden=16", "mdnrnn.seq_len=10", "mdnrnn.batch_size=4", "mdnrnn.steps=2",
    "mdnrnn.checkpoint_every=2", "mdnrnn.holdout_episodes=1",
    "es.population=4", "es.generations=2", "es.real_max_steps=30", "es.eval_every=1", "es.eval_trials=1",
    "es.select_trials=1", "eval.episodes=2", "eval.workers=1", "eval.envs_per_worker=1", "eval.groups=1",
]


def test_carracing_table_full_row_on_real_tracks(tmp_path):
    """The CarRacing table's full row end to end: collect (Brownian + road follower) → V → encode → M → CMA-ES
    in the real env with the final choice → 100-track-style evaluation (here 2) → results with per-track returns."""
    from wm_jax.pipeline_carracing import carracing_table

    exp = Experiment("smoke_car", "configs/carracing_cpu.yaml", [f"root={tmp_path / 'runs'}", *CAR_TINY],
                     results_root=tmp_path / "results")
    out = carracing_table(exp, ("full",))
    rec = json.loads((out / "results.json").read_text())
    (row,) = rec["rows"]
    assert row["agent"] == "full world model, [z, h]" and len(row["returns"]) == 2
    assert abs(sum(row["returns"]) / 2 - row["mean"]) < 0.1  # rounded per-track returns agree with the mean
    sel = row["selection"]
    assert sel["tracks"] == 1 and sel["generation"] in [c["generation"] for c in sel["candidates"]]
    assert max(c["select_return"] for c in sel["candidates"]) == sel["return"]  # the best candidate won
    assert (out / "table.md").read_text().count("\n") == 2 + 1
    assert (out / "plots" / "controller_curves_full.png").stat().st_size > 0

    # carracing_dream --finetune on the same world model: C in the dream, then CMA-ES in the real env from it
    from wm_jax.pipeline_carracing import FINETUNE_TITLE, START_SEED_BASE, carracing_dream

    dream = Experiment("smoke_car_dream", "configs/carracing_cpu.yaml",
                       [f"root={tmp_path / 'runs'}", *CAR_TINY, "es.dream_max_steps=20", "es.trials=2"],
                       results_root=tmp_path / "results")
    out = carracing_dream(dream, ("es.trials=1", "es.sigma_init=0.03", "es.c_mean=0.5"), taus=(1.3,), seeds=(1,))
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert rows[0]["agent"] == "C trained in the dream, [z, h]"
    # --taus with --finetune: the fine-tuning starts from the dream C (τ 1, or τ 1.3) best on held-out tracks
    start = {t: json.loads((tmp_path / "runs" / "carracing_cpu_tau" / "start1" / f"tau_{t:g}" / "results.json")
                           .read_text()) for t in (1.0, 1.3)}
    assert all(r["seed"] == START_SEED_BASE and r["episodes"] == 1 for r in start.values())
    tau = max(start, key=lambda t: start[t]["mean"])
    assert rows[1]["agent"].startswith(f"{FINETUNE_TITLE} (start: the dream's C at τ {tau:g}, best of τ 1, 1.3 on 1 ")
    assert rows[2]["agent"] == "C trained in the dream, [z, h], ES seed 1"  # --seeds 1
    seed1 = json.loads((tmp_path / "runs" / "carracing_cpu_dream_seed1" / "controller" / "config.json").read_text())
    assert seed1["es"]["seed"] == 1 and seed1["es"]["mode"] == "dream"
    rows = rows[:2] + rows[3:]
    assert rows[2]["agent"].startswith("C trained in the dream at τ 1.3, [z, h] (dream return ")  # --taus 1.3
    assert len(rows[2]["returns"]) == 2 and (tmp_path / "runs" / "carracing_cpu_tau" / "sweep" / "tau_1.3").is_dir()
    gens = [c["generation"] for c in rows[1]["selection"]["candidates"]]
    assert 0 in gens and 2 in gens  # the dream's C (generation 0) competed in the final choice
    saved = json.loads((tmp_path / "runs" / f"carracing_cpu_finetune_tau{tau:g}" / "config.json").read_text())
    assert saved["es"]["init"].endswith("carracing_cpu_dream/controller" if tau == 1 else "sweep/tau_1.3")
    assert saved["es"]["c_mean"] == 0.5
