"""Many processes on this machine: two processes on 127.0.0.1 (gloo CPU collectives, two host devices each) run
a sharded τ-sweep and V steps and get the numbers one process with four devices gets; only process 0 writes;
a multi-process run killed after a checkpoint resumes to the uninterrupted run's result.

This file is also the worker those processes run: ``python tests/test_distributed.py <task> <out> ...``.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

TAUS = (0.5, 1.3)
GENERATIONS = 4
V_STEPS, V_BATCH, V_Z = 3, 8, 8
TIMEOUT = 240  # seconds per launch of the two processes: a hang fails the test instead of the suite


def run_sweep(cfg, stop_after: int | None = None) -> dict:
    """The τ-sweep of tests/test_es.py's hand-made M (imported here, not at the top: importing the dream starts
    JAX, and a worker must join the others first; this folder is on sys.path under pytest and as a script)."""
    from test_es import BANK, toy_m

    from wm_jax.train.sweep import sweep

    return sweep(cfg, TAUS, mdn=toy_m(), bank=BANK, gif=False, progress=False, stop_after=stop_after)


def sweep_config(root: Path, name: str):
    from test_es import OVERRIDES

    from wm_jax.config import load_config

    return load_config(None, [*OVERRIDES, f"root={root}", f"name={name}", f"es.generations={GENERATIONS}",
                              "es.eval_every=2"])


def v_batches() -> list[np.ndarray]:
    rng = np.random.default_rng(1)
    return [rng.integers(0, 256, (V_BATCH, 64, 64, 3), dtype=np.uint8) for _ in range(V_STEPS)]


def v_steps(mesh) -> tuple[list[float], list[np.ndarray]]:
    """V_STEPS sharded V train steps from a fixed init on fixed batches: (losses, final parameter leaves)."""
    import jax
    import jax.numpy as jnp

    from wm_jax.config import VAEConfig
    from wm_jax.models import vae as V
    from wm_jax.parallel import replicate, shard_batch, to_host
    from wm_jax.train.vae import make_optimizer, make_train_step

    v = VAEConfig(z_dim=V_Z, batch_size=V_BATCH)
    params = jax.device_get(V.init_params(jax.random.key(0), V_Z))
    step = make_train_step(v, mesh)
    p, s = replicate(params, mesh), replicate(make_optimizer(v).init(params), mesh)
    key_data = np.asarray(jax.random.key_data(jax.random.key(7)))
    losses = []
    for i, frames in enumerate(v_batches()):
        p, s, m = step(p, s, shard_batch(frames, mesh), key_data, jnp.int32(i))
        losses.append(float(to_host(m["loss"])))
    return losses, [np.asarray(x) for x in jax.tree.leaves(to_host(p))]


# ---------------------------------------------------------------- the worker (runs in each subprocess)


def worker(argv: list[str]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("task", choices=["v_and_killed_sweep", "sweep"])
    ap.add_argument("out", type=Path)
    args = ap.parse_args(argv)
    from wm_jax import distributed

    assert distributed.maybe_initialize(False), "the WM_JAX_* environment asks for a multi-process run"
    joined = distributed.initialize()  # a second call returns at once; other values are refused
    other = 1 - joined["process_id"]
    try:
        distributed.initialize(process_id=other)
    except distributed.DistributedError as e:
        print(f"rejoin as {other} refused: {e}", flush=True)
    import jax

    from wm_jax.parallel import make_mesh

    me = jax.process_index()
    print(f"process {me} of {jax.process_count()}: {jax.local_device_count()} local, {jax.device_count()} global "
          f"devices", flush=True)
    if args.task == "v_and_killed_sweep":
        from wm_jax.metrics import MetricsWriter, plot_curves

        with MetricsWriter(args.out / "who", tensorboard=False) as w:  # every process tries; process 0 writes
            w.write(1, process=me)
        plot_curves(args.out / "who" / "metrics.jsonl", args.out / "who" / f"plot_{me}.png", ["process"])
        losses, leaves = v_steps(make_mesh())
        if distributed.is_main_process():
            np.savez(args.out / "v.npz", *leaves, losses=np.asarray(losses))
    cfg = sweep_config(args.out, "multi")
    stop = 2 if args.task == "v_and_killed_sweep" else None
    run_sweep(cfg, stop)
    print(f"process {me}: READY", flush=True)
    if stop is not None:
        time.sleep(TIMEOUT)  # the test kills both processes here, after the checkpoint of generation 2


# ---------------------------------------------------------------- the launcher (runs in pytest)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(task: str, out: Path, n: int = 2) -> list[tuple[subprocess.Popen, Path]]:
    """Start `n` worker processes joined through a coordinator on 127.0.0.1, two host devices each."""
    flags = re.sub(r"--xla_force_host_platform_device_count=\d+", "", os.environ.get("XLA_FLAGS", ""))
    env = {**os.environ, "XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu",
           "WM_JAX_COORDINATOR": f"127.0.0.1:{free_port()}", "WM_JAX_NUM_PROCESSES": str(n),
           "WM_JAX_INIT_TIMEOUT": "120",
           # the resumed launch reads the programs the first one compiled (this test's own folder: nothing stale)
           "JAX_COMPILATION_CACHE_DIR": str(out / "xla")}
    procs = []
    for i in range(n):
        log = out / f"{task}_{i}.log"
        with open(log, "w") as f:
            procs.append((subprocess.Popen([sys.executable, __file__, task, str(out)], stdout=f,
                                           stderr=subprocess.STDOUT, env={**env, "WM_JAX_PROCESS_ID": str(i)},
                                           start_new_session=True), log))
    return procs


def wait_for(procs, done, what: str) -> None:
    """Poll until done(procs, log texts) or TIMEOUT; on a failure or timeout kill them all and show their logs."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < TIMEOUT:
        logs = [log.read_text() for _, log in procs]
        if done(procs, logs):
            return
        if any(p.poll() not in (None, 0) for p, _ in procs):
            break
        time.sleep(0.5)
    kill(procs)
    logs = "\n".join(f"--- process {i}:\n{log.read_text()[-3000:]}" for i, (_, log) in enumerate(procs))
    pytest.fail(f"{what}: the processes failed or did not finish in {TIMEOUT} s\n{logs}")


def kill(procs) -> None:
    for p, _ in procs:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)  # its own session: the process and anything it started
        p.wait()


@pytest.fixture(scope="module")
def runs():
    """The one-process reference (four devices) and the two-process runs: V steps plus a sweep killed after
    generation 2 (launch 1), the sweep resumed to generation 4 in two fresh processes (launch 2)."""
    import jax

    from wm_jax.metrics import read_jsonl
    from wm_jax.parallel import make_mesh

    with tempfile.TemporaryDirectory(prefix="wm_jax_test_dist_") as d:
        out, first, second = Path(d), [], []
        try:
            first = launch("v_and_killed_sweep", out)  # started first: they compile while this process does
            assert len(jax.devices()) == 4, "conftest forces 4 host devices"
            ref_v = v_steps(make_mesh())
            ref_cfg = sweep_config(out, "single")
            assert run_sweep(ref_cfg)["generations"] == GENERATIONS
            wait_for(first, lambda ps, logs: all("READY" in t for t in logs), "V steps + sweep to generation 2")
            kill(first)
            ckpt = sweep_config(out, "multi").run_dir / "sweep" / "ckpt"
            killed_at = (sorted(int(p.name) for p in ckpt.iterdir() if p.name.isdigit()), (ckpt / "DONE").exists())
            killed_records = read_jsonl(ckpt / "metrics.jsonl")
            second = launch("sweep", out)
            wait_for(second, lambda ps, logs: all(p.poll() == 0 for p, _ in ps), "resumed sweep")
        finally:  # a failure in this process must not leave the workers running
            kill(first + second)
        yield {"out": out, "ref_v": ref_v, "ref_cfg": ref_cfg, "killed_at": killed_at, "killed_records": killed_records,
               "logs": [log.read_text() for _, log in first + second]}


def test_two_processes_join_once_and_see_four_global_devices(runs):
    for i, text in enumerate(runs["logs"][:2]):
        assert f"process {i} of 2: 2 local, 4 global devices" in text, text[-2000:]
        assert f"rejoin as {1 - i} refused: already joined" in text  # initialize is idempotent, not re-entrant


def test_only_process_0_writes_metrics_and_plots(runs):
    from wm_jax.metrics import read_jsonl

    who = runs["out"] / "who"
    assert read_jsonl(who / "metrics.jsonl") == [{"step": 1, "process": 0.0}]
    assert (who / "plot_0.png").stat().st_size > 0 and not (who / "plot_1.png").exists()


def test_a_process_alone_is_main_and_writes(tmp_path, monkeypatch):
    """Without a multi-process run every process is main; a process told it is not (as process 1 is) opens,
    truncates and writes nothing, and draws no plot."""
    from wm_jax import distributed
    from wm_jax.metrics import MetricsWriter, plot_curves, read_jsonl

    assert distributed.is_main_process()
    with MetricsWriter(tmp_path / "main", tensorboard=False) as w:
        w.write(1, x=2.0)
    assert read_jsonl(tmp_path / "main" / "metrics.jsonl") == [{"step": 1, "x": 2.0}]
    monkeypatch.setattr(distributed, "is_main_process", lambda: False)
    with MetricsWriter(tmp_path / "main", resume_step=0, tensorboard=False) as w:  # would drop step 1 if it ran
        w.write(2, x=3.0)
    assert read_jsonl(tmp_path / "main" / "metrics.jsonl") == [{"step": 1, "x": 2.0}]
    plot_curves(tmp_path / "main" / "metrics.jsonl", tmp_path / "p.png", ["x"])
    assert not (tmp_path / "p.png").exists()


def test_settings_come_from_arguments_then_environment(monkeypatch):
    from wm_jax import distributed as D

    for k in (D.ENV_COORDINATOR, D.ENV_NUM_PROCESSES, D.ENV_PROCESS_ID, D.ENV_DISTRIBUTED):
        monkeypatch.delenv(k, raising=False)
    assert not D.requested_by_env() and D.maybe_initialize(False) is False  # a plain run: nothing happens
    assert D.settings() == {"coordinator_address": None, "num_processes": None, "process_id": None}  # JAX detects
    monkeypatch.setenv(D.ENV_COORDINATOR, "10.0.0.1:1234")
    monkeypatch.setenv(D.ENV_NUM_PROCESSES, "4")
    monkeypatch.setenv(D.ENV_PROCESS_ID, "3")
    assert D.requested_by_env()
    assert D.settings() == {"coordinator_address": "10.0.0.1:1234", "num_processes": 4, "process_id": 3}
    assert D.settings("h:1", 2, 0) == {"coordinator_address": "h:1", "num_processes": 2, "process_id": 0}
    monkeypatch.setenv(D.ENV_PROCESS_ID, "4")
    with pytest.raises(D.DistributedError, match=r"process_id 4 is outside 0\.\.3"):
        D.settings()
    monkeypatch.setenv(D.ENV_NUM_PROCESSES, "two")
    with pytest.raises(D.DistributedError, match="WM_JAX_NUM_PROCESSES='two' must be an integer"):
        D.settings()


def test_joining_after_jax_started_is_refused_by_name(monkeypatch):
    import jax

    from wm_jax import distributed as D

    jax.devices()  # this process has started JAX (conftest's four devices)
    monkeypatch.setenv(D.ENV_DISTRIBUTED, "1")
    with pytest.raises(D.DistributedError, match="must run before any JAX computation"):
        D.maybe_initialize(False)
    assert not jax.distributed.is_initialized() and D.is_main_process()


def test_v_steps_equal_one_process(runs):
    """Three sharded V steps across two processes == one process with the same four-device mesh. The gradient's
    all-reduce sums the four shards in another order (gloo across processes): as in tests/test_vae.py's sharded
    test, losses agree to float precision and no weight moves further apart than Adam's ~lr per step."""
    got = np.load(runs["out"] / "v.npz")
    ref_losses, ref_leaves = runs["ref_v"]
    np.testing.assert_allclose(got["losses"], ref_losses, rtol=1e-5)
    assert ref_losses[0] != ref_losses[-1]  # it trains
    leaves = [got[f"arr_{i}"] for i in range(len(ref_leaves))]
    close = sum(int(np.isclose(a, b, rtol=1e-4, atol=1e-5).sum()) for a, b in zip(leaves, ref_leaves))
    assert close >= 0.9999 * sum(a.size for a in ref_leaves)
    for a, b in zip(leaves, ref_leaves):
        np.testing.assert_allclose(a, b, rtol=0, atol=2 * 1e-4 * V_STEPS)


def test_killed_two_process_sweep_resumes_to_the_one_process_result(runs):
    """The two-process τ-sweep, killed (SIGKILL) after generation 2 and resumed in two new processes, ends with
    the controllers and scores of one uninterrupted process: the population is split over four devices either
    way, so only the order of float sums differs (tolerances as tests/test_es.py's sharded test)."""
    from wm_jax.metrics import read_jsonl
    from wm_jax.train.controller import load_controller
    from wm_jax.train.sweep import tau_dir

    out, ref_cfg = runs["out"], runs["ref_cfg"]
    multi = sweep_config(out, "multi")
    assert runs["killed_at"] == ([2], False)  # checkpoint of generation 2 on disk, not finished, when killed
    for tau in TAUS:
        a, b = load_controller(tau_dir(ref_cfg.run_dir, tau)), load_controller(tau_dir(multi.run_dir, tau))
        for k in a:
            np.testing.assert_allclose(np.asarray(b[k]), np.asarray(a[k]), rtol=1e-4, atol=1e-5)
    ra = read_jsonl(ref_cfg.run_dir / "sweep" / "ckpt" / "metrics.jsonl")
    rb = read_jsonl(multi.run_dir / "sweep" / "ckpt" / "metrics.jsonl")
    # only process 0 wrote: every record once (a second writer would duplicate them), generation 3 after the kill
    assert [r["step"] for r in rb] == [r["step"] for r in ra] == [1, 2, 2, 3, 4, 4]
    # resumed, not redone: generations 1-2 are the killed run's records, measured speeds included
    assert rb[:3] == runs["killed_records"] and "dream_steps_per_s" in rb[0]
    for x, y in zip(ra, rb):
        assert x.keys() == y.keys()
        for k in x:
            if "return" in k or "fitness" in k:
                np.testing.assert_allclose(y[k], x[k], rtol=1e-4, atol=1e-5, err_msg=f"step {x['step']} {k}")
    assert (multi.run_dir / "plots" / "sweep_curves.png").stat().st_size > 0


if __name__ == "__main__":
    worker(sys.argv[1:])
