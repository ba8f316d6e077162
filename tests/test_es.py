"""ES in the dream: CMA-ES learns a toy task, resume == uninterrupted, τ batch == separate runs, sharding."""

import json
import re
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from wm_jax.config import load_config
from wm_jax.envs import dream
from wm_jax.es import get_program, with_taus
from wm_jax.metrics import read_jsonl
from wm_jax.models import controller as C
from wm_jax.io import load_controller
from wm_jax.train.controller import train_dream
from wm_jax.train.sweep import sweep, tau_dir

Z, H, CAP = 2, 4, 30
OVERRIDES = ["es.population=16", "es.trials=4", "es.generations=6", "es.eval_every=3", "es.eval_trials=8",
             f"es.dream_max_steps={CAP}", "es.dream_chunk=10", "es.sigma_init=0.5", "es.generations_per_call=2",
             "es.checkpoint_every=2", "es.temperature=1.0", "controller.inputs=zh"]


def toy_m() -> dict:
    """A hand-made M (TakeCover shape: Z=2, action 1, H=4, one mixture) where only 'right' survives.

    Gates i, o ≈ 1, f ≈ 0, W_h = 0, so c₀ = tanh(5a), h₀ = tanh(c₀):
    a = +1 → h₀ = 0.76, a = 0 → 0, a = -1 → -0.76.
    Done logit = 2 - 10·h₀: > 0 (dies) unless the action is +1 (right); z' ~ N(0, τ) whatever happens.
    """
    w_x = jnp.zeros((Z + 1, 4 * H)).at[Z, 2 * H].set(5.0)
    b = jnp.concatenate([jnp.full(H, 10.0), jnp.full(H, -10.0), jnp.zeros(H), jnp.full(H, 10.0)])
    head_w = jnp.zeros((H, 3 * Z + 2)).at[0, -1].set(-10.0)
    head_b = jnp.zeros(3 * Z + 2).at[-1].set(2.0)
    return {"lstm": {"w_x": w_x, "w_h": jnp.zeros((H, 4 * H)), "b": b}, "head": {"w": head_w, "b": head_b}}


@pytest.fixture(scope="module")
def tmp():
    # Our own temp folder: pytest's numbered basetemp dirs get pruned by concurrent pytest sessions.
    with tempfile.TemporaryDirectory(prefix="wm_jax_test_es_") as d:
        yield Path(d)


BANK = (np.linspace(-1, 1, 2 * Z, dtype=np.float32).reshape(2, Z), np.full((2, Z), -2.0, np.float32))


@pytest.fixture(scope="module")
def runs(tmp):
    """An uninterrupted 6-generation run and a run killed after 2 generations, then resumed."""
    root = tmp / "es"
    full = load_config(None, [*OVERRIDES, f"root={root}", "name=full"])
    resumed = load_config(None, [*OVERRIDES, f"root={root}", "name=resumed"])
    s_full = train_dream(full, mdn=toy_m(), bank=BANK, gif=False, progress=False)
    s_stop = train_dream(resumed, mdn=toy_m(), bank=BANK, stop_after=2, gif=False, progress=False)
    s_res = train_dream(resumed, mdn=toy_m(), bank=BANK, gif=False, progress=False)
    return full, resumed, s_full, s_stop, s_res


def test_cma_es_learns_to_survive(runs):
    full, _, s_full, _, _ = runs
    recs = read_jsonl(full.run_dir / "controller" / "metrics.jsonl")
    first = [r["mean_return"] for r in recs if r["step"] == 1 and "mean_return" in r][0]
    # The zero controller stays put (a = 0) and dies after 1 step; a good one goes right and lives to the cap.
    assert first < 10
    assert s_full["eval_return"][0] > 25, s_full
    params = load_controller(full.run_dir)
    assert set(params) == {"w", "b"} and params["w"].shape == (Z + H, 1)
    assert (full.run_dir / "controller" / "DONE").exists()
    assert (full.run_dir / "plots" / "controller_curves.png").exists()


def test_resume_equals_uninterrupted(runs):
    full, resumed, s_full, s_stop, s_res = runs
    assert s_stop["generations"] == 2 and s_res["generations"] == 6
    a, b = load_controller(full.run_dir), load_controller(resumed.run_dir)
    for k in a:
        np.testing.assert_array_equal(np.asarray(a[k]), np.asarray(b[k]))
    ra = [r for r in read_jsonl(full.run_dir / "controller" / "metrics.jsonl") if "mean_return" in r]
    rb = [r for r in read_jsonl(resumed.run_dir / "controller" / "metrics.jsonl") if "mean_return" in r]
    assert [r["step"] for r in rb] == [1, 2, 3, 4, 5, 6]
    assert [(r["mean_return"], r["best_fitness"], r["std"]) for r in ra] == \
           [(r["mean_return"], r["best_fitness"], r["std"]) for r in rb]


def test_progress_fn_replaces_the_default_report(tmp):
    """train_dream(progress_fn=...): one DreamReport per program call (es.generations_per_call=2), evaluations at the
    es.eval_every=3 crossings and the end; the default report (metrics.jsonl) is not written, the outputs are."""
    from wm_jax.train.controller import DreamReport

    cfg = load_config(None, [*OVERRIDES, f"root={tmp / 'pfn'}"])
    reports: list[DreamReport] = []
    s = train_dream(cfg, mdn=toy_m(), bank=BANK, gif=False, progress=False, progress_fn=reports.append)
    assert [(r.generation, r.generations) for r in reports] == [(2, 2), (4, 2), (6, 2)]
    assert [r.eval_return is not None for r in reports] == [False, True, True]
    assert all(r.metrics["mean_return"].shape == (2, 1) and r.steps_per_s > 0 for r in reports)
    assert reports[-1].eval_return[0] <= s["eval_return"][0] and reports[-1].select_return is None
    assert not (cfg.run_dir / "controller" / "metrics.jsonl").exists()
    assert (cfg.run_dir / "controller" / "DONE").exists() and load_controller(cfg.run_dir)["w"].shape == (Z + H, 1)


def test_init_starts_the_search_at_a_trained_controller(runs, tmp):
    """es.init: the ES mean starts at a trained controller: its first generation already survives (the zero
    controller dies at once, test above); a controller of other shapes or a missing one is refused by key."""
    from wm_jax.config import ConfigError
    from wm_jax.train.controller import initial_mean

    full = runs[0]
    warm = load_config(None, [*OVERRIDES, f"root={tmp / 'es'}", "name=warm", f"es.init={full.run_dir}",
                              "es.generations=1", "es.sigma_init=0.01"])
    tmpl = C.controller_from_config(jax.random.PRNGKey(0), warm.controller, warm.env.name, Z, H)
    start = initial_mean(warm, tmpl)
    prog = get_program(warm, tmpl)
    mean = prog.mean_params(prog.init(jax.random.PRNGKey(0), 2, start))
    for k, v in load_controller(full.run_dir).items():
        np.testing.assert_array_equal(np.asarray(mean[k]), np.broadcast_to(np.asarray(v), mean[k].shape))
    train_dream(warm, mdn=toy_m(), bank=BANK, gif=False, progress=False)
    first = [r["mean_return"] for r in read_jsonl(warm.run_dir / "controller" / "metrics.jsonl")
             if r["step"] == 1 and "mean_return" in r][0]
    assert first > 25
    with pytest.raises(ConfigError, match=r"'es.init'.*needs"):
        z_only = warm.replace(**{"controller.inputs": "z"})
        initial_mean(z_only, C.controller_from_config(jax.random.PRNGKey(0), z_only.controller, z_only.env.name, Z, H))
    with pytest.raises(ConfigError, match=r"'es.init'.*no controller params.npz"):
        initial_mean(load_config(None, [f"es.init={tmp / 'nowhere'}"]), tmpl)


def test_c_mean_scales_the_first_mean_step(tmp):
    """es.c_mean: the first generation samples and ranks the same candidates, so the mean moves c_mean times as far."""
    steps = []
    for c in (1.0, 0.25):
        cfg = load_config(None, [*OVERRIDES, f"root={tmp / 'cm'}", f"es.c_mean={c}"])
        tmpl = C.controller_from_config(jax.random.PRNGKey(0), cfg.controller, cfg.env.name, Z, H)
        prog = get_program(cfg, tmpl)
        dp = with_taus(dream.make_params(toy_m(), *BANK, max_steps=CAP), (1.0,))
        carry0 = prog.init(jax.random.PRNGKey(3), 1)
        carry1, _ = prog.run(carry0, dp, 1)
        m0, m1 = prog.mean_params(carry0), prog.mean_params(carry1)
        steps.append(np.concatenate([np.ravel(m1[k] - m0[k]) for k in sorted(m0)]))
    assert np.abs(steps[0]).max() > 0.1
    np.testing.assert_allclose(steps[1], 0.25 * steps[0], rtol=1e-4, atol=1e-6)


def test_lazy_eigen_cma_decomposes_every_kth_generation_and_equals_cma_es_at_1(tmp):
    """es.eigen_every: k = 1 runs evosax's CMA_ES itself; the lazy class with k = 1 samples the same populations;
    with k = 3 the covariance's decomposition (B, D) changes only at generations 3, 6 while C changes every
    generation, and the search still learns the toy task; k = 0 is Hansen's interval from the sizes; the ES
    program keeps the skip a real branch."""
    from evosax.algorithms import CMA_ES

    from wm_jax.es import lazy_cma_class, lazy_eigen_every, make_strategy

    cfg = load_config(None, [*OVERRIDES, f"root={tmp / 'lazy'}"])
    tmpl = C.controller_from_config(jax.random.PRNGKey(0), cfg.controller, cfg.env.name, Z, H)
    assert type(make_strategy(cfg.es, tmpl)[0]) is CMA_ES
    assert make_strategy(cfg.replace(**{"es.eigen_every": 3}).es, tmpl)[0].eigen_every == 3
    x0 = jnp.zeros(6)
    plain, lazy1, lazy3 = (CMA_ES(population_size=8, solution=x0), lazy_cma_class()(8, x0, 1),
                           lazy_cma_class()(8, x0, 3))
    p = plain.default_params
    fit = lambda pop: jnp.sum((pop - 1.0) ** 2, axis=1)  # noqa: E731
    states = [s.init(jax.random.key(0), x0, p) for s in (plain, lazy1, lazy3)]
    b_seen = []
    for g in range(7):
        k_ask, k_tell = jax.random.split(jax.random.key(g + 1))
        pops = []
        for i, s in enumerate((plain, lazy1, lazy3)):
            pop, st = s.ask(k_ask, states[i], p)
            states[i], _ = s.tell(k_tell, pop, fit(pop), st, p)
            pops.append(pop)
        np.testing.assert_allclose(pops[1], pops[0], rtol=1e-5, atol=1e-6)
        b_seen.append(np.asarray(states[2].B))
    changed = [g for g in range(1, 7) if not np.array_equal(b_seen[g], b_seen[g - 1])]
    assert changed == [3, 6]
    assert float(fit(states[2].mean[None])[0]) < 0.5 * float(fit(x0[None])[0])
    assert lazy_eigen_every(5202, 7.4e-8, 1.1e-6) == 16 and lazy_eigen_every(10, 0.02, 0.01) == 1
    with pytest.raises(Exception, match="es.eigen_every"):
        load_config(None, ["es.strategy=Sep_CMA_ES", "es.eigen_every=4"])
    # In the ES program (vmapped over τ, even for one τ) the skip must stay a cond: a vmapped cond with a batched
    # predicate becomes a select, which runs the eigh every generation.
    prog = get_program(cfg.replace(**{"es.eigen_every": 3}), tmpl)
    dp = with_taus(dream.make_params(toy_m(), *BANK, max_steps=CAP), (1.0,))
    assert "cond[" in str(prog._run.trace(prog.init(jax.random.PRNGKey(3), 1), dp, 1).jaxpr)


def _two_generations(cfg, taus, devices=None):
    tmpl = C.controller_from_config(jax.random.PRNGKey(0), cfg.controller, cfg.env.name, Z, H)
    prog = get_program(cfg, tmpl, devices=devices)
    dp = with_taus(dream.make_params(toy_m(), *BANK, max_steps=CAP), taus)
    carry, m = prog.run(prog.init(jax.random.PRNGKey(cfg.es.seed), len(taus)), dp, 2)
    return prog, carry, m, dp


def test_tau_batch_equals_separate_runs(tmp):
    """sweep-temperature (one program, vmapped over τ) == train-controller once per τ, and is loadable."""
    over = [*OVERRIDES, f"root={tmp}", "es.generations=2", "es.eval_every=2"]
    cfg = load_config(None, [*over, "name=sweep"])
    s = sweep(cfg, (0.5, 1.3), mdn=toy_m(), bank=BANK, progress=False)
    assert s["generations"] == 2 and (cfg.run_dir / "sweep" / "scores.json").exists()
    batched = [load_controller(tau_dir(cfg.run_dir, tau)) for tau in (0.5, 1.3)]
    for tau, pb in zip((0.5, 1.3), batched):
        one = load_config(None, [*over, f"name=single_{tau}", f"es.temperature={tau}"])
        s1 = train_dream(one, mdn=toy_m(), bank=BANK, gif=False, progress=False)
        p1 = load_controller(one.run_dir)
        assert pb["w"].shape == (Z + H, 1)
        for k in p1:
            np.testing.assert_allclose(np.asarray(pb[k]), np.asarray(p1[k]), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(s["eval_return"][(0.5, 1.3).index(tau)], s1["eval_return"][0], rtol=1e-5)
    # τ really changes the outcome (otherwise the comparison above would be vacuous)
    ra = read_jsonl(cfg.run_dir / "sweep" / "ckpt" / "metrics.jsonl")[0]
    assert ra["tau_0.5/mean_return"] != ra["tau_1.3/mean_return"] or not np.allclose(batched[0]["w"], batched[1]["w"])


def test_sharded_equals_unsharded(tmp):
    assert len(jax.devices()) == 4, "conftest forces 4 host devices"
    cfg = load_config(None, [*OVERRIDES, f"root={tmp}"])
    prog4, c4, m4, dp = _two_generations(cfg, (1.0,))
    prog1, c1, m1, _ = _two_generations(cfg, (1.0,), devices=jax.devices()[:1])
    assert prog4.n_devices == 4 and prog1.n_devices == 1
    hlo = prog4._run.lower(prog4.init(jax.random.PRNGKey(0), 1), dp, 2).as_text()
    assert "devices=[4" in hlo or "{devices=[" in hlo or "\"data\"" in hlo  # population constrained to the mesh
    # float32 sums split over 4 devices add in another order: ~1e-6 apart after two generations on some CPUs
    # (AVX-512 vs AVX2 kernels); a misrouted candidate would differ by O(0.1)
    np.testing.assert_allclose(np.asarray(c4.es_state.mean), np.asarray(c1.es_state.mean), rtol=1e-4, atol=1e-5)
    for k in ("mean_return", "best_return", "best_fitness"):
        np.testing.assert_allclose(m4[k], m1[k], rtol=1e-4)


def test_compacted_dream_equals_the_full_batch_sharded_and_tau_batched(tmp):
    """es.dream_compact: the ES sees the same returns (so takes the same steps) on fewer computed slot-steps."""
    taus = (0.5, 1.3)
    plain = load_config(None, [*OVERRIDES, f"root={tmp}"])
    compact = load_config(None, [*OVERRIDES, f"root={tmp}", "es.dream_compact=2"])
    _, c0, m0, _ = _two_generations(plain, taus)
    prog, c3, m3, dp = _two_generations(compact, taus)
    assert prog.n_devices == 4 and prog.compact == 2  # 64 episodes -> 32 -> 16, each split over 4 devices
    np.testing.assert_allclose(np.asarray(c3.es_state.mean), np.asarray(c0.es_state.mean), rtol=1e-4, atol=1e-5)
    for k in ("mean_return", "best_return", "mean_length"):
        np.testing.assert_allclose(m3[k], m0[k], rtol=1e-5)
    # one loop for every τ (vmapped, or one compacted batch): it runs as long as the longest τ's episodes
    np.testing.assert_array_equal(m3["steps_run"], m0["steps_run"])
    assert np.all(m0["slot_steps"] == m0["steps_run"] * 16 * 4) and np.all(m0["steps_run"] == m0["steps_run"][:, :1])
    assert m3["slot_steps"].sum() < m0["slot_steps"].sum()
    # CPU-sharded, CMA-ES's eigh runs one τ's matrix per LAPACK call: a batched call fans out over the pool every
    # device's thread is in, and hung the process ~1 run in 4 (wm_jax/es.py, ESProgram.__init__)
    carry = prog.init(jax.random.PRNGKey(0), len(taus))
    hlo = prog._run.lower(carry, dp, 2).compile().as_text()
    shapes = re.findall(r'lapack_\w*syevd\w*", operand_layout_constraints=\{f32\[([\d,]+)\]', hlo)
    assert shapes and all(s.count(",") == 1 for s in shapes), shapes  # [D, D], never [τ, D, D]


def test_held_out_selection_picks_the_mean_by_the_other_models_dream(tmp):
    """es.select_model: the periodic evaluations also run in a held-out model's dream, and the best there is the
    final controller. With a copy of M as that model the run equals the original (same choice, same scores); with
    a model where nobody dies every evaluation ties at the cap, so the first evaluated mean is kept, and its
    score.json reports both dreams' returns. Resuming keeps the held-out bests."""
    base = [*OVERRIDES, f"root={tmp / 'select'}"]
    plain = load_config(None, [*base, "name=plain"])
    s0 = train_dream(plain, mdn=toy_m(), bank=BANK, gif=False, progress=False)
    same = load_config(None, [*base, "name=same", "es.select_model=1"])
    s1 = train_dream(same, mdn=toy_m(), bank=BANK, select=toy_m(), gif=False, progress=False)
    np.testing.assert_allclose(s1["eval_return"], s0["eval_return"], rtol=1e-6)
    np.testing.assert_allclose(s1["select_return"], s0["eval_return"], rtol=1e-6)
    for k, v in load_controller(plain.run_dir).items():
        np.testing.assert_array_equal(np.asarray(load_controller(same.run_dir)[k]), np.asarray(v))
    # C trains where nobody dies (every evaluation ties at the cap there) and is chosen in a dream where z₀ also
    # drives the deadly unit (death is likelier for z₀ < 0, whatever C does): the held-out returns alone pick
    safe = toy_m()
    safe["head"]["b"] = safe["head"]["b"].at[-1].set(-50.0)
    held_m = toy_m()
    held_m["lstm"]["w_x"] = held_m["lstm"]["w_x"].at[0, 2 * H].set(3.0)
    kind = load_config(None, [*base, "name=kind", "es.select_model=1", "es.eval_every=2"])
    train_dream(kind, mdn=safe, bank=BANK, select=held_m, stop_after=4, gif=False, progress=False)  # killed
    s2 = train_dream(kind, mdn=safe, bank=BANK, select=held_m, gif=False, progress=False)  # resumed
    evals = [r for r in read_jsonl(kind.run_dir / "controller" / "metrics.jsonl") if "select_return" in r]
    assert [r["step"] for r in evals] == [2, 4, 6] and all(r["eval_return"] == CAP for r in evals)
    held = [r["select_return"] for r in evals]
    assert len(set(held)) > 1 and max(held) > held[0]  # M's own dream would have kept the first mean
    assert s2["select_return"] == [max(held)] and s2["eval_return"] == [CAP]
    score = json.loads((kind.run_dir / "controller" / "score.json").read_text())
    assert score["select_model"] == 1 and score["select_return"] == max(held) and score["dream_eval_return"] == CAP


def test_dynamics_ensemble_in_the_sharded_tau_batched_program(tmp):
    """es.dream_models through the whole ES program (τ-vmapped, population sharded over 4 devices): an ensemble of
    two copies of M trains exactly as M alone, and a second member where standing still is safe changes the
    fitness of the candidates that do not go right (half their trials now survive)."""
    cfg = load_config(None, [*OVERRIDES, f"root={tmp}"])
    tmpl = C.controller_from_config(jax.random.PRNGKey(0), cfg.controller, cfg.env.name, Z, H)
    prog = get_program(cfg, tmpl)
    assert prog.n_devices == 4
    safe = toy_m()
    safe["head"]["b"] = safe["head"]["b"].at[-1].set(-50.0)  # nobody dies in this member's dream
    out = {}
    for name, dyn in (("alone", None), ("twice", [toy_m()]), ("safe", [safe])):
        dp = with_taus(dream.make_params(toy_m(), *BANK, max_steps=CAP, dyn=dyn), (0.5, 1.0))
        _, out[name] = prog.run(prog.init(jax.random.PRNGKey(1), 2), dp, 2)
    for k in out["alone"]:
        np.testing.assert_allclose(out["twice"][k], out["alone"][k], rtol=1e-5, atol=1e-5)
    assert out["safe"]["mean_return"][0, 0] > out["alone"]["mean_return"][0, 0] + 1.0


def test_scaled_inputs_search_is_the_plain_search_rescaled(tmp):
    """es.scale_inputs: the ES searches θ = w · RMS. With every input's RMS = 2 and twice the step size it samples,
    ranks and moves exactly as the plain search in w (CMA-ES is invariant to a uniform rescaling), and every public
    method speaks in weights: es.init's controller comes back as the initial mean."""
    base = [*OVERRIDES, f"root={tmp / 'scaled'}", "controller.bias=false"]
    plain = load_config(None, [*base, "es.sigma_init=0.5"])
    scaled = load_config(None, [*base, "es.sigma_init=1.0", "es.scale_inputs=true"])
    tmpl = C.controller_from_config(jax.random.PRNGKey(0), plain.controller, plain.env.name, Z, H)
    dp = with_taus(dream.make_params(toy_m(), *BANK, max_steps=CAP), (1.0,))
    means = []
    for cfg, rms in ((plain, None), (scaled, np.full(Z + H, 2.0, np.float32))):
        prog = get_program(cfg, tmpl, input_rms=rms)
        carry, _ = prog.run(prog.init(jax.random.PRNGKey(3), 1), dp, 3)
        means.append(prog.mean_params(carry)["w"])
    assert float(jnp.abs(means[0]).max()) > 0.1
    np.testing.assert_allclose(means[1], means[0], rtol=1e-4, atol=1e-5)

    rms = np.linspace(0.1, 3.0, Z + H).astype(np.float32)  # uneven scales: θ and w differ row by row
    prog = get_program(scaled, tmpl, input_rms=rms)
    w = {"w": jax.random.normal(jax.random.PRNGKey(1), (Z + H, 1))}
    np.testing.assert_allclose(prog.to_search(w)["w"], w["w"] * rms[:, None], rtol=1e-6)
    np.testing.assert_allclose(prog.mean_params(prog.init(jax.random.PRNGKey(0), 1, w))["w"][0], w["w"], rtol=1e-5)
    with pytest.raises(ValueError, match="6 finite positive"):
        get_program(scaled, tmpl, input_rms=np.zeros(Z + H))


def test_scaled_inputs_resume_with_the_checkpoints_scales(tmp):
    """The input RMS is part of the ES state: a resumed run reads it from the checkpoint (not re-measured), ends
    where the uninterrupted run ends, and a checkpoint of the other kind is refused."""
    rms = np.linspace(0.5, 2.0, Z + H).astype(np.float32)
    kw = dict(mdn=toy_m(), bank=BANK, gif=False, progress=False)
    full = load_config(None, [*OVERRIDES, f"root={tmp / 'scaled_resume'}", "name=full", "es.scale_inputs=true"])
    part = full.replace(name="part")
    train_dream(full, rms=rms, **kw)
    train_dream(part, rms=rms, stop_after=2, **kw)
    train_dream(part, rms=rms * 7.0, **kw)  # ignored: the checkpoint's scales win
    a, b = load_controller(full.run_dir), load_controller(part.run_dir)
    assert float(jnp.abs(a["w"]).max()) > 0.1
    np.testing.assert_allclose(b["w"], a["w"], rtol=1e-5, atol=1e-6)
    score = json.loads((part.run_dir / "controller" / "score.json").read_text())
    assert score["input_rms_mean"] == pytest.approx({"z": rms[:Z].mean(), "h": rms[Z:].mean()})
    with pytest.raises(Exception, match="scale_inputs=True"):
        train_dream(part.replace(**{"es.scale_inputs": False, "es.generations": 8}), **kw)


def test_input_rms_matches_a_step_by_step_loop():
    """C's input RMS over padded episodes: z drawn from V's posterior, M's state teacher-forced, padding ignored."""
    from wm_jax.models import mdnrnn as M
    from wm_jax.train.controller_inputs import _input_rms

    rng = np.random.default_rng(0)
    n, t = 3, 7
    mu = rng.normal(size=(n, t + 1, Z)).astype(np.float32)
    logvar = np.full((n, t + 1, Z), -40.0, np.float32)  # σ ≈ 0: z = μ, so the loop needs no random draws
    actions = rng.choice([-1.0, 0.0, 1.0], size=(n, t, 1)).astype(np.float32)
    lengths = [7, 4, 2]
    mask = (np.arange(t)[None] < np.asarray(lengths)[:, None]).astype(np.float32)
    m = toy_m()
    m["lstm"]["w_h"] = 0.3 * jax.random.normal(jax.random.PRNGKey(2), (H, 4 * H))  # a state that carries over
    got = np.asarray(_input_rms("zch", False)(m, *(jnp.asarray(x) for x in (mu, logvar, actions, mask)),
                                              jax.random.PRNGKey(0)))
    feats = []
    for i, length in enumerate(lengths):
        state = M.zero_state(H)
        for s in range(length):
            feats.append(np.asarray(C.features(jnp.asarray(mu[i, s]), state, "zch")))
            state = M.lstm_step(m, state, jnp.concatenate([jnp.asarray(mu[i, s]), jnp.asarray(actions[i, s])]))
    want = np.sqrt((np.stack(feats) ** 2).mean(0))
    assert got.shape == (Z + 2 * H,) and want[Z:].min() > 1e-3
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
