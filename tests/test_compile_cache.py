"""The persistent compile cache: where it lives, that a second process reads the first one's program and gets the
same numbers, that a corrupt entry only costs a recompile, and that the command line turns it on."""

import json
import os
import subprocess
import sys
from pathlib import Path

from wm_jax import compile_cache

# A program with random numbers and a reduction (float rounding would show a different executable); prints the
# cache events it caused and the bytes of its result.
PROGRAM = r"""
import json, sys
from wm_jax import compile_cache
path = compile_cache.enable()
import jax, jax.numpy as jnp
events = []
jax.monitoring.register_event_listener(lambda e, **kw: events.append(e))
@jax.jit
def f(key):
    x = jax.random.truncated_normal(key, -2.0, 2.0, (96, 96))
    return jnp.tanh(x @ x.T).sum(axis=0)
out = f(jax.random.key(3)).block_until_ready()
print(json.dumps({"dir": str(path), "hits": events.count("/jax/compilation_cache/cache_hits"),
                  "misses": events.count("/jax/compilation_cache/cache_misses"), "out": out.tobytes().hex()}))
"""


def _run(tmp_path: Path, **env: str) -> tuple[dict, str]:
    environ = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    environ.update({"WM_JAX_COMPILE_CACHE": str(tmp_path / "cache"),
                    "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0", **env})
    proc = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, env=environ, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1]), proc.stderr


def test_cache_dir_is_off_named_or_under_the_user_cache(tmp_path):
    assert compile_cache.cache_dir({"WM_JAX_COMPILE_CACHE": "off"}) is None
    assert compile_cache.cache_dir({"WM_JAX_COMPILE_CACHE": "0"}) is None
    tag = compile_cache.cpu_tag()
    assert compile_cache.cache_dir({"WM_JAX_COMPILE_CACHE": str(tmp_path)}) == tmp_path / tag
    assert compile_cache.cache_dir({"XDG_CACHE_HOME": str(tmp_path)}) == tmp_path / "wm-jax" / "xla" / tag
    assert tag == compile_cache.cpu_tag() and len(tag.rsplit("-", 1)[1]) == 12


def test_second_process_reads_the_program_and_gets_the_same_numbers(tmp_path):
    first, _ = _run(tmp_path)
    assert first["dir"] == str(tmp_path / "cache" / compile_cache.cpu_tag())
    assert first["hits"] == 0 and first["misses"] >= 1
    entries = [p for p in Path(first["dir"]).iterdir() if p.name.endswith("-cache")]
    assert entries, "the first process wrote no cache entry"
    assert compile_cache.entries(Path(first["dir"])) == len(entries) and compile_cache.entries(None) == 0
    second, _ = _run(tmp_path)
    assert second["hits"] >= 1 and second["misses"] == 0
    assert second["out"] == first["out"]

    for p in entries:  # a write cut short (a kill, a full disk): JAX warns and compiles again
        p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 3])
    third, stderr = _run(tmp_path)
    assert third["out"] == first["out"]
    assert "Error reading persistent compilation cache entry" in stderr

    off, _ = _run(tmp_path, WM_JAX_COMPILE_CACHE="off")
    assert off["dir"] == "None" and off["hits"] == 0 and off["out"] == first["out"]


def _cli_cache_dir(tmp_path: Path, argv: list[str]) -> str:
    """JAX_COMPILATION_CACHE_DIR after ``wm-jax <argv>`` (a --help: the command stops before any work)."""
    script = (f"import os\nfrom wm_jax import cli\ntry:\n    cli.main({argv!r})\nexcept SystemExit:\n    pass\n"
              "print(os.environ.get('JAX_COMPILATION_CACHE_DIR'))\n")
    environ = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    environ["WM_JAX_COMPILE_CACHE"] = str(tmp_path)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=environ, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


def test_the_command_line_turns_the_cache_on_before_jax_starts(tmp_path):
    assert _cli_cache_dir(tmp_path, ["train-vae", "--help"]) == str(tmp_path / compile_cache.cpu_tag())
    assert (tmp_path / compile_cache.cpu_tag()).is_dir()


def test_benchmarks_always_compile(tmp_path):
    """`wm-jax bench` reports its first call's compile time, so it must not read a cached program."""
    assert _cli_cache_dir(tmp_path, ["bench", "--help"]) == "None"
