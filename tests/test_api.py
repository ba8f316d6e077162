"""The public API: `import wm_jax` is light and exports what its docstring lists; `check_examples` runs the README's
Python example and examples/ on a tiny run trained from Python (examples/train_tiny.py) on real TakeCover frames --
called by tests/test_smoke.py after its pipeline, in the same process, so the two share their compiled programs."""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np

import wm_jax

ROOT = Path(__file__).resolve().parents[1]


def readme_example() -> str:
    """The ```python block after the README's `<!-- api-example -->` marker."""
    text = (ROOT / "README.md").read_text()
    m = re.search(r"<!-- api-example -->\s*```python\n(.*?)```", text, re.S)
    assert m, "README.md has no python block after <!-- api-example -->"
    return m.group(1)


def run_py(*args: str, timeout: int = 600) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WM_JAX_COMPILE_CACHE": os.environ.get("WM_JAX_COMPILE_CACHE", "")}
    env = {k: v for k, v in env.items() if v != ""}
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, f"{args}: exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def run_example(script: str, *argv: str, monkeypatch) -> str:
    """Run examples/<script> in this process as `python examples/<script> argv...` (its programs compiled once
    for the whole test); returns what it printed."""
    import runpy

    monkeypatch.setattr(sys, "argv", [script, *argv])
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        runpy.run_path(str(ROOT / "examples" / script), run_name="__main__")
    return printed.getvalue()


def test_import_is_light_and_every_documented_name_resolves():
    out = run_py("-c", "import sys, wm_jax; print('jax' in sys.modules, 'vizdoom' in sys.modules)")
    assert out.split() == ["False", "False"]
    for name in wm_jax.__all__:
        assert getattr(wm_jax, name) is not None
        assert name in wm_jax.__doc__, f"wm_jax.{name} is exported but not documented in the package docstring"
    assert {"load_run", "load_config", "train_vae", "sweep_temperature", "evaluate"} <= set(wm_jax.__all__)


def check_examples(tmp_path: Path, monkeypatch) -> None:
    """examples/train_tiny.py, then the README's example, Run's semantics, dream_sweep.py and bench_dream.py on
    that run."""
    import jax
    import jax.numpy as jnp

    monkeypatch.chdir(ROOT)  # the example reads configs/quick.yaml
    out = run_example("train_tiny.py", "--root", str(tmp_path), monkeypatch=monkeypatch)
    assert "real return" in out
    run_dir = tmp_path / "tiny"
    code = readme_example().replace('"checkpoints/quick"', repr(str(run_dir)))
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "README.md", "exec"), {})
    lines = printed.getvalue().splitlines()
    assert len(lines) == 2 and lines[1].startswith("{0.1")  # mean return and longest episode; then {τ: mean}

    run = wm_jax.load_run(run_dir)
    assert run.controller is not None and run.vae is not None and run.bank[0].shape == (4, 8)
    one = run.rollout(run.controller, jax.random.key(3), tau=1.0, trials=8)
    pop = run.rollout(jax.tree.map(lambda x: jnp.stack([x, x]), run.controller), jax.random.key(3), tau=1.0, trials=8)
    assert one.returns.shape == (8,) and pop.returns.shape == (2, 8)
    np.testing.assert_allclose(pop.returns[0], one.returns, rtol=1e-6)  # same trials for every candidate
    np.testing.assert_allclose(pop.returns[1], one.returns, rtol=1e-6)
    swept = run.sweep_tau(run.controller, [0.5, 1.0], jax.random.key(3), trials=8)  # vmapped over τ
    assert swept.shape == (2, 8)
    np.testing.assert_allclose(swept[1], one.returns, rtol=1e-5)  # τ 1 inside the sweep = τ 1 alone
    assert run.decode(jnp.zeros((2, 8))).shape == (2, 64, 64, 3)

    out = run_example("dream_sweep.py", str(run_dir), "--trials", "4", "--taus", "0.5,1.3", monkeypatch=monkeypatch)
    assert len([ln for ln in out.splitlines() if ln.startswith("τ 0.5") or ln.startswith("τ 1.3")]) == 2
    out = run_example("bench_dream.py", str(run_dir), "--population", "4", "--trials", "2", "--repeats", "1",
                      monkeypatch=monkeypatch)
    assert "steps/s" in out
