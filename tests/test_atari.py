"""Atari 100k: the ALE adapter (shapes, protocol, determinism), one-hot actions, the interaction budget, the
discrete controller in the dream against a step-by-step loop, and a tiny end-to-end Pong run of the experiment."""

import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wm_jax.config import ConfigError, load_config
from wm_jax.data.budget import BudgetError, check_budget, ledger
from wm_jax.envs import dream, dream_batch, make_env, make_policy, reference
from wm_jax.envs.spec import ATARI_GAMES, env_spec, random_action, squash_action
from wm_jax.models import controller as C
from wm_jax.models import mdnrnn

ROOT = Path(__file__).resolve().parents[1]
BASE = "configs/atari.yaml"


def _cfg(*overrides):
    return load_config(ROOT / BASE, list(overrides))


@pytest.mark.parametrize("game", sorted(ATARI_GAMES))
def test_adapter_frames_actions_and_determinism(game):
    env = make_env(_cfg(f"env.atari_game={game}", "env.max_steps=40").env)
    try:
        assert env.action_dim == env_spec(f"atari/{game}").action_dim == len(ATARI_GAMES[game][1])
        rng = np.random.default_rng(3)
        actions = [np.eye(env.action_dim, dtype=np.float32)[rng.integers(env.action_dim)] for _ in range(40)]

        def play(seed):
            frames, rewards = [env.reset(seed)], []
            for t, a in enumerate(actions):
                f, r, term, trunc = env.step(a)
                frames.append(f)
                rewards.append(r)
                assert not term and trunc == (t == 39)  # max_steps cuts at 40 agent steps, no game ends by then
            return np.stack(frames), np.asarray(rewards)

        f1, r1 = play(5)
        f2, r2 = play(5)
        assert f1.shape == (41, 64, 64, 3) and f1.dtype == np.uint8
        np.testing.assert_array_equal(f1, f2)  # same seed, same actions: the same episode
        np.testing.assert_array_equal(r1, r2)
        assert f1.std() > 0  # a picture, not a blank
    finally:
        env.close()


def test_pong_plays_to_game_over_with_noop_starts_from_the_seed():
    cfg = _cfg("env.atari_game=pong")
    env = make_env(cfg.env)
    try:
        # No-op starts (1..30 NOOP frames drawn from the seed) and ALE's seeded RNG: the same actions play out
        # differently from different seeds (Pong's first frames are still, so compare 60 steps of play).
        noop = np.eye(6, dtype=np.float32)[0]

        def noops(seed):
            env.reset(seed)
            return np.stack([env.step(noop)[0] for _ in range(60)]).tobytes()

        assert len({noops(s) for s in range(4)}) > 1
        policy = make_policy(cfg.env)
        env.reset(0)
        policy.reset(np.random.default_rng(0))
        frame, total, t, term = env.frame, 0.0, 0, False
        while not term:
            frame, r, term, trunc = env.step(policy(frame))
            total, t = total + r, t + 1
            assert not trunc
        # Random Pong loses 21 points to almost none: the game (not a life) ends the episode.
        assert -21 <= total <= -15 and 600 < t < 2500
    finally:
        env.close()


def test_breakout_serves_for_a_c_that_never_fires():
    # Breakout's ball waits for FIRE. With env.atari_fire_reset (default) the adapter serves at reset and after
    # each lost life, so a C that only ever plays NOOP loses its 5 lives and the game ends; without it the same C
    # plays until env.max_steps with nothing happening.
    noop = np.eye(4, dtype=np.float32)[0]
    for fire, ends in ((True, True), (False, False)):
        env = make_env(_cfg("env.atari_game=breakout", "env.max_steps=600", f"env.atari_fire_reset={fire}").env)
        try:
            env.reset(1)
            lives, t, term, trunc = [env.ale.lives()], 0, False, False
            while not (term or trunc):
                _, r, term, trunc = env.step(noop)
                lives.append(env.ale.lives())
                t += 1
                assert r == 0.0  # a paddle that never moves hits nothing here
            if ends:
                assert term and t < 600 and lives[0] == 5 and lives[-1] == 0
                assert env.t == t  # the served frames are not agent steps
            else:
                assert trunc and t == 600 and lives[-1] == 5
        finally:
            env.close()


def test_random_collection_holds_actions_for_repeat_max_steps():
    from wm_jax.envs.atari import UniformPolicy

    def mean_run(repeat_max):
        policy = UniformPolicy(3, repeat_max)
        policy.reset(np.random.default_rng(0))
        acts = np.array([np.argmax(policy(None)) for _ in range(6000)])
        assert np.all(np.bincount(acts, minlength=3) > 1500)  # still uniform over the actions
        return 6000 / (1 + np.count_nonzero(np.diff(acts)))

    assert 1.3 < mean_run(1) < 1.7  # a new action each step: runs of 1 / (1 - 1/3) = 1.5 on average
    assert mean_run(30) > 15  # held 1..30 steps (mean 15.5), longer where the next draw repeats the action


def test_one_hot_actions_squash_and_reference_policies():
    raw = jnp.array([[0.1, 2.0, -1.0, 2.0, 0.0, 0.3], [-5.0, -4.0, -3.0, -2.0, -1.0, -0.5]])
    np.testing.assert_array_equal(squash_action(raw, "atari/pong"), np.eye(6)[[1, 5]])  # argmax, first on ties
    np.testing.assert_array_equal(squash_action(np.asarray(raw), "atari/pong", np), np.eye(6)[[1, 5]])
    counts = np.zeros(3)
    rng = np.random.default_rng(0)
    for _ in range(3000):
        a = np.asarray(random_action("atari/freeway", rng))
        assert a.sum() == 1 and set(np.unique(a)) <= {0.0, 1.0}
        counts += a
    assert np.all(np.abs(counts / 3000 - 1 / 3) < 0.04)
    assert reference.names("atari/freeway") == ["noop", "up", "down"]
    np.testing.assert_array_equal(reference.get("atari/freeway", "up")(7, np), [0.0, 1.0, 0.0])
    with pytest.raises(ValueError, match="unknown env.name 'atari/tetris'"):
        env_spec("atari/tetris")


def test_config_names_the_game_and_refuses_plans_over_the_budget():
    cfg = _cfg("env.atari_game=boxing")
    assert cfg.env.id == "atari/boxing" and cfg.action_dim == 18 and cfg.collect_steps == 1000
    with pytest.raises(ConfigError, match="env.atari_game"):
        _cfg("env.atari_game=tetris")
    # 40 random + 3 x 20 agent episodes of <= 1,000 steps fill the 100k budget exactly; one more round does not fit.
    with pytest.raises(ConfigError, match=r"data.interaction_budget.*120,000.*round 3 20,000"):
        _cfg("iterate.rounds=4")
    with pytest.raises(ConfigError, match="data.interaction_budget"):
        _cfg("data.episode_steps=0")  # the cap falls back to env.max_steps (27,000 steps an episode)
    with pytest.raises(ConfigError, match="es.mode"):
        _cfg("es.mode=real")  # real-env ES would spend real steps the budget does not count
    assert _cfg("data.interaction_budget=0", "iterate.rounds=9").iterate.rounds == 9  # 0: no limit


def test_budget_ledger_and_refusal_before_a_round_starts():
    cfg = _cfg("data.interaction_budget=2000", "data.episodes=1", "iterate.rounds=1", "iterate.episodes=1")
    records = [{"index": 0, "length": 900, "policy": "uniform"}, {"index": 1, "length": 700, "policy": "agent_round0"}]
    assert ledger(cfg, records) == {"budget": 2000, "used": 1600, "left": 400, "episodes": 2,
                                    "by_policy": {"uniform": 900, "agent_round0": 700}}
    check_budget(cfg, records[:1], 1, "round 0")  # 900 + 1,000 <= 2,000
    with pytest.raises(BudgetError, match=r"round 1: 1 episodes of up to 1,000 steps.*holds 1,600.*2,000"):
        check_budget(cfg, records, 1, "round 1")  # 1,600 + 1,000 > 2,000: refused before any step


def test_collection_counts_real_steps_and_a_resumed_larger_plan_is_refused(tmp_path):
    from wm_jax.data.collect_agent import collect_agent
    from wm_jax.stages import collect

    base = [f"root={tmp_path}", "name=budget", "data.episodes=2", "data.episode_steps=30", "data.workers=1",
            "data.interaction_budget=100", "iterate.rounds=1", "iterate.episodes=1"]
    collect(_cfg(*base), progress=False)  # 2 x 30 + 1 x 30 <= 100
    spent = json.loads((tmp_path / "budget" / "data" / "budget.json").read_text())
    assert spent["used"] == 60 and spent["by_policy"] == {"uniform": 60} and spent["left"] == 40
    # The same data with a plan whose worst case fits on paper (2 x 20 + 3 x 20 = 100) once episodes are cut at 20
    # steps -- but the 60 steps already on disk count, and 60 + 3 x 20 > 100: the round is refused before it plays.
    cfg = _cfg(*base, "data.episode_steps=20", "iterate.episodes=3")
    with pytest.raises(BudgetError, match="iterate round 0: 3 episodes of up to 20 steps.*holds 60"):
        collect_agent(cfg, tmp_path / "no-controller-needed", 0, progress=False)


Z, H, A, K = 3, 8, 6, 2
TRIALS, POP, CAP = 3, 2, 20


def test_discrete_controller_in_the_dream_equals_the_step_loop():
    mdn = mdnrnn.init_params(jax.random.PRNGKey(0), Z, A, H, K)
    mdn["head"]["w"] = mdn["head"]["w"].at[:, -1].mul(3.0)  # episodes end at varied steps
    mdn["head"]["b"] = mdn["head"]["b"].at[-1].set(-0.3)
    bank = jax.random.normal(jax.random.PRNGKey(1), (5, Z)), jnp.full((5, Z), -2.0)
    params = dream.make_params(mdn, *bank, tau=1.0, max_steps=CAP, kind="atari/pong")
    ctrl = jax.vmap(lambda k: C.init_controller(k, Z + H, A, scale=1.0))(jax.random.split(jax.random.PRNGKey(2), POP))
    key = jax.random.PRNGKey(11)
    res = dream_batch.rollout(ctrl, key, params, TRIALS, inputs="zh", env_name="atari/pong", chunk=5)

    k_reset, k_steps = jax.random.split(key)
    reset_keys, trial_keys = jax.random.split(k_reset, TRIALS), jax.random.split(k_steps, TRIALS)
    step = jax.jit(dream.step_with_noise)
    pol = jax.jit(lambda p, z, s: C.policy(p, z, s, "zh", "atari/pong"))
    rets, lens, chosen = np.zeros((POP, TRIALS)), np.zeros((POP, TRIALS), int), set()
    for p in range(POP):
        cp = jax.tree.map(lambda x: x[p], ctrl)
        for t in range(TRIALS):
            _, s = dream.reset(reset_keys[t], params)
            for i in range(CAP):
                a = pol(cp, s.z, s.lstm)
                assert a.shape == (A,) and float(a.sum()) == 1.0 and set(np.unique(np.asarray(a))) <= {0.0, 1.0}
                chosen.add(int(jnp.argmax(a)))
                _, s, r, d, _ = step(dream.step_noise(jax.random.fold_in(trial_keys[t], i), Z), s, a, params)
                rets[p, t] += float(r)  # Atari's dream pays M's reward head, as CarRacing's
                lens[p, t] += 1
                if bool(d):
                    break
    np.testing.assert_array_equal(np.asarray(res.lengths), lens)
    np.testing.assert_allclose(np.asarray(res.returns), rets, rtol=1e-4, atol=1e-4)
    assert len(chosen) > 1 and lens.min() < CAP  # C picks several actions; some episodes end early


def test_reward_sign_target():
    batch = {"mu": jnp.zeros((1, 3, 2)), "logvar": jnp.full((1, 3, 2), -20.0), "actions": jnp.zeros((1, 2, 1)),
             "rewards": jnp.array([[4.0, -7.0]]), "dones": jnp.zeros((1, 2)), "mask": jnp.ones((1, 2)),
             "restart": jnp.zeros((1, 2))}
    p = mdnrnn.init_params(jax.random.PRNGKey(0), 2, 1, 4, 1)
    p["head"]["w"] = jnp.zeros_like(p["head"]["w"])
    p["head"]["b"] = jnp.zeros_like(p["head"]["b"]).at[-2].set(0.5)  # the reward head predicts 0.5 everywhere
    kw = dict(restart_flag=False, done_pos_weight=1.0)
    _, raw = mdnrnn.sequence_loss(p, batch, jax.random.PRNGKey(1), **kw)
    _, sign = mdnrnn.sequence_loss(p, batch, jax.random.PRNGKey(1), reward_sign=True, **kw)
    np.testing.assert_allclose(raw["reward_mse"], ((4 - 0.5) ** 2 + (-7 - 0.5) ** 2) / 2, rtol=1e-6)
    np.testing.assert_allclose(sign["reward_mse"], ((1 - 0.5) ** 2 + (-1 - 0.5) ** 2) / 2, rtol=1e-6)


@pytest.mark.slow
def test_atari100k_experiment_end_to_end_on_pong(tmp_path):
    """experiments/atari100k.py at toy sizes: random collection, V, M, one round, C in the dream, real scores."""
    out = subprocess.run([sys.executable, "experiments/atari100k.py", "--games", "pong", "--seeds", "0",
                          "--scale", "smoke", f"root={tmp_path}"], cwd=ROOT, capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rec = json.loads((tmp_path / "atari100k_smoke" / "results" / "results.json").read_text())
    (row,) = rec["rows"]
    assert row["game"] == "pong" and row["simple"] == 12.8 and row["steps"] <= 100_000
    game = rec["per_game"]["pong"]
    assert len(game["means"]) == 1 and -21 <= game["means"][0] <= 21
    run = tmp_path / "atari100k_smoke_pong_s0"
    manifest = json.loads((run / "data" / "manifest.json").read_text())
    assert {e["policy"] for e in manifest["episodes"]} == {"uniform", "agent_round0"}
    assert manifest["env"] == "atari/pong" and manifest["action_dim"] == 6
    budget = json.loads((run / "data" / "budget.json").read_text())
    assert budget["used"] == sum(e["length"] for e in manifest["episodes"]) <= 5 * 150
    one = json.loads((run / "results" / "results.json").read_text())
    assert one["favourite"] in reference.names("atari/pong") and one["budget"] == budget
    assert (tmp_path / "atari100k_smoke" / "results" / "plots" / "real_pong_best.gif").exists()
    assert (tmp_path / "atari100k_smoke" / "results" / "plots" / "dream_pong.gif").exists()


def test_atari100k_table_keeps_earlier_games_and_ends_with_the_mean_human_normalised_score(tmp_path):
    """A game recorded by an earlier invocation stays in the table (in the published order), the old summary row
    does not, and a table of two or more games ends with the mean of their human-normalised scores."""
    import importlib.util
    from types import SimpleNamespace

    spec = importlib.util.spec_from_file_location("atari100k", ROOT / "experiments" / "atari100k.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    pong = {"game": "pong", "hns": round(mod.human_normalised("pong", -20.2), 3)}
    boxing = {"game": "boxing", "hns": 0.5}
    (tmp_path / "results.json").write_text(json.dumps({
        "rows": mod.with_mean_row([pong, boxing]), "per_game": {"pong": {"mean": -20.2}, "boxing": {"mean": 6.1}},
        "stage_seconds": {"pong s0 collect": 30.0, "boxing s0 collect": 20.0}}))
    agg = SimpleNamespace(results_dir=tmp_path, times={})
    freeway = {"game": "freeway", "hns": round(mod.human_normalised("freeway", 21.4), 3)}
    rows, per_game = mod._with_earlier_games(agg, [freeway], {"freeway": {"mean": 21.4}})
    assert [r["game"] for r in rows] == ["pong", "freeway", "boxing"]
    assert set(per_game) == {"pong", "freeway", "boxing"} and agg.times == {"pong s0 collect": 30.0,
                                                                            "boxing s0 collect": 20.0}
    assert freeway["hns"] == round(21.4 / 29.6, 3) and pong["hns"] == round(0.5 / 35.3, 3)
    *_, mean = mod.with_mean_row(rows)
    assert mean == {"game": "mean of 3 games", "hns": round((pong["hns"] + freeway["hns"] + 0.5) / 3, 3)}
    assert mod.with_mean_row([freeway]) == [freeway]
