"""``wm-jax train-vae``: train V on the collected frames, data-parallel over local devices, resumable.

Folder ``<run_dir>/vae``: orbax step folders {params, opt_state, step, key, data_seed, epoch, epoch_batch},
config.json, metrics.jsonl + tb/, DONE (summary incl. held-out per-pixel MSE), and for Atari background.png (the
playfield of ``vae.foreground_weight``, ``vae.residual`` and the foreground recall, written at the start; a residual
V's checkpoints also hold it, as params["playfield"]). Plots: ``<run_dir>/plots``.

Determinism: the step's sampling key is ``fold_in(key, step)``; epoch e reads
``frame_batches(train_set, B, seed=data_seed + e, epochs=1)``. A checkpoint stores (epoch, batches read in
that epoch), so a resumed run skips exactly those batches (bounded by one epoch) and then reproduces the
uninterrupted run. A non-finite loss or parameter stops training with :class:`NonFiniteError` naming the step;
checkpoints are only written after checking, so the last one on disk is always finite.
"""

from __future__ import annotations

import functools
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from wm_jax.config import Config, VAEConfig
from wm_jax.io import read_done
from wm_jax.models.vae import decode_jit, encode_jit, reconstruct
from wm_jax.train.vae_holdout import holdout_frames, holdout_metrics

STAGE = "vae"
BACKGROUND_FILE = "background.png"  # <run>/vae/background.png: the Atari playfield, uint8 [64,64,3] (lossless)
BACKGROUND_FRAMES = 2000  # training frames sampled for the playfield's median


class NonFiniteError(FloatingPointError):
    """Loss or parameters became NaN/inf; the message names the step and the last good checkpoint."""


# ---------------------------------------------------------------- pure pieces


def make_optimizer(v: VAEConfig) -> optax.GradientTransformation:
    """Adam (original: lr 1e-4). The learning rate lives in the optimiser state (``hyperparams``), so one
    compiled step serves every rate and a resumed run takes the rate of its current config."""
    return optax.inject_hyperparams(optax.adam)(learning_rate=v.learning_rate)


def set_learning_rate(opt_state: Any, lr: float) -> Any:
    opt_state.hyperparams["learning_rate"] = jnp.asarray(lr, jnp.float32)
    return opt_state


def init_state(cfg: Config, optimizer: optax.GradientTransformation, background: np.ndarray | None = None) -> dict:
    """Fresh training state: params, opt_state, step, key (uint32 key data), data position.
    `background`: the Atari playfield uint8 [64,64,3] a residual V (``vae.residual``) carries in its params."""
    from wm_jax.models.vae import init_params, make_residual

    k_init, k_train = jax.random.split(jax.random.key(cfg.seed))
    params = init_params(k_init, cfg.vae.z_dim)
    if cfg.vae.logvar_init != 0:  # the posterior noise V starts with (vae.logvar_init)
        params["enc_logvar"]["bias"] = jnp.full_like(params["enc_logvar"]["bias"], cfg.vae.logvar_init)
    if cfg.vae.residual:
        if background is None:
            raise ValueError("vae.residual needs the playfield background (uint8 [64,64,3])")
        params = make_residual(params, background)
    return {"params": params, "opt_state": optimizer.init(params), "step": jnp.asarray(0, jnp.int32),
            "key": jax.random.key_data(k_train), "data_seed": jnp.asarray(cfg.seed, jnp.int32),
            "epoch": jnp.asarray(0, jnp.int32), "epoch_batch": jnp.asarray(0, jnp.int32)}


def make_train_step(v: VAEConfig, mesh=None, plan: tuple[str, ...] | None = None,
                    background: np.ndarray | None = None) -> Callable:
    """Jitted ``step(params, opt_state, frames, key_data, step) -> (params, opt_state, metrics)``.

    frames: uint8 [B,64,64,3] (converted to [0,1] inside). The sample key is ``fold_in(key, step)``.
    With a mesh: params/opt state replicated, frames split along axis "data" (B must divide).
    `background`: the Atari playfield uint8 [64,64,3] that ``vae.foreground_weight`` > 0 needs; it is fixed for
    a run, so the step holds it as a constant.
    Cached per (kl_tolerance, the loss weights, background, mesh, plan), so reruns in one
    process reuse the compiled step (the learning rate is read from opt_state).
    """
    from wm_jax.models.vae import resolve_plan

    plan = resolve_plan(v.plan) if plan is None else tuple(plan)
    if v.foreground_weight > 0 and background is None:
        raise ValueError("vae.foreground_weight > 0 needs the playfield background (uint8 [64,64,3])")
    bg = np.asarray(background, np.uint8).tobytes() if v.foreground_weight > 0 else None
    return _make_train_step(v.kl_tolerance, v.fireball_weight, v.foreground_weight, bg, mesh, plan,
                            v.small_object_weight)


@functools.lru_cache(maxsize=16)
def _make_train_step(kl_tolerance: float, fireball_weight: float, foreground_weight: float,
                     background: bytes | None, mesh, plan: tuple[str, ...],
                     small_object_weight: float = 0.0) -> Callable:
    from wm_jax.models.vae import compiler_options
    from wm_jax.train.vae_loss import loss_fn

    v = VAEConfig(kl_tolerance=kl_tolerance, fireball_weight=fireball_weight, foreground_weight=foreground_weight,
                  small_object_weight=small_object_weight)
    optimizer = make_optimizer(v)
    bg = None if background is None else np.frombuffer(background, np.uint8).reshape(64, 64, 3)

    def step(params, opt_state, frames, key_data, step):
        key = jax.random.fold_in(jax.random.wrap_key_data(key_data), step)
        (loss, terms), grads = jax.value_and_grad(loss_fn, has_aux=True)(params, frames, key, v.kl_tolerance, plan,
                                                                       v.fireball_weight, v.foreground_weight, bg,
                                                                       v.small_object_weight)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, terms

    if mesh is None:
        return jax.jit(step, donate_argnums=(0, 1), compiler_options=compiler_options())
    from wm_jax.parallel import batch_sharded, replicated

    rep, dat = replicated(mesh), batch_sharded(mesh)
    return jax.jit(step, in_shardings=(rep, rep, dat, rep, rep), out_shardings=(rep, rep, rep),
                   donate_argnums=(0, 1), compiler_options=compiler_options())


def epoch_batches(train_set, batch_size: int, data_seed: int, epoch: int, skip: int) -> Iterator[tuple[int, int, Any]]:
    """Endless (epoch, batch index within epoch, uint8 [B,64,64,3]) from `epoch`, after skipping `skip` batches."""
    from wm_jax.data.dataset import frame_batches

    while True:
        it = frame_batches(train_set, batch_size, seed=data_seed + epoch, epochs=1)
        got = False
        for i, batch in enumerate(it):
            got = True
            if i >= skip:
                yield epoch, i, batch
        if not got:
            raise ValueError(f"{train_set.data_dir}: fewer training frames than one batch of {batch_size}")
        epoch, skip = epoch + 1, 0


def total_steps(v: VAEConfig, train_frames: int) -> int:
    if v.max_steps > 0:
        return v.max_steps
    return max(1, int(v.epochs * train_frames) // v.batch_size)


def tree_finite(tree: Any) -> bool:
    return all(bool(np.isfinite(np.asarray(x)).all()) for x in jax.tree.leaves(tree))


# ---------------------------------------------------------------- the training loop


class VState(NamedTuple):
    """V's training state between steps (host side of the loop)."""

    params: Any  # V's flax params (replicated over the mesh)
    opt_state: Any
    step: int  # steps done
    key_data: Any  # uint32 key data; step t samples with fold_in(key, t)
    data_seed: int  # epoch e reads frame_batches(seed=data_seed + e)
    pos: tuple[int, int]  # (epoch, batches read in it): where a resumed run picks up the data


def _open_data(cfg: Config):
    """(training set, held-out set) of the run's data: the last vae.holdout_episodes episodes are held out."""
    from wm_jax.data.dataset import open_dataset

    dataset = open_dataset(cfg.data_dir, skip_corrupt=cfg.data.skip_corrupt)
    if len(dataset) <= cfg.vae.holdout_episodes:
        raise ValueError(f"{cfg.data_dir}: {len(dataset)} episodes, need more than vae.holdout_episodes="
                         f"{cfg.vae.holdout_episodes}")
    return dataset.split(cfg.vae.holdout_episodes)


def _restore_or_init(cfg: Config, ck, folder: Path, background: np.ndarray | None = None) -> VState:
    """The latest checkpoint of `ck` (with the config's learning rate), or a fresh V (`background`: the playfield
    of a residual V, which its checkpoints hold in params["playfield"])."""
    state = init_state(cfg, make_optimizer(cfg.vae), background)
    if ck.latest_step() is not None:
        state = ck.restore(state)
        state["opt_state"] = set_learning_rate(state["opt_state"], cfg.vae.learning_rate)
        print(f"resuming V from step {int(state['step'])} ({folder})")
    return VState(state["params"], state["opt_state"], int(state["step"]), state["key"], int(state["data_seed"]),
                  (int(state["epoch"]), int(state["epoch_batch"])))


def train(cfg: Config, plots: bool = True, progress: bool = True, stop_after: int | None = None,
          devices: list | None = None) -> dict:
    """Train (or resume) V; returns the summary written to DONE.

    `stop_after` ends after that many more steps without marking DONE (tests simulate a kill with it);
    `devices` restricts the data-parallel mesh (default: all local devices).
    """
    from wm_jax.checkpoint import Checkpointer
    from wm_jax.parallel import make_mesh, replicate

    v = cfg.vae
    folder = Path(cfg.run_dir) / STAGE
    if (folder / "DONE").exists():
        print(f"V already trained ({folder}/DONE exists); delete it to train again")
        return read_done(folder)
    train_set, hold_set = _open_data(cfg)
    mesh = make_mesh(devices)
    if v.batch_size % mesh.devices.size:
        raise ValueError(f"config key 'vae.batch_size' = {v.batch_size} must be divisible by the "
                         f"{mesh.devices.size} devices")
    ck = Checkpointer(folder, cfg)
    background = playfield(cfg, train_set, write=True) if cfg.env.name == "atari" else None
    st = _restore_or_init(cfg, ck, folder, background)
    st = st._replace(params=replicate(st.params, mesh), opt_state=replicate(st.opt_state, mesh))
    goal = total_steps(v, train_set.num_frames)
    stop = goal if stop_after is None else min(goal, st.step + stop_after)
    st = _loop(cfg, st, train_set, mesh, ck, folder, goal, stop, progress, background)
    summary: dict = {"step": st.step}
    if st.step >= goal:
        summary.update(_finish(cfg, jax.device_get(st.params), hold_set, folder, st.step, plots, background))
        ck.mark_done(summary)
    ck.close()
    return summary


def _finish(cfg: Config, params: dict, hold_set, folder: Path, step: int, plots: bool,
            background: np.ndarray | None) -> dict:
    """Held-out metrics (also logged at the last step) and, with `plots`, the PNG visuals."""
    from wm_jax.metrics import MetricsWriter

    out = holdout_metrics(params, hold_set, env=cfg.env.id, background=background)
    with MetricsWriter(folder, resume_step=step) as mw:
        mw.write(step, holdout_mse=out["holdout_mse"])
    if plots:
        out["plots"] = [str(p) for p in write_plots(cfg, params, hold_set)]
    return out


def _loop(cfg: Config, st: VState, train_set, mesh, ck, folder: Path, goal: int, stop: int,
          progress: bool, background: np.ndarray | None) -> VState:
    """Steps st.step+1..stop; each step's metrics are checked (finite) and reported after the next one is
    dispatched; a checkpoint every vae.checkpoint_every steps and at `stop`, written only after checking.
    `background`: the Atari playfield (``vae.foreground_weight``), None for the other games."""
    from tqdm import tqdm

    from wm_jax.metrics import MetricsWriter
    from wm_jax.parallel import shard_batch

    v, step, pos = cfg.vae, st.step, st.pos
    params, opt_state = st.params, st.opt_state
    train_step = make_train_step(v, mesh, background=background)
    batches = epoch_batches(train_set, v.batch_size, st.data_seed, *pos)
    bar = tqdm(total=goal, initial=step, unit="step", desc="V", disable=not progress, dynamic_ncols=True)
    report = _Reporter(v, MetricsWriter(folder, resume_step=step), bar, ck, folder, step)
    pending = None  # (step, metrics) not yet checked: checked after the next dispatch
    try:
        while step < stop:
            epoch, i, frames = next(batches)
            frames = shard_batch(frames, mesh)  # a global array: jit takes no numpy batch across processes
            params, opt_state, m = train_step(params, opt_state, frames, st.key_data, jnp.int32(step))
            step, pos = step + 1, (epoch, i + 1)
            if pending is not None:
                report(*pending)
            pending = (step, m)
            bar.update(1)
            if step % v.checkpoint_every == 0 or step == stop:
                report(*pending)
                pending = None
                _save(ck, folder, st._replace(params=params, opt_state=opt_state, step=step, pos=pos))
        if pending is not None:
            report(*pending)
    finally:
        bar.close()
        report.metrics.close()
    return st._replace(params=params, opt_state=opt_state, step=step, pos=pos)


class _Reporter:
    """Checks a step's metrics (NonFiniteError naming the step) and logs them every vae.log_every steps, with
    the training rate counted from the first finished step (compile time excluded)."""

    def __init__(self, v: VAEConfig, metrics, bar, ck, folder: Path, step: int):
        self.v, self.metrics, self.bar, self.ck, self.folder = v, metrics, bar, ck, folder
        self.t0, self.n0 = None, step

    def __call__(self, s: int, m: dict) -> None:
        vals = {k: float(x) for k, x in m.items()}
        if not math.isfinite(vals["loss"]):
            raise NonFiniteError(f"non-finite V loss {vals['loss']} at step {s} (recon {vals['recon']}, "
                                 f"kl {vals['kl']}); last good checkpoint: step {self.ck.latest_step()} in "
                                 f"{self.folder}")
        if self.t0 is None:
            self.t0, self.n0 = time.perf_counter(), s
        if s % self.v.log_every == 0:
            extra = {}
            if s > self.n0:
                extra["img_per_s"] = (s - self.n0) * self.v.batch_size / max(time.perf_counter() - self.t0, 1e-9)
            self.metrics.write(s, **vals, **extra)
            self.bar.set_postfix(loss=f"{vals['loss']:.1f}", img_s=f"{extra.get('img_per_s', 0):.0f}")


def _save(ck, folder: Path, st: VState) -> None:
    """Checkpoint `st` after checking its parameters are finite (the last one on disk is always finite)."""
    host_params = jax.device_get(st.params)
    if not tree_finite(host_params):
        raise NonFiniteError(f"non-finite V parameters after step {st.step}; not saved; last good checkpoint: "
                             f"step {ck.latest_step()} in {folder}")
    ck.save(st.step, {"params": host_params, "opt_state": jax.device_get(st.opt_state),
                      "step": np.int32(st.step), "key": np.asarray(st.key_data), "data_seed": np.int32(st.data_seed),
                      "epoch": np.int32(st.pos[0]), "epoch_batch": np.int32(st.pos[1])})


def sample_frames(dataset, n: int) -> np.ndarray:
    """About `n` frames uint8 [~n,64,64,3] spread over `dataset`'s episodes: ceil(n / episodes) from each, at
    evenly spaced steps (the same frames on every call)."""
    per = -(-n // max(len(dataset), 1))
    out = []
    for i in range(len(dataset)):
        ep = dataset.try_load(i)
        if ep is not None:
            out.append(ep.frames[np.unique(np.linspace(0, len(ep.frames) - 1, per).round().astype(int))])
    if not out:
        raise ValueError(f"{dataset.data_dir}: no readable episode to sample frames from")
    return np.concatenate(out)


def playfield(cfg: Config, train_set=None, write: bool = False) -> np.ndarray:
    """The Atari playfield uint8 [64,64,3] of cfg's run: ``<run>/vae/background.png`` when it exists, else the
    lower median (``envs.frames.background_image``) of BACKGROUND_FRAMES frames sampled from V's training
    episodes (`train_set`, default: the run's data minus ``vae.holdout_episodes``) — the image V's training
    wrote, since the sample is fixed. `write`: save it there (V's training does, so ``vae.foreground_weight``
    and ``eval-vae`` read one image even if episodes are added to the data later)."""
    from wm_jax.envs.frames import background_image

    path = Path(cfg.run_dir) / STAGE / BACKGROUND_FILE
    if path.exists():
        from PIL import Image

        with Image.open(path) as img:
            return np.asarray(img.convert("RGB"), np.uint8)
    if train_set is None:
        train_set, _ = _open_data(cfg)
    bg = background_image(sample_frames(train_set, BACKGROUND_FRAMES))
    if write:
        from wm_jax.viz import save_png

        save_png(bg, path, scale=1)
    return bg


def write_plots(cfg: Config, params: dict, hold_set, n: int = 10) -> list[Path]:
    """<run_dir>/plots: vae_recon.png (held-out frames / reconstructions), vae_walk.png, vae_loss.png."""
    from wm_jax.metrics import plot_curves
    from wm_jax.viz import image_grid, latent_walk_rows, save_png

    plots = Path(cfg.run_dir) / "plots"
    out = [plot_curves(Path(cfg.run_dir) / STAGE / "metrics.jsonl", plots / "vae_loss.png",
                       ["loss", "recon", "kl", "mse", "img_per_s"], title="V training")]
    frames = holdout_frames(hold_set, 10_000)
    if len(frames):
        idx = np.linspace(0, len(frames) - 1, n).astype(int)
        x = frames[idx]
        recon = np.asarray(reconstruct(params, x))
        out.append(save_png(image_grid([x, recon]), plots / "vae_recon.png"))
        mu = np.asarray(encode_jit(params, x)[0])[0]
        rows = latent_walk_rows(mu, dims=range(min(6, mu.shape[-1])), steps=n, span=3.0)
        out.append(save_png(image_grid([np.asarray(decode_jit(params, jnp.asarray(r))) for r in rows]),
                            plots / "vae_walk.png"))
    return out
