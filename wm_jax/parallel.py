"""Data parallelism over local devices with jax.sharding: one mesh axis, batch split along it.

Test multi-device paths on a CPU with ``XLA_FLAGS=--xla_force_host_platform_device_count=4``.
For multi-host runs call ``jax.distributed.initialize()`` before anything else (see README).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXIS = "data"


def make_mesh(devices: list | None = None) -> Mesh:
    """A 1-D mesh over all (or the given) devices, axis name ``"data"``."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """Leading axis split over the mesh, the rest replicated."""
    return NamedSharding(mesh, P(AXIS))


def replicate(tree: Any, mesh: Mesh) -> Any:
    return jax.device_put(tree, replicated(mesh))


def shard_batch(tree: Any, mesh: Mesh) -> Any:
    """Put host arrays on the mesh split along axis 0 (its size must divide by the device count)."""
    n = mesh.devices.size

    def put(x: Any) -> Any:
        if x.shape[0] % n:
            raise ValueError(f"batch axis {x.shape[0]} is not divisible by {n} devices")
        return jax.device_put(x, batch_sharded(mesh))

    return jax.tree.map(put, tree)
