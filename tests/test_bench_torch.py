"""The PyTorch baselines (benchmarks/torch_*.py) and the comparison that runs them beside JAX (wm_jax.bench.compare):
the same models, losses, dream step and CMA-ES as wm-jax's, the worker protocol, and the ratios the records hold.
Tests that need torch skip where it is not installed (it is an optional ``bench`` extra)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

from wm_jax.bench import dream as bench_dream

BENCH_SCRIPTS = Path(__file__).parents[1] / "benchmarks"


def torch_script(name: str):
    """benchmarks/<name>.py imported as a module (skips the test where torch is not installed)."""
    import importlib.util

    pytest.importorskip("torch")
    if str(BENCH_SCRIPTS) not in sys.path:  # as when run as a script: its folder first (torch_serve.py)
        sys.path.insert(0, str(BENCH_SCRIPTS))
    spec = importlib.util.spec_from_file_location(name, BENCH_SCRIPTS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bench_alternates_blocks_and_talks_to_a_serving_worker(tmp_path):
    """Blocks alternate round by round, rates are items/s, the best block is the figure; the torch worker protocol
    (one info line naming items_per_step, then one timing line per "<steps>" line) runs without torch here."""
    from wm_jax.bench.compare import TorchWorker, alternate, call_block, summarise, torch_figures

    order, walls = [], iter([1.0, 2.0, 0.5, 4.0, 1.0, 1.0])
    blocks = {"a": lambda: (order.append("a"), (10.0, next(walls), 2.0))[1],
              "b": lambda: (order.append("b"), (30.0, next(walls), 3.0))[1]}
    rates = alternate(blocks, rounds=3, pause=0)
    assert order == ["a", "b"] * 3
    assert rates["a"] == [(10.0, 5.0), (20.0, 5.0), (10.0, 5.0)] and [w for w, _ in rates["b"]] == [15.0, 7.5, 30.0]
    s = summarise(rates, cores=2)
    assert (s["a"]["best"], s["a"]["median"], s["a"]["best_cpu_x_cores"]) == (20.0, 10.0, 10.0)
    assert s["b"]["best"] == 30.0
    fig = torch_figures(rates, s, {"threads": 1}, "frames", cores=2, jax="a", torch="b")
    assert fig["torch_frames_per_s"] == 30.0 and fig["ratio_vs_torch"] == pytest.approx(20 / 30)
    assert fig["ratio_vs_torch_per_round"] == [0.667, 2.667, 0.333] and fig["ratio_vs_torch_median"] == 2 / 3
    calls = []
    items, wall, _ = call_block(lambda: calls.append(1), 7, seconds=0.0)()
    assert calls == [1] and items == 7.0 and wall >= 0  # at least one call

    serve = ("import json, sys\nprint(json.dumps({'torch': 'fake', 'threads': 1, %s}), flush=True)\n"
             "for line in sys.stdin:\n    if line.strip() in ('', 'quit'):\n        break\n"
             "    n = int(line)\n    print(json.dumps({'steps': n, 'wall_s': 0.01 * n, 'cpu_s': 0.02 * n%s}), "
             "flush=True)\n")
    (tmp_path / "serve.py").write_text(serve % ("'items_per_step': 4", ""))
    with TorchWorker(tmp_path / "serve.py", seconds=0.05) as w:
        assert w.info["items_per_step"] == 4 and w.steps == 5  # 0.05 s / 0.01 s per step
        assert w.block() == (20.0, 0.05, 0.1)
    assert w.proc.returncode == 0
    (tmp_path / "counted.py").write_text(serve % ("'items_per_step': 4", ", 'items': 3 * n"))
    with TorchWorker(tmp_path / "counted.py", steps=2) as w:  # items counted as they ran win over the nominal
        assert w.steps == 2 and w.block() == (6.0, 0.02, 0.04)
    (tmp_path / "silent.py").write_text(serve % ("'x': 0", ""))
    with pytest.raises(RuntimeError, match="items_per_step"):
        TorchWorker(tmp_path / "silent.py")
    with pytest.raises(FileNotFoundError, match="checkout"):
        TorchWorker("no_such_baseline.py")


def test_torch_m_has_m_s_parameters_and_computes_m_s_loss():
    """benchmarks/torch_mdnrnn.py trains M: nn.LSTM + head with M's trained parameter count at the bench's sizes,
    and with M's weights copied in, the loss wm_jax.models.mdnrnn.sequence_loss gives (z pinned to mu)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    torch = pytest.importorskip("torch")

    from wm_jax.models import mdnrnn as M

    tm = torch_script("torch_mdnrnn")
    count = lambda p: sum(x.size for x in jax.tree.leaves(p))  # noqa: E731
    assert tm.trained_params(tm.MDNRNN(32, 3, 256, 5)) == count(M.init_params(jax.random.key(0), 32, 3, 256, 5)) \
        == 422_882
    assert tm.trained_params(tm.MDNRNN(64, 1, 512, 5)) == count(M.init_params(jax.random.key(0), 64, 1, 512, 5))

    b, t, z, a, h, k = 3, 6, 4, 2, 8, 3
    params = M.init_params(jax.random.key(1), z, a, h, k)
    params["head"]["b"] = 0.1 * jax.random.normal(jax.random.key(2), params["head"]["b"].shape)
    model = tm.MDNRNN(z, a, h, k)
    with torch.no_grad():
        for dst, src in ((model.lstm.weight_ih_l0, params["lstm"]["w_x"].T), (model.lstm.weight_hh_l0,
                         params["lstm"]["w_h"].T), (model.lstm.bias_ih_l0, params["lstm"]["b"]),
                         (model.head.weight, params["head"]["w"].T), (model.head.bias, params["head"]["b"])):
            dst.copy_(torch.from_numpy(np.array(src)))
    rng = np.random.default_rng(0)
    mu = rng.normal(size=(b, t + 1, z)).astype(np.float32)
    batch = {"mu": mu, "logvar": np.full_like(mu, -80.0), "actions": rng.uniform(-1, 1, (b, t, a)).astype(np.float32),
             "rewards": rng.normal(size=(b, t)).astype(np.float32), "dones": (rng.uniform(size=(b, t)) < 0.3) * 1.0,
             "mask": (rng.uniform(size=(b, t)) < 0.8) * 1.0, "restart": np.zeros((b, t))}
    batch["restart"][:, 0] = 1.0
    want, _ = M.sequence_loss(params, jax.tree.map(jnp.asarray, batch), jax.random.key(3), restart_flag=False,
                              done_pos_weight=3.0)
    tmaj = {key: torch.from_numpy(np.swapaxes(v, 0, 1).astype(np.float32)) for key, v in batch.items()}
    got = tm.sequence_loss(model, tmaj, tmaj["mu"], done_pos_weight=3.0)
    assert float(got.detach()) == pytest.approx(float(want), rel=1e-5)


@pytest.mark.parametrize("env", ["carracing", "takecover"])
def test_torch_dream_step_is_the_jax_dream_step(env):
    """benchmarks/torch_dream.py: M's and C's parameter counts at the env's paper sizes, and one batched step (C's
    action, LSTM, head, τ-sampled z' with the trials' noise, reward) equal to controller.policy +
    dream.step_with_noise on every candidate x trial, with the same weights and noise."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    torch = pytest.importorskip("torch")

    from wm_jax.bench.dream import SIZES
    from wm_jax.envs import dream
    from wm_jax.models import controller as ctrl
    from wm_jax.models import mdnrnn as M

    td = torch_script("torch_dream")
    s = SIZES[env]
    full = td.Dream(env, pop=2, trials=1, steps=1)
    assert td.model_params(full.m) == sum(x.size for x in jax.tree.leaves(
        M.init_params(jax.random.key(0), s["z"], s["action"], s["hidden"])))
    template = ctrl.init_controller(jax.random.key(0), ctrl.feature_dim(s["inputs"], s["z"], s["hidden"]),
                                    s["action"], bias=s["bias"])
    assert td.controller_dim(full.s) == ctrl.num_params(template) == {"carracing": 867, "takecover": 1088}[env]

    pop, trials, hid, tau = 2, 3, 8, 1.3
    d = td.Dream(env, pop, trials, steps=10, tau=tau, mixtures=3, hidden=hid)
    torch.manual_seed(1)
    with torch.no_grad():
        d.m.head.bias.normal_()  # the done logit too: compared, not forced off
        flat = torch.randn(pop, td.controller_dim(d.s))
    w, b = d.controllers(flat)
    n, z_dim = pop * trials, s["z"]
    z, hc, u, eps = torch.randn(n, z_dim), torch.randn(2, n, hid) * 0.5, torch.rand(trials, z_dim), torch.randn(
        trials, z_dim)
    with torch.inference_mode():
        z2, h2, c2, reward, done_logit = d.step(z, hc[0], hc[1], w, b, u, eps)

    j = lambda x: jnp.asarray(x.detach().numpy())  # noqa: E731
    mdn = {"lstm": {"w_x": j(d.m.cell.weight_ih.T), "w_h": j(d.m.cell.weight_hh.T), "b": j(d.m.cell.bias_ih)},
           "head": {"w": j(d.m.head.weight.T), "b": j(d.m.head.bias)}}
    dp = dream.make_params(mdn, jnp.zeros((1, z_dim)), jnp.zeros((1, z_dim)), tau=tau, max_steps=10, kind=env)
    slot = jnp.repeat(jnp.arange(pop), trials)  # candidate-major, as the torch batch
    cp = {"w": j(w)[slot]} | ({"b": j(b)[slot, 0]} if b is not None else {})
    lstm = M.LSTMState(j(hc[1]), j(hc[0]))
    action = jax.vmap(lambda p, z_, c_, h_: ctrl.policy(p, z_, M.LSTMState(c_, h_), s["inputs"], env))(
        cp, j(z), lstm.c, lstm.h)
    trial = jnp.tile(jnp.arange(trials), pop)
    noise = dream.StepNoise(j(u)[trial], j(eps)[trial], jnp.full((n,), 0.5))
    state = dream.DreamState(j(z), lstm, M.LSTMState(jnp.zeros((n, 0)), jnp.zeros((n, 0))),
                             jnp.zeros((n,), jnp.int32), jnp.zeros((n,), bool), jnp.zeros((n, 0)))
    obs, new, r, _, info = jax.vmap(dream.step_with_noise, in_axes=(0, 0, 0, None))(noise, state, action, dp)
    np.testing.assert_allclose(h2.numpy(), new.lstm.h, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(c2.numpy(), new.lstm.c, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(z2.numpy(), new.z, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(reward.numpy().ravel(), r, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(done_logit.numpy().ravel(), info["done_logit"], rtol=1e-4, atol=1e-4)


def test_torch_cma_es_is_evosax_cma_es():
    """The torch baseline's CMA-ES: evosax's constants, and the same mean, step size and covariance after a tell."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    torch = pytest.importorskip("torch")
    from evosax.algorithms import CMA_ES

    td = torch_script("torch_dream")
    dim, pop = 10, 8
    ref = CMA_ES(population_size=pop, solution=jnp.zeros(dim))
    params = ref.default_params.replace(std_init=jnp.asarray(0.1))
    es = td.CMAES(dim, pop, sigma=0.1)
    for name in ("c_c", "c_1", "c_mu", "c_std", "d_std", "chi_n", "mu_eff"):
        assert getattr(es, name) == pytest.approx(float(getattr(params, name)), rel=1e-5), name
    np.testing.assert_allclose(es.weights.numpy(), params.weights, rtol=1e-5, atol=1e-7)
    state = ref.init(jax.random.key(0), jnp.zeros(dim), params)
    rng = np.random.default_rng(0)
    cand, fit = (rng.normal(size=(pop, dim)) * 0.1).astype(np.float32), rng.normal(size=pop).astype(np.float32)
    state, _ = ref.tell(jax.random.key(1), jnp.asarray(cand), jnp.asarray(fit), state, params)
    es.tell(torch.from_numpy(cand), torch.from_numpy(fit))
    np.testing.assert_allclose(es.mean.numpy(), state.mean, rtol=1e-4, atol=1e-6)
    assert es.std == pytest.approx(float(state.std), rel=1e-5)
    np.testing.assert_allclose(es.C.numpy(), state.C, rtol=1e-4, atol=1e-6)
    assert es.ask().shape == (pop, dim)


def test_torch_workers_serve_the_protocol():
    """The real baselines' --serve: one info line (torch version, threads, parameters, items_per_step), then one
    timing line per request; the dream's counts the candidate-steps it ran."""
    from wm_jax.bench.compare import TorchWorker

    pytest.importorskip("torch")
    with TorchWorker("torch_mdnrnn.py", ["--batch", 2, "--seq-len", 5, "--hidden", 8], steps=2) as w:
        assert w.info["items_per_step"] == 10 and w.info["threads"] >= 1 and w.info["params"] > 0
        items, wall, cpu = w.block()
        assert items == 20 and wall > 0 and cpu > 0
    with TorchWorker("torch_dream.py", ["--env", "takecover", "--pop", 2, "--trials", 2, "--steps", 7, "--hidden",
                                        8, "--chunk", 5], steps=1) as w:
        assert w.info["items_per_step"] == 28 and w.info["controller_params"] == 64 + 2 * 8
        assert w.block()[0] == 28
    assert w.proc.returncode == 0


def test_bench_mdnrnn_compare_torch_reports_the_ratio():
    """--compare-torch on tiny sizes: the torch rate, the best and median ratios and the per-round ratios land in the
    record, beside the alternated peak; options the torch baseline lacks are refused before anything runs."""
    from wm_jax.bench import mdnrnn as bench_mdnrnn

    pytest.importorskip("torch")
    parser = argparse.ArgumentParser()
    bench_mdnrnn.add_arguments(parser)
    out = bench_mdnrnn.measure(parser.parse_args(["--batch", "2", "--seq-len", "5", "--hidden", "8", "--rounds", "2",
                                                  "--min-seconds", "0.05", "--compare-torch"]))
    assert out["ratio_vs_torch"] == pytest.approx(out["timesteps_per_s"] / out["torch_timesteps_per_s"])
    assert len(out["ratio_vs_torch_per_round"]) == 2 and out["ratio_vs_torch_median"] > 0
    assert out["torch"]["params"] == 4 * 8 * (32 + 3 + 8 + 1) + 8 * 482 + 482  # M's: LSTM + head
    assert set(out["blocks"]) == {"custom:1", "peak", "torch"}
    assert out["peak_gflops_per_s"] == pytest.approx(out["blocks"]["peak"]["best"] / 1e9)
    with pytest.raises(ValueError, match="restart flag"):
        bench_mdnrnn.measure(parser.parse_args(["--restart-flag", "--compare-torch"]))


def test_bench_dream_compare_torch_reports_the_ratio():
    """The same for whole ES generations: candidate-steps counted alike on both sides."""
    pytest.importorskip("torch")
    parser = argparse.ArgumentParser()
    bench_dream.add_arguments(parser)
    tiny = ["--env", "carracing", "--pop", "4", "--trials", "2", "--steps", "10", "--chunk", "5", "--hidden", "8",
            "--single-device", "--repeats", "1", "--rounds", "1", "--compare-torch"]
    out = bench_dream.measure(parser.parse_args([*tiny, "--no-profile"]))
    assert out["slot_steps"] == 80 and out["torch"]["items_per_step"] == 80
    assert out["ratio_vs_torch"] == pytest.approx(out["dream_steps_per_s"] / out["torch_dream_steps_per_s"])
    assert out["torch"]["controller_params"] == out["controller_params"] == (32 + 8 + 1) * 3
    with pytest.raises(ValueError, match="one τ"):
        bench_dream.measure(parser.parse_args([*tiny, "--taus", "1,1.2"]))
