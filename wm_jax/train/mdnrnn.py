"""``wm-jax train-mdnrnn``: train M (LSTM-MDN) on V's latents, data-parallel, resumable.

Each step draws z = μ + σ·ε from V's posterior with a fresh key (``fold_in(train_key, step)``), so a
resumed run reproduces the uninterrupted one exactly: the batch sequence is a function of (seed, step) too
(``sequence_batches(..., start=step)``). Loss: mixture NLL of z_{t+1} (mean over Z) + reward MSE + done BCE
(positives × ``mdnrnn.done_pos_weight``), padded steps masked; global-norm clipping, then Adam.

Folder ``<run_dir>/mdnrnn``: orbax step folders {params, opt_state, step, key, data_pos}, config.json,
metrics.jsonl + tb/, heldout.json (per-dimension NLL, done precision/recall on the held-out episodes),
DONE. Plots land in ``<run_dir>/plots``.
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from wm_jax.config import Config, MDNRNNConfig
from wm_jax.io import member_dir, read_done

STAGE = "mdnrnn"


# ---------------------------------------------------------------- pure pieces


def make_optimizer(m: MDNRNNConfig) -> optax.GradientTransformation:
    """Global-norm clipping then Adam (original: clip 1.0, lr 1e-3)."""
    return optax.chain(optax.clip_by_global_norm(m.grad_clip), optax.adam(m.learning_rate))


def loss_kwargs(m: MDNRNNConfig) -> dict:
    return dict(restart_flag=m.restart_flag, done_pos_weight=m.done_pos_weight, reward_weight=m.reward_weight,
                done_weight=m.done_weight, unroll=m.scan_unroll, head_dropout=m.head_dropout,
                reward_sign=m.reward_sign)


def make_train_step(m: MDNRNNConfig, optimizer: optax.GradientTransformation, mesh=None,
                    custom_grad: bool = True) -> Callable:
    """Jitted ``step(params, opt_state, batch, key) -> (params, opt_state, metrics)``.

    With a mesh: params/opt state replicated, batch split along axis "data" (its size must divide).
    """
    from wm_jax.models.mdnrnn import sequence_loss

    kw = loss_kwargs(m)

    def step(params, opt_state, batch, key):
        (loss, aux), grads = jax.value_and_grad(
            lambda p: sequence_loss(p, batch, key, custom_grad=custom_grad, **kw), has_aux=True)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, opt_state, {"loss": loss, "grad_norm": optax.tree.norm(grads),
                                   "valid_frac": batch["mask"].mean(), **aux}

    if mesh is None:
        return jax.jit(step, donate_argnums=(0, 1))
    from wm_jax.parallel import batch_sharded, replicated

    rep, shd = replicated(mesh), batch_sharded(mesh)
    return jax.jit(step, in_shardings=(rep, rep, shd, rep), out_shardings=(rep, rep, rep), donate_argnums=(0, 1))


@functools.lru_cache(maxsize=8)
def cached_train_step(m: MDNRNNConfig, devices: tuple, custom_grad: bool = True) -> Callable:
    """make_train_step(m, make_optimizer(m), mesh over `devices`), compiled once per (config, devices)."""
    from wm_jax.parallel import make_mesh

    return make_train_step(m, make_optimizer(m), make_mesh(list(devices)), custom_grad)


@functools.lru_cache(maxsize=1)
def _jit_init(fn: Callable) -> Callable:
    return jax.jit(fn, static_argnums=(1, 2, 3, 4, 5))  # one compile instead of many small op-by-op ones


def init_model(cfg: Config, key: jax.Array) -> dict:
    from wm_jax.models.mdnrnn import init_params

    m = cfg.mdnrnn
    return _jit_init(init_params)(key, cfg.vae.z_dim, cfg.action_dim, m.hidden, m.mixtures, m.restart_flag)


# ---------------------------------------------------------------- the loop


def _check_finite(step: int, metrics: dict, folder: Path, last_saved: int | None) -> dict:
    vals = {k: float(v) for k, v in jax.device_get(metrics).items()}
    if not (np.isfinite(vals["loss"]) and np.isfinite(vals["grad_norm"])):
        raise FloatingPointError(
            f"M training diverged at step {step}: loss {vals['loss']}, grad norm {vals['grad_norm']} "
            f"(nll {vals['nll']}, reward_mse {vals['reward_mse']}, done_bce {vals['done_bce']}); last good "
            f"checkpoint: step {last_saved} in {folder}. Lower mdnrnn.learning_rate or check the latents.")
    return vals


class MState(NamedTuple):
    """M's training state between steps (host side of the loop)."""

    params: Any  # M's weights (replicated over the mesh)
    opt_state: Any
    step: int  # steps done
    train_key: jax.Array  # step t's key is fold_in(train_key, t)
    data_pos: int  # batches consumed (sequence_batches(start=...))


def _open_data(cfg: Config):
    """(training set, held-out set or None) of the run's data, checked against the config's action size."""
    from wm_jax.data.dataset import open_dataset

    data = open_dataset(cfg.data_dir, skip_corrupt=cfg.data.skip_corrupt)
    if data.action_dim != cfg.action_dim:
        raise ValueError(f"{cfg.data_dir}: action_dim {data.action_dim}, config env {cfg.env.id} expects "
                         f"{cfg.action_dim}")
    m = cfg.mdnrnn
    return data.split(m.holdout_episodes) if m.holdout_episodes else (data, None)


def _restore_or_init(cfg: Config, ck, folder: Path, member: int) -> MState:
    """The latest checkpoint of `ck`, or a fresh M (init key and batch order folded with `member`)."""
    optimizer = make_optimizer(cfg.mdnrnn)
    stage_key = jax.random.fold_in(jax.random.key(cfg.seed), 2)  # stage tag 2 = M
    init_key, train_key = jax.random.split(jax.random.fold_in(stage_key, member) if member else stage_key)
    params = init_model(cfg, init_key)
    state = {"params": params, "opt_state": optimizer.init(params), "step": jnp.zeros((), jnp.int32),
             "key": jax.random.key_data(train_key), "data_pos": jnp.zeros((), jnp.int32)}
    start = ck.latest_step()
    if start is None:
        return MState(params, state["opt_state"], 0, train_key, 0)
    state = ck.restore(state)
    if int(state["step"]) != start:
        raise ValueError(f"{folder}: checkpoint {start} holds step {int(state['step'])}")
    print(f"resuming M from step {start} ({folder})")
    return MState(state["params"], state["opt_state"], start,
                  jax.random.wrap_key_data(jnp.asarray(state["key"])), int(state["data_pos"]))


def train(cfg: Config, *, devices: list | None = None, plots: bool = True, progress: bool = True,
          stop_after: int | None = None, member: int = 0) -> dict[str, Any]:
    """Train (or resume) M; returns the summary written to DONE. `stop_after` ends early (for tests).
    `member` e >= 1: a dynamics-ensemble member in <run>/mdnrnn_<e>, same config, its init key and batch order
    folded with e (its plots are not drawn: they would replace M's)."""
    from wm_jax.checkpoint import Checkpointer
    from wm_jax.parallel import make_mesh, replicate

    m = cfg.mdnrnn
    folder = member_dir(cfg.run_dir, member)
    train_ds, held_ds = _open_data(cfg)
    mesh = make_mesh(devices)
    if m.batch_size % mesh.devices.size:
        raise ValueError(f"mdnrnn.batch_size={m.batch_size} is not divisible by {mesh.devices.size} devices")
    ck = Checkpointer(folder, cfg)
    st = _restore_or_init(cfg, ck, folder, member)
    if ck.done and st.step >= m.steps:
        print(f"M already trained ({folder}/DONE); delete DONE or raise mdnrnn.steps to train further")
        ck.close()
        return read_done(folder)
    st = st._replace(params=replicate(st.params, mesh), opt_state=replicate(st.opt_state, mesh))
    data_seed = cfg.seed if member == 0 else cfg.seed + 7919 * member  # another batch order per member
    end = m.steps if stop_after is None else min(m.steps, stop_after)
    st = _loop(cfg, st, train_ds, data_seed, mesh, ck, folder, end, progress)
    summary: dict[str, Any] = {"step": st.step}
    if st.step >= m.steps:
        from wm_jax.train.mdnrnn_eval import finish

        summary.update(finish(cfg, jax.device_get(st.params), held_ds, folder, plots=plots and member == 0))
        ck.mark_done(summary)
    ck.close()
    return summary


def _loop(cfg: Config, st: MState, train_ds, data_seed: int, mesh, ck, folder: Path, end: int,
          progress: bool) -> MState:
    """Steps st.step+1..end; a checkpoint every mdnrnn.checkpoint_every steps and at `end`; metrics and the
    progress bar through ``_report`` (a step's numbers are read while the next one runs)."""
    from tqdm import tqdm

    from wm_jax.data.sequences import sequence_batches
    from wm_jax.metrics import MetricsWriter
    from wm_jax.parallel import shard_batch

    m, step = cfg.mdnrnn, st.step
    params, opt_state = st.params, st.opt_state
    train_step = cached_train_step(m, tuple(mesh.devices.flat))
    batches = sequence_batches(train_ds, m.seq_len, m.batch_size, data_seed, start=st.data_pos,
                               progress=progress, done_horizon=m.done_horizon)
    writer = MetricsWriter(folder, resume_step=step)
    bar = tqdm(total=m.steps, initial=step, unit="step", desc="M", disable=not progress, dynamic_ncols=True)
    pending, last_saved, ts_per_step = None, (step or None), m.batch_size * m.seq_len
    clock = {"t0": None, "n": 0}  # timesteps/s over reported steps since the first one (compile excluded)
    try:
        while step < end:
            batch = shard_batch(next(batches), mesh)
            params, opt_state, metrics = train_step(params, opt_state, batch, jax.random.fold_in(st.train_key, step))
            step += 1
            if pending is not None:  # read the previous step's numbers while this one runs
                _report(pending, folder, last_saved, writer, bar, m, ts_per_step, clock)
            pending = (step, metrics)
            if step % m.checkpoint_every == 0 or step == end:
                _report(pending, folder, last_saved, writer, bar, m, ts_per_step, clock)
                pending = None
                ck.save(step, {"params": params, "opt_state": opt_state, "step": jnp.asarray(step, jnp.int32),
                               "key": jax.random.key_data(st.train_key), "data_pos": jnp.asarray(step, jnp.int32)})
                last_saved = step
    finally:
        bar.close()
        writer.close()
    return st._replace(params=params, opt_state=opt_state, step=step, data_pos=step)


def _report(pending, folder, last_saved, writer, bar, m: MDNRNNConfig, ts_per_step: int, clock: dict) -> None:
    step, metrics = pending
    vals = _check_finite(step, metrics, folder, last_saved)
    now = time.perf_counter()
    if clock["t0"] is None:
        clock["t0"] = now
    rate = clock["n"] * ts_per_step / max(now - clock["t0"], 1e-9)  # padded steps count: the work is done
    clock["n"] += 1
    bar.update(1)
    bar.set_postfix(loss=f"{vals['loss']:.3f}", nll=f"{vals['nll']:.3f}", ts_s=f"{rate:,.0f}")
    if step % m.log_every == 0 or step == m.steps or step % m.checkpoint_every == 0:
        writer.write(step, timesteps_per_s=rate, **vals)
