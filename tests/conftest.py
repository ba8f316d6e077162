"""Test-wide set-up: four forced host devices, so sharded paths run on a CPU-only machine.

Must run before JAX initialises its backend; single-device comparisons use ``make_mesh(jax.devices()[:1])``.
"""

import os

# The four devices share the machine's cores, and a collective waits for all of them: on a loaded 2-core machine one
# device's share of a dream rollout can lag the others by more than XLA's default terminate timeout for a CPU
# collective (tens of seconds), which aborts the process with no Python traceback. Wait up to 15 minutes instead.
# The tests' programs are tiny and many: most of the suite's time is XLA compiling them, not running them. LLVM at
# -O0 compiles them ~1.5x faster (tests/test_es.py: 120 s against 179 s); the numbers a test compares come from
# the same flags on both sides. Benchmarks and runs keep XLA's default optimisation.
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4 "
                      "--xla_cpu_collective_call_warn_stuck_timeout_seconds=120 "
                      "--xla_cpu_collective_call_terminate_timeout_seconds=900 "
                      "--xla_backend_optimization_level=0")
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
# No persistent compile cache (wm_jax/compile_cache.py) unless a test asks for its own: the suite must not read
# programs an earlier run or the user's experiments left in ~/.cache, nor a cache the caller's environment names.
os.environ["WM_JAX_COMPILE_CACHE"] = "off"
os.environ.pop("JAX_COMPILATION_CACHE_DIR", None)
