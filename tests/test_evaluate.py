"""Batched agents in the real environments: batched policy, `wm-jax evaluate`, real-env ES.

Tiny untrained models (V's conv stack at its fixed size, z 8, LSTM 16) and short episode caps keep this file
fast; JAX compilations are shared through wm_jax.agent.make_policy's cache (same spec -> one compile per shape).
"""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from wm_jax.agent import AgentSpec, init_agent_params, make_policy
from wm_jax.config import load_config
from wm_jax.envs.vector import VectorEnv
from wm_jax.models import mdnrnn

TINY = ["vae.z_dim=8", "mdnrnn.hidden=16", "eval.vae_untrained=true", "eval.mdnrnn_untrained=true",
        "env.max_steps=30", "eval.envs_per_worker=1", "eval.workers=2"]


# ---------------------------------------------------------------- batched policy == per-env policy


@pytest.fixture(scope="module")
def tiny_takecover():
    spec = AgentSpec("takecover", 8, 16, "zch", True)
    return spec, init_agent_params(1, spec, ctrl_scale=30.0, population=3)


def test_batched_policy_equals_per_env(tiny_takecover):
    spec, params = tiny_takecover
    step = make_policy(spec)
    rng = np.random.default_rng(0)
    n, t_steps = 3, 4
    frames = rng.integers(0, 256, (t_steps, n, 64, 64, 3), dtype=np.uint8)
    first = np.zeros((t_steps, n), bool)
    first[0] = True
    first[2, 1] = True  # slot 1 starts a new episode at t = 2
    index = np.array([2, 0, 1], np.int32)
    state = mdnrnn.zero_state(spec.hidden, (n,))
    singles = [mdnrnn.zero_state(spec.hidden, (1,)) for _ in range(n)]
    saw_nonzero = False
    for t in range(t_steps):
        acts, state = step(params, state, frames[t], first[t], index)
        for i in range(n):
            a_i, singles[i] = step(params, singles[i], frames[t, i:i + 1], first[t, i:i + 1], index[i:i + 1])
            np.testing.assert_allclose(np.asarray(acts[i:i + 1]), np.asarray(a_i), atol=1e-6)
            np.testing.assert_allclose(np.asarray(state.h[i]), np.asarray(singles[i].h[0]), atol=1e-5)
        saw_nonzero |= bool(np.any(np.asarray(acts) != 0))
        assert set(np.unique(np.asarray(acts))) <= {-1.0, 0.0, 1.0}
    assert saw_nonzero  # the controller is not trivially all-zero
    # `first` really resets: slot 1 at t=2 equals a fresh start with the same frame
    fresh, _ = step(params, mdnrnn.zero_state(spec.hidden, (1,)), frames[2, 1:2], np.ones(1, bool), index[1:2])
    again, _ = step(params, mdnrnn.zero_state(spec.hidden, (1,)) ._replace(h=np.ones((1, 16), np.float32)),
                    frames[2, 1:2], np.ones(1, bool), index[1:2])
    np.testing.assert_array_equal(np.asarray(fresh), np.asarray(again))


def test_sampled_z_is_mu_plus_sigma_noise(tiny_takecover):
    """z_sample: C and M read mu + exp(logvar / 2) * noise (the original's real-env z); zero noise gives the
    mean-z agent, other noise other actions; AgentPolicy draws the noise from the episode seed."""
    from wm_jax.agent import AgentPolicy
    from wm_jax.models import controller as ctrl
    from wm_jax.models.vae import encode

    spec, params = tiny_takecover
    sspec = spec._replace(z_sample=True)
    rng = np.random.default_rng(1)
    n = 3
    frames = rng.integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)
    first, index = np.ones(n, bool), np.array([2, 0, 1], np.int32)
    state = mdnrnn.zero_state(spec.hidden, (n,))
    mean_acts, mean_state = make_policy(spec)(params, state, frames, first, index)
    zero_acts, zero_state = make_policy(sspec)(params, state, frames, first, index, np.zeros((n, 8), np.float32))
    np.testing.assert_array_equal(np.asarray(zero_acts), np.asarray(mean_acts))
    np.testing.assert_allclose(np.asarray(zero_state.h), np.asarray(mean_state.h), atol=1e-6)
    noise = rng.standard_normal((n, 8)).astype(np.float32)
    acts, new_state = make_policy(sspec)(params, state, frames, first, index, noise)
    mu, logvar = encode(params.vae, frames)
    z = np.asarray(mu) + np.exp(0.5 * np.asarray(logvar)) * noise  # by hand
    c = jax.tree.map(lambda x: x[index], params.controllers)
    want = jax.vmap(lambda p, zz, s: ctrl.policy(p, zz, s, "zch", "takecover"))(c, z, mdnrnn.zero_state(16, (n,)))
    np.testing.assert_array_equal(np.asarray(acts), np.asarray(want))
    assert not np.allclose(np.asarray(new_state.h), np.asarray(mean_state.h), atol=1e-4)  # the noise reaches M
    with pytest.raises(ValueError, match="needs noise"):
        make_policy(sspec)(params, state, frames, first, index)
    # the host policy: same episode seed -> same noise, whichever slot plays it
    pol_a, pol_b = AgentPolicy(sspec, params), AgentPolicy(sspec, params)
    pol_a.begin(0, 42)
    pol_b.begin(2, 42)
    np.testing.assert_array_equal(pol_a._noise(np.array([0])), pol_b._noise(np.array([2])))
    pol_b.begin(2, 43)
    assert not np.array_equal(pol_a._noise(np.array([0])), pol_b._noise(np.array([2])))


# ---------------------------------------------------------------- evaluate in the real environments


def _make_run(tmp_path, env: str, extra=()):
    from wm_jax.config import save_config
    from wm_jax.models import controller as ctrl
    from wm_jax.io import save_controller

    cfg = load_config(f"configs/{env}.yaml", [f"root={tmp_path}", "name=r", *TINY, *extra])
    save_config(cfg, cfg.run_dir / "config.json")
    p = ctrl.controller_from_config(jax.random.key(3), cfg.controller, env, 8, 16, scale=2.0)
    save_controller(cfg.run_dir / "controller", p, cfg)
    return cfg


@pytest.mark.parametrize("env", ["takecover", "carracing"])
def test_evaluate_two_episodes_real_env(tmp_path, env):
    from wm_jax.cli import main

    cfg = _make_run(tmp_path, env)
    rc = main(["evaluate", "--run", str(cfg.run_dir), "--episodes", "2", "--seed", "5", "--no-progress"])
    assert rc == 0
    res = json.loads((cfg.run_dir / "eval" / "results.json").read_text())
    assert res["episodes"] == 2 and len(res["returns"]) == 2 and res["seeds"] == [5, 6]
    assert all(1 <= n <= 30 for n in res["lengths"])
    assert res["mean"] == pytest.approx(np.mean(res["returns"])) and res["std"] == pytest.approx(np.std(res["returns"]))
    assert (cfg.run_dir / "eval" / "best.gif").stat().st_size > 0
    assert (cfg.run_dir / "eval" / "worst.gif").exists()
    if env == "takecover":  # +1 per tic alive: 30 steps survived -> 30
        assert all(r == n for r, n in zip(res["returns"], res["lengths"]))
    else:  # same seed -> same tracks -> same returns; other seeds -> other tracks
        from wm_jax.evaluation import evaluate

        again = evaluate(cfg, cfg.run_dir, 2, 5, out=tmp_path / "again", progress=False)
        other = evaluate(cfg, cfg.run_dir, 2, 7, out=tmp_path / "other", progress=False)
        assert again["returns"] == res["returns"]
        assert other["returns"] != res["returns"]


def test_random_policy_cli_needs_no_models(tmp_path):
    from wm_jax.cli import main

    args = ["evaluate", "--config", "configs/takecover.yaml", "--policy", "random", "--episodes", "3",
            "--no-progress", f"root={tmp_path}", "name=rnd", "env.max_steps=2100", "eval.gifs=false"]
    assert main(args) == 0
    res = json.loads((tmp_path / "rnd" / "eval" / "random" / "results.json").read_text())
    assert res["policy"] == "random" and len(res["returns"]) == 3
    assert all(res["terminated"])  # the random agent dies long before the cap
    # the real hazard by time: 3 deaths over sum(lengths) live steps, every one in a bucket some episode reached
    live, hz = np.asarray(res["lengths"]), res["hazard"]
    assert res["hazard_edges"] == [0, 100, 200, 400, 800, 1400] and len(hz) == 6
    for lo, hi, h in zip(res["hazard_edges"], res["hazard_edges"][1:] + [10**9], hz):
        steps = np.clip(np.minimum(live, hi) - lo, 0, None).sum()
        assert (h is None) == (steps == 0)
        if steps:
            assert h == pytest.approx(1000 * np.sum((live - 1 >= lo) & (live - 1 < hi)) / steps, abs=1e-3)
    assert all(0 < n < 2100 for n in res["lengths"])
    assert main([a.replace("name=rnd", "name=rnd2") for a in args]) == 0  # same seeds -> same episodes
    res2 = json.loads((tmp_path / "rnd2" / "eval" / "random" / "results.json").read_text())
    assert res2["returns"] == res["returns"]


def test_reference_policy_cli_real_env_and_bad_name(tmp_path, capsys):
    from wm_jax.cli import main

    base = ["evaluate", "--config", "configs/takecover.yaml", "--episodes", "2", "--no-progress",
            f"root={tmp_path}", "name=ref", "eval.gifs=false", "eval.workers=1"]
    assert main([*base, "--policy", "left"]) == 0
    res = json.loads((tmp_path / "ref" / "eval" / "left" / "results.json").read_text())
    assert res["policy"] == "left" and all(res["terminated"]) and all(0 < n < 2100 for n in res["lengths"])
    assert main([*base, "--policy", "sweepy"]) != 0
    assert "--policy sweepy: unknown reference policy 'sweepy' for takecover" in capsys.readouterr().err


# ---------------------------------------------------------------- real-env ES: kill + resume == straight run


def test_real_es_resume_equals_straight_run(tmp_path):
    from wm_jax.train.controller_real import final_state, run_real_es

    es = ["es.mode=real", "es.population=4", "es.trials=2", "es.generations=2", "es.eval_every=2",
          "es.eval_trials=2", "es.weight_decay=0.1", "env.max_steps=12"]
    a = load_config("configs/takecover.yaml", [f"root={tmp_path}", "name=a", *TINY, *es])
    b = a.replace(name="b")
    with VectorEnv(a.env, 2, 2) as venv:  # the 2-slot layout of the evaluate tests: shared compilations
        sa = run_real_es(a, venv=venv, progress=False)
        sb1 = run_real_es(b, venv=venv, progress=False, stop_after=1)  # "killed" after generation 1
        assert sb1["generations"] == 1 and not (b.run_dir / "controller" / "DONE").exists()
        from wm_jax.agent import policy_step_jit

        traces = policy_step_jit._cache_size()
        sb = run_real_es(b, venv=venv, progress=False)  # resumes at generation 1
        assert policy_step_jit._cache_size() == traces  # the policy step did not recompile in later generations
    assert sa["generations"] == sb["generations"] == 2
    fa, fb = final_state(a.run_dir), final_state(b.run_dir)
    jax.tree.map(np.testing.assert_array_equal, fa, fb)
    assert int(np.asarray(fa["carry"]["generation"])[0]) == 2
    mean0 = np.zeros_like(np.asarray(fa["carry"]["es_state"]["mean"]))
    assert np.abs(np.asarray(fa["carry"]["es_state"]["mean"]) - mean0).max() > 0  # the ES moved
    recs = [json.loads(line) for line in (a.run_dir / "controller" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs if "mean_return" in r] == [1, 2]
    assert (a.run_dir / "controller" / "params.npz").exists() and (a.run_dir / "plots" / "controller_curves.png").exists()


def test_ablation_controller_on_z_with_hidden_layer_ignores_m():
    # controller.inputs=z, controller.hidden=40: the action depends on the frame only, not on M's state.
    spec = AgentSpec("carracing", 8, 16, "z", False)
    params = init_agent_params(2, spec, ctrl_hidden=40, ctrl_scale=3.0)
    assert params.controllers["w1"].shape == (1, 8, 40) and params.controllers["w2"].shape == (1, 40, 3)
    step = make_policy(spec)
    frames = np.random.default_rng(1).integers(0, 256, (2, 64, 64, 3), dtype=np.uint8)
    s0 = mdnrnn.zero_state(16, (2,))
    s1 = mdnrnn.LSTMState(np.full((2, 16), 0.7, np.float32), np.full((2, 16), -0.3, np.float32))
    a0, n0 = step(params, s0, frames, np.zeros(2, bool), np.zeros(2, np.int32))
    a1, n1 = step(params, s1, frames, np.zeros(2, bool), np.zeros(2, np.int32))
    np.testing.assert_array_equal(np.asarray(a0), np.asarray(a1))
    assert not np.allclose(np.asarray(n0.h), np.asarray(n1.h))  # M still steps (its state differs)
    a = np.asarray(a0)
    assert np.all(np.abs(a[:, 0]) <= 1) and np.all((a[:, 1:] >= 0) & (a[:, 1:] <= 1))  # steer, gas, brake ranges


class _NoEnv:
    """A vector env that fails on any use: proves a call played no episode."""

    def __getattr__(self, name):
        raise AssertionError(f"the env was used ({name})")


def test_real_es_final_choice_over_held_out_tracks(tmp_path):
    """es.select_trials: the archived best-evaluated means and the last mean play more held-out tracks; the winner
    there is params.npz, and score.json lists every candidate. A resume after the last generation without DONE (killed
    during the choice) chooses again, identically; with DONE it plays nothing."""
    from wm_jax.io import load_controller
    from wm_jax.train.controller_real import run_real_es

    es = ["es.mode=real", "es.population=4", "es.trials=1", "es.generations=3", "es.eval_every=1",
          "es.eval_trials=1", "es.select_trials=2", "es.select_top=2", "env.max_steps=12"]
    cfg = load_config("configs/takecover.yaml", [f"root={tmp_path}", "name=s", *TINY, *es])
    with VectorEnv(cfg.env, 2, 2) as venv:
        s = run_real_es(cfg, venv=venv, progress=False)
        sel = s["selection"]
        gens = [c["generation"] for c in sel["candidates"]]
        assert len(set(gens)) == len(gens) and 3 in gens and 2 <= len(gens) <= 3  # top 2 evaluated + the last
        best = max(sel["candidates"], key=lambda c: c["select_return"])
        assert sel["generation"] == best["generation"] and sel["return"] == best["select_return"]
        score = json.loads((cfg.run_dir / "controller" / "score.json").read_text())
        assert score["selection"]["generation"] == sel["generation"]
        first = {k: np.asarray(v) for k, v in load_controller(cfg.run_dir).items()}
        done = cfg.run_dir / "controller" / "DONE"
        assert run_real_es(cfg, venv=_NoEnv(), progress=False)["selection"] == sel  # finished: no episode played
        done.unlink()  # as if killed during the final choice
        again = run_real_es(cfg, venv=venv, progress=False)  # resumed at the last generation
        assert again["selection"] == sel and done.exists()
        jax.tree.map(np.testing.assert_array_equal, first,
                     {k: np.asarray(v) for k, v in load_controller(cfg.run_dir).items()})
        # es.init: a second search starts at that controller, which is evaluated as generation 0 and stays a
        # candidate of the final choice
        fine = load_config("configs/takecover.yaml", [f"root={tmp_path}", "name=f", *TINY, *es, "es.generations=1",
                                                      f"es.init={cfg.run_dir}"])
        f = run_real_es(fine, venv=venv, progress=False)
    gens = [c["generation"] for c in f["selection"]["candidates"]]
    assert 0 in gens and 1 in gens
    recs = [json.loads(x) for x in (fine.run_dir / "controller" / "metrics.jsonl").read_text().splitlines()]
    assert recs[0]["step"] == 0 and np.isfinite(recs[0]["eval_return"])
    start = [c for c in f["selection"]["candidates"] if c["generation"] == 0][0]
    assert start["eval_return"] == recs[0]["eval_return"]
