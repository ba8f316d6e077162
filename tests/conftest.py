"""Test-wide set-up: four forced host devices, so sharded paths run on a CPU-only machine.

Must run before JAX initialises its backend; single-device comparisons use ``make_mesh(jax.devices()[:1])``.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=4")
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
