"""Data parallelism with jax.sharding: one mesh axis, batch split along it, over the devices of every process.

Test multi-device paths on a CPU with ``XLA_FLAGS=--xla_force_host_platform_device_count=4``. A multi-process
run (wm_jax.distributed, docs/distributed.md) joins first; ``make_mesh()`` then spans the *global* devices,
ordered by process, so process p holds a contiguous block of the batch axis. Batches enter the mesh one of two ways:

* ``shard_batch(tree, mesh)``: every process passes the same global batch (the data loaders read the same
  files with the same seed); each process keeps its devices' rows. The simplest, and what the stages do.
* ``shard_process_batch(tree, mesh)``: each process passes only its own rows (``process_rows``); the global
  batch is their concatenation in process order. Less host work and I/O where loading is the cost.

Results come back with ``to_host`` (a replicated result is read locally; a sharded one is gathered).
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

AXIS = "data"


def make_mesh(devices: list | None = None) -> Mesh:
    """A 1-D mesh over all devices of all processes (or the given ones), axis name ``"data"``."""
    devices = jax.devices() if devices is None else devices
    return Mesh(np.asarray(devices), (AXIS,))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def batch_sharded(mesh: Mesh) -> NamedSharding:
    """Leading axis split over the mesh, the rest replicated."""
    return NamedSharding(mesh, P(AXIS))


def put(x: Any, sharding: NamedSharding) -> jax.Array:
    """``jax.device_put(x, sharding)``, also where the sharding spans other processes' devices.

    There a host value (numpy, or a process-local jax array) must be the same on every process; it is put with
    ``make_array_from_callback``, each process filling its own devices. (``device_put`` would first all-gather
    it to assert that it is the same everywhere: a collective per call, and one that fails on any NaN, which
    never equals itself: evosax's initial states hold NaNs.) A global array is resharded by ``device_put``.
    """
    if sharding.is_fully_addressable or (isinstance(x, jax.Array) and not x.is_fully_addressable):
        return jax.device_put(x, sharding)
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Put host values (the same on every process) on every device of the mesh."""
    sharding = replicated(mesh)
    return jax.tree.map(lambda x: put(x, sharding), tree)


def _check_divisible(n_rows: int, n_devices: int, what: str) -> None:
    if n_rows % n_devices:
        raise ValueError(f"{what} {n_rows} is not divisible by {n_devices} devices")


def shard_batch(tree: Any, mesh: Mesh) -> Any:
    """Put global host arrays (the same on every process) on the mesh split along axis 0 (its size must divide
    by the mesh's device count); each process transfers only its own devices' rows."""
    n, sharding = mesh.devices.size, batch_sharded(mesh)

    def split(x: Any) -> jax.Array:
        _check_divisible(x.shape[0], n, "batch axis")
        return put(x, sharding)

    return jax.tree.map(split, tree)


def process_rows(n: int, mesh: Mesh) -> slice:
    """The rows of a global batch of `n` that this process's devices hold under ``batch_sharded(mesh)``:
    a contiguous block (the mesh orders devices by process). `n` must divide by the device count."""
    devs = list(mesh.devices.flat)
    _check_divisible(n, len(devs), "batch axis")
    per = n // len(devs)
    mine = [i for i, d in enumerate(devs) if d.process_index == jax.process_index()]
    if not mine or mine != list(range(mine[0], mine[-1] + 1)):
        raise ValueError(f"process {jax.process_index()}'s devices are not one contiguous block of the mesh")
    return slice(mine[0] * per, (mine[-1] + 1) * per)


def shard_process_batch(tree: Any, mesh: Mesh) -> Any:
    """Each process passes its own rows (leaves [n_local, ...], the same n_local everywhere); returns global
    arrays [n_local * processes, ...] split along axis 0, process p's rows at ``process_rows`` of the total."""
    sharding = batch_sharded(mesh)
    n_local_devices = sum(d.process_index == jax.process_index() for d in mesh.devices.flat)

    def local(x: Any) -> jax.Array:
        x = np.asarray(x)
        _check_divisible(x.shape[0], n_local_devices, "this process's batch axis")
        return jax.make_array_from_process_local_data(sharding, x)

    return jax.tree.map(local, tree)


def to_host(tree: Any) -> Any:
    """Numpy copies of (possibly global) arrays on every process: replicated leaves are read from a local
    device, leaves split across processes are gathered (a collective: every process must call it)."""
    from jax.experimental import multihost_utils

    def get(x: Any) -> Any:
        if not isinstance(x, jax.Array) or x.is_fully_addressable or x.is_fully_replicated:
            return np.asarray(x)
        return np.asarray(multihost_utils.process_allgather(x, tiled=True))

    return jax.tree.map(get, tree)
