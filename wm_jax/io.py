"""Run-folder I/O beside the models: load V, M and C, save C, read a stage's DONE summary.

Inference (``wm_jax.agent``, ``wm_jax.evaluation``, the public API) reads trained weights through this module
alone, so it never imports training code. Folder layout: docs/design.md.

    <run>/vae/        orbax steps {params, opt_state, ...}            -> load_vae(run) -> (params, z_dim)
    <run>/mdnrnn/     orbax steps {params, ...}; mdnrnn_<e>/ members -> load_mdnrnn(run, member) -> params
    <run>/controller/ params.npz + config.json (+ score.json)        -> load_controller(path) -> params
    <run>/data/latents/ep_*.npz                                      -> load_bank(data_dir, n) -> (mu, logvar)
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from wm_jax.config import Config, load_saved_config, save_config

VAE_DIR = "vae"
MDNRNN_DIR = "mdnrnn"
CONTROLLER_DIR = "controller"


def read_done(folder: str | os.PathLike) -> dict:
    """The summary a finished stage wrote to ``<folder>/DONE`` ({} when absent or unreadable)."""
    try:
        return json.loads((Path(folder) / "DONE").read_text()) or {}
    except (OSError, ValueError):
        return {}


def _restore_raw(folder: Path, step: int | None = None):
    from wm_jax.checkpoint import Checkpointer

    ck = Checkpointer(folder)
    try:
        return ck.restore_raw(step)
    finally:
        ck.close()


# ---------------------------------------------------------------- V


def latest_vae_step(run_dir: str | os.PathLike) -> int | None:
    """The newest V checkpoint step in ``<run_dir>/vae`` (None when there is none)."""
    from wm_jax.checkpoint import Checkpointer

    folder = Path(run_dir) / VAE_DIR
    if not folder.is_dir():
        return None
    ck = Checkpointer(folder)
    try:
        return ck.latest_step()
    finally:
        ck.close()


def load_vae(run_dir: str | os.PathLike, step: int | None = None) -> tuple[dict, int]:
    """(params, z_dim) of the latest (or given) V checkpoint in ``<run_dir>/vae``; params as jax arrays. Restored
    without a template, so a residual V's ``params["playfield"]`` (``vae.residual``) comes back with the weights."""
    import jax
    import jax.numpy as jnp

    from wm_jax.models.vae import z_dim_of

    folder = Path(run_dir) / VAE_DIR
    if not folder.is_dir():
        raise FileNotFoundError(f"no V checkpoints in {folder}; run `wm-jax train-vae` first")
    params = jax.tree.map(jnp.asarray, _restore_raw(folder, step)["params"])
    return params, z_dim_of(params)


# ---------------------------------------------------------------- M


def member_dir(run_dir: str | os.PathLike, member: int = 0) -> Path:
    """M's folder (member 0) or dynamics-ensemble member e's (``<run_dir>/mdnrnn_<e>``)."""
    if member < 0:
        raise ValueError(f"ensemble member must be >= 0, got {member}")
    return Path(run_dir) / (MDNRNN_DIR if member == 0 else f"{MDNRNN_DIR}_{member}")


def load_mdnrnn(run_dir: str | os.PathLike, member: int = 0) -> dict:
    """M's trained weights from ``<run_dir>/mdnrnn`` (or member e's ``mdnrnn_<e>``; latest checkpoint) as a dict
    of jax arrays."""
    import jax
    import jax.numpy as jnp

    folder = member_dir(run_dir, member)
    if not folder.is_dir():
        flag = f" --member {member}" if member else ""
        raise FileNotFoundError(f"no M checkpoints in {folder}; run `wm-jax train-mdnrnn{flag}` first")
    raw = _restore_raw(folder)
    params = raw.get("params") if isinstance(raw, dict) else None
    if not params or "lstm" not in params or "head" not in params:
        raise ValueError(f"{folder}: checkpoint has no M params (keys {list(raw)})")
    return jax.tree.map(jnp.asarray, params)


# ---------------------------------------------------------------- C


def _controller_file(path: str | os.PathLike) -> Path | None:
    p = Path(path)
    for cand in (p, p / CONTROLLER_DIR, p / "params.npz"):
        f = cand if cand.suffix == ".npz" else cand / "params.npz"
        if f.is_file():
            return f
    return None


def save_controller(directory: str | os.PathLike, params: dict, cfg: Config, score: dict | None = None) -> Path:
    """Write params.npz (atomic) + config.json (+ score.json) into `directory`; returns the params file."""
    from wm_jax.checkpoint import write_json_atomic

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    tmp = d / f".params.tmp{os.getpid()}.npz"
    np.savez(tmp, **{k: np.asarray(v) for k, v in params.items()})
    os.replace(tmp, d / "params.npz")
    save_config(cfg, d / "config.json")
    if score is not None:
        write_json_atomic(d / "score.json", score)
    return d / "params.npz"


def load_controller(path: str | os.PathLike) -> dict:
    """Controller params (``w``, ``b`` or ``w1, b1, w2, b2`` as jax arrays) from a run folder (→
    ``<run>/controller``), a controller folder or its params.npz. Its shape options are in that folder's
    config.json (``controller_config``)."""
    import jax.numpy as jnp

    f = _controller_file(path)
    if f is None:
        raise FileNotFoundError(f"no controller params.npz in {path} or {Path(path) / CONTROLLER_DIR}; "
                                f"run train-controller first")
    with np.load(f) as d:
        return {k: jnp.asarray(d[k]) for k in d.files}


def controller_config(cfg: Config, path: str | os.PathLike) -> Config:
    """`cfg` with ``controller.*`` taken from the controller folder's config.json (if any), so a controller
    trained with other inputs (an ablation, a sweep) is read with its own feature layout."""
    f = _controller_file(path)
    if f is None or not (f.parent / "config.json").is_file():
        return cfg
    saved = load_saved_config(f.parent)
    if saved.controller != cfg.controller:
        cfg = cfg.replace(**{f"controller.{k}": v for k, v in saved.controller.__dict__.items()})
    return cfg


def controller_digest(path: str | os.PathLike) -> str:
    """sha256 of a controller's weights (the arrays of <path>/params.npz, not the zip's bytes, which hold
    write times)."""
    f = Path(path) if Path(path).suffix == ".npz" else Path(path) / "params.npz"
    h = hashlib.sha256()
    with np.load(f, allow_pickle=False) as z:
        for k in sorted(z.files):
            a = z[k]
            h.update(f"{k}:{a.dtype}:{a.shape};".encode())
            h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------- the dream's initial states


def load_bank(data_dir: str | os.PathLike, n: int) -> tuple[np.ndarray, np.ndarray]:
    """(mu, logvar) [N, Z]: V's encoding of the first frame of up to `n` real episodes (sorted shard order)."""
    lat = Path(data_dir) / "latents"
    files = sorted(lat.glob("ep_*.npz"))[:n]
    if not files:
        raise FileNotFoundError(f"no latents in {lat} (ep_*.npz); run `wm-jax encode` first")
    mus, lvs = [], []
    for f in files:
        with np.load(f) as d:
            for k in ("mu", "logvar"):
                if k not in d or d[k].ndim != 2 or len(d[k]) == 0:
                    raise ValueError(f"{f}: key '{k}' missing or not a non-empty [T+1, Z] array")
            mus.append(d["mu"][0])
            lvs.append(d["logvar"][0])
    return np.stack(mus).astype(np.float32), np.stack(lvs).astype(np.float32)
