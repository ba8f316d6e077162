"""``wm-jax encode``: V's (mu, logvar) for every frame of every episode, beside the data.

Writes ``<data_dir>/latents/ep_XXXXXX.npz`` (``mu``, ``logvar``: float32 [T+1, Z], row t encodes frames[t];
written to a temp name then renamed) and ``latents/manifest.json`` ({"z_dim", "vae_step", "episodes": [file
names done]}, rewritten atomically as episodes finish). Frames of consecutive episodes are packed into
fixed batches of ``vae.encode_batch_size`` (the last one zero-padded), so the jitted encoder compiles once;
batches are split over all local devices. Rerunning skips episodes already encoded with the same V step;
a different V step (or z_dim) re-encodes everything.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Iterator

import jax
import numpy as np

from wm_jax.config import Config


def make_encoder(batch: int, mesh=None) -> Callable:
    """Jitted ``(params, frames uint8 [batch,64,64,3]) -> (mu, logvar) [batch, Z]``, batch split over `mesh`."""
    from wm_jax.models.vae import compiler_options, encode

    if mesh is None:
        return jax.jit(encode, compiler_options=compiler_options())
    from wm_jax.parallel import batch_sharded, replicated

    if batch % mesh.devices.size:
        raise ValueError(f"config key 'vae.encode_batch_size' = {batch} must divide by {mesh.devices.size} devices")
    return jax.jit(encode, in_shardings=(replicated(mesh), batch_sharded(mesh)), out_shardings=replicated(mesh),
                   compiler_options=compiler_options())


def packed_batches(episodes: Iterator[tuple[int, np.ndarray]], batch: int
                   ) -> Iterator[tuple[np.ndarray, list[tuple[int, int, int, int]]]]:
    """Pack frames of consecutive episodes into uint8 [batch,64,64,3] arrays (last one zero-padded).

    Yields (frames, spans); a span (episode key, row in episode, row in batch, count) says where rows go.
    """
    buf = np.zeros((batch, 64, 64, 3), np.uint8)
    fill, spans = 0, []
    for key, frames in episodes:
        done = 0
        while done < len(frames):
            n = min(batch - fill, len(frames) - done)
            buf[fill:fill + n] = frames[done:done + n]
            spans.append((key, done, fill, n))
            fill, done = fill + n, done + n
            if fill == batch:
                yield buf.copy(), spans
                fill, spans = 0, []
    if fill:
        buf[fill:] = 0
        yield buf.copy(), spans


def encode_dataset(cfg: Config, progress: bool = True) -> dict:
    """Encode every listed episode of ``cfg.data_dir`` with the latest V of ``cfg.run_dir``; returns a summary."""
    from tqdm import tqdm

    from wm_jax.checkpoint import write_json_atomic
    from wm_jax.data.dataset import open_dataset
    from wm_jax.parallel import make_mesh, replicate
    from wm_jax.io import latest_vae_step, load_vae

    step = latest_vae_step(cfg.run_dir)
    if step is None:
        raise FileNotFoundError(f"no V checkpoint in {Path(cfg.run_dir) / 'vae'}; run `wm-jax train-vae` first")
    params, z_dim = load_vae(cfg.run_dir, step)
    dataset = open_dataset(cfg.data_dir, skip_corrupt=cfg.data.skip_corrupt)
    out_dir = Path(cfg.data_dir) / "latents"
    out_dir.mkdir(parents=True, exist_ok=True)
    done, todo = _pending(cfg, dataset, out_dir, z_dim, step)
    mesh = make_mesh()
    batch = cfg.vae.encode_batch_size
    enc = make_encoder(batch, mesh)
    params = replicate(params, mesh)
    manifest = {"z_dim": z_dim, "vae_step": step, "episodes": sorted(done)}
    write_json_atomic(out_dir / "manifest.json", manifest)
    total = sum(dataset.episodes[i].length + 1 for i in todo)
    bar = tqdm(total=total, unit="frame", desc="encode", disable=not progress, dynamic_ncols=True)
    partial: dict[int, list] = {}  # episode position -> [mu rows, logvar rows, rows still missing]
    t0, n_frames, n_eps = time.perf_counter(), 0, 0

    def episodes() -> Iterator[tuple[int, np.ndarray]]:
        for i in todo:
            ep = dataset.try_load(i)
            if ep is None:
                continue
            partial[i] = [np.empty((len(ep.frames), z_dim), np.float32),
                          np.empty((len(ep.frames), z_dim), np.float32), len(ep.frames)]
            yield i, ep.frames

    try:
        for frames, spans in packed_batches(episodes(), batch):
            mu, logvar = (np.asarray(a) for a in enc(params, frames))
            finished = []
            for i, r0, b0, n in spans:
                rec = partial[i]
                rec[0][r0:r0 + n], rec[1][r0:r0 + n] = mu[b0:b0 + n], logvar[b0:b0 + n]
                rec[2] -= n
                if rec[2] == 0:
                    finished.append(i)
            n_eps += _write_finished(dataset, [(i, partial.pop(i)) for i in finished], out_dir, manifest)
            used = sum(s[3] for s in spans)
            n_frames += used
            bar.update(used)
            bar.set_postfix(frames_s=f"{n_frames / max(time.perf_counter() - t0, 1e-9):.0f}")
    finally:
        bar.close()
    return {"encoded": n_eps, "skipped": len(dataset) - len(todo), "frames": n_frames, "vae_step": step,
            "z_dim": z_dim, "frames_per_s": n_frames / max(time.perf_counter() - t0, 1e-9),
            "latents_dir": str(out_dir)}


def _pending(cfg: Config, dataset, out_dir: Path, z_dim: int, step: int) -> tuple[set[str], list[int]]:
    """(latent files already written by this V step, positions of the episodes still to encode)."""
    from wm_jax.data.sequences import latents_manifest

    old = latents_manifest(cfg.data_dir)
    same = old.get("z_dim") == z_dim and old.get("vae_step") == step
    done = {f for f in old.get("episodes", []) if (out_dir / f).is_file()} if same else set()
    return done, [i for i in range(len(dataset)) if Path(dataset.episodes[i].file).name not in done]


def _write_finished(dataset, finished: list[tuple[int, list]], out_dir: Path, manifest: dict) -> int:
    """Write each finished episode's (mu, logvar) shard (non-finite latents raise, naming the episode) and, if any,
    the manifest listing them; returns how many were written."""
    from wm_jax.checkpoint import write_json_atomic

    for i, (m, lv, _) in finished:
        if not (np.isfinite(m).all() and np.isfinite(lv).all()):
            raise FloatingPointError(f"V produced non-finite latents for {dataset.path(i)}")
        name = Path(dataset.episodes[i].file).name
        _save_npz(out_dir / name, mu=m, logvar=lv)
        manifest["episodes"].append(name)
    if finished:
        write_json_atomic(out_dir / "manifest.json", manifest)
    return len(finished)


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, path)
