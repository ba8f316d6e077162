"""How ``wm-jax bench <stage> --compare-torch`` (and the peak beside it) is timed: alternating blocks in one run.

The machine may be shared, so a benchmark's figures come from blocks that alternate, round by round: a block of
JAX work (>= some seconds), a block of fp32 matmuls (the measured peak) and, to compare, a block of the same work
in PyTorch, run by a ``benchmarks/torch_<stage>.py --serve`` worker in a separate process (so that neither
framework's idle threads spin on the cores while the other one is timed), with a short pause between blocks.
Each rate is the best block (the least disturbed); ``ratio_vs_torch`` divides the two best rates and
``ratio_vs_torch_median`` is the median of the per-round ratios (:func:`torch_figures`).

The worker protocol (``benchmarks/torch_vae.py``, ``torch_mdnrnn.py``, ``torch_dream.py``; their shared loop is
``benchmarks/torch_serve.py``): after its warm-up
the worker prints one JSON line (versions, ``threads``, ``params``, ``items_per_step``: the items one step
counts, e.g. images of a batch), then for each line "<steps>" read from stdin runs that many steps and prints
{"steps", "wall_s", "cpu_s"} (and "items" where a step's items are counted as they run); "quit" or end of input
ends it. torch is never imported here: only the worker, in its own process, imports it.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Self

BENCH_SCRIPTS = Path(__file__).resolve().parents[2] / "benchmarks"  # the PyTorch baselines (a wm-jax checkout)
Block = Callable[[], tuple[float, float, float]]  # () -> (items done, wall s, CPU s of the process doing them)


def matmul_block(seconds: float, n: int = 2048) -> Block:
    """A block of fp32 [n,n] @ [n,n] jitted matmuls for >= `seconds`: (FLOPs, wall, CPU)."""
    import jax
    import jax.numpy as jnp

    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    b = jax.random.normal(jax.random.key(1), (n, n), jnp.float32)
    f = jax.jit(lambda x, y: x @ y)
    f(a, b).block_until_ready()

    def run() -> tuple[float, float, float]:
        k, t0, c0 = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - t0 < seconds:
            f(a, b).block_until_ready()
            k += 1
        return 2.0 * n**3 * k, time.perf_counter() - t0, time.process_time() - c0

    return run


def call_block(call: Callable[[], object], items_per_call: float, seconds: float) -> Block:
    """A block of >= `seconds` of `call()` (which must block until its work is done), at least one call:
    (items_per_call x calls, wall, CPU)."""

    def run() -> tuple[float, float, float]:
        n, t0, c0 = 0, time.perf_counter(), time.process_time()
        while n == 0 or time.perf_counter() - t0 < seconds:
            call()
            n += 1
        return float(n * items_per_call), time.perf_counter() - t0, time.process_time() - c0

    return run


def alternate(blocks: dict[str, Block], rounds: int, pause: float = 0.3) -> dict[str, list[tuple[float, float]]]:
    """Run every block once per round, in order, `rounds` times -> {name: [(items/wall s, items/CPU s), ...]}."""
    out: dict[str, list[tuple[float, float]]] = {name: [] for name in blocks}
    for _ in range(rounds):
        for name, block in blocks.items():
            items, wall, cpu = block()
            out[name].append((items / wall, items / max(cpu, 1e-9)))
            time.sleep(pause)
    return out


def summarise(rates: dict[str, list[tuple[float, float]]], cores: int) -> dict[str, dict]:
    """Per block: best and median items/s (wall) and best items per CPU-second x cores."""
    return {name: {"best": max(w for w, _ in r), "median": statistics.median(w for w, _ in r),
                   "all": [round(w, 2) for w, _ in r], "best_cpu_x_cores": max(c for _, c in r) * cores}
            for name, r in rates.items()}


class TorchWorker:
    """``benchmarks/<script> --serve <args>`` in a child process; ``block()`` times one block of its steps.

    `steps`: steps per block; None: as many as take about `seconds`, from one timed step after the warm-up.
    """

    def __init__(self, script: str | Path, args: Sequence[str] = (), seconds: float = 2.0, steps: int | None = None):
        script = Path(script)
        if not script.is_absolute():
            script = BENCH_SCRIPTS / script
        if not script.is_file():
            raise FileNotFoundError(f"--compare-torch needs {script} (run from a wm-jax checkout)")
        self.script = script
        self.proc = subprocess.Popen([sys.executable, str(script), "--serve", *map(str, args)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.info = self._read()
        if "items_per_step" not in self.info:
            self.close()
            raise RuntimeError(f"{script.name} --serve: its first line names no items_per_step: {self.info}")
        if steps is None:
            _, wall, _ = self._run(1)
            steps = max(1, round(seconds / wall))
        self.steps = steps

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"benchmarks/{self.script.name} --serve ended early: is torch installed? "
                               "(pip install -e '.[bench]')")
        return json.loads(line)

    def _run(self, steps: int) -> tuple[float, float, float]:
        self.proc.stdin.write(f"{steps}\n")
        self.proc.stdin.flush()
        r = self._read()
        return float(r.get("items", steps * self.info["items_per_step"])), r["wall_s"], r["cpu_s"]

    def block(self) -> tuple[float, float, float]:
        return self._run(self.steps)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
            self.proc.wait(timeout=60)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def torch_figures(rates: dict[str, list[tuple[float, float]]], s: dict[str, dict], info: dict, unit: str,
                  cores: int, jax: str = "jax", torch: str = "torch") -> dict:
    """The record's PyTorch keys for rate `unit` (e.g. "images" -> torch_images_per_s), from the alternated blocks
    `jax` and `torch`: the best and median torch rates, its rate per CPU-second x its threads, ratio_vs_torch (best
    over best), ratio_vs_torch_median and _per_round (round by round), and the worker's info as "torch"."""
    per_round = [j / t for (j, _), (t, _) in zip(rates[jax], rates[torch])]
    return {"torch": info, f"torch_{unit}_per_s": s[torch]["best"], f"torch_{unit}_per_s_median": s[torch]["median"],
            f"torch_{unit}_per_cpu_s_x_threads": s[torch]["best_cpu_x_cores"] / cores * info.get("threads", cores),
            "ratio_vs_torch": s[jax]["best"] / s[torch]["best"], "ratio_vs_torch_median": statistics.median(per_round),
            "ratio_vs_torch_per_round": [round(r, 3) for r in per_round]}
