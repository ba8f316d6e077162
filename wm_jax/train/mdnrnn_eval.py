"""After M's training: held-out NLL per z dimension, the done head's precision/recall, and the visuals.

``heldout.json`` (in ``<run_dir>/mdnrnn``): NLL per dimension of the targets z_{t+1} sampled from V's
posterior (as in training, fixed key) and of the posterior means; reward MSE; done head precision and recall
with the dream's threshold rule (done logit > 0) against ``terminated`` (deaths) over all held-out steps (with
``mdnrnn.done_horizon=k``: against the head's target, the last k steps of each death).
Visuals (``<run_dir>/plots``): ``mdnrnn_pred_vs_actual.png`` (a few z dimensions of one held-out episode:
V's μ_{t+1} against the mean of M's most likely component, ±σ) and, if V is trained,
``mdnrnn_rollout.gif`` (rows: real frame, V's reconstruction, M teacher-forced, M free-running at τ = 1).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from wm_jax.config import Config
from wm_jax.models import mdnrnn as M


def _pad_len(n: int, multiple: int = 64) -> int:
    return -(-n // multiple) * multiple  # few distinct shapes -> few compiles


@jax.jit
def _teacher_forced(params: dict, mu: jax.Array, logvar: jax.Array, x_extra: jax.Array, keep: jax.Array,
                    key: jax.Array):
    """Per-step NLLs [T, N, Z] (sampled and μ targets) and the head output, teacher-forced from μ inputs.

    mu, logvar: [N, T+1, Z]; x_extra: [N, T, A(+1)] (actions, restart); keep: [N, T].
    """
    z_dim = mu.shape[-1]
    x = jnp.concatenate([mu[:, :-1], x_extra], -1)
    out = M.forward_sequence(params, x, keep, z_dim)
    z_s = M.sample_latents(key, mu, logvar)
    tm = lambda a: jnp.swapaxes(a, 0, 1)  # noqa: E731
    return M.mdn_nll(out, tm(z_s[:, 1:])), M.mdn_nll(out, tm(mu[:, 1:])), out


def evaluate_heldout(cfg: Config, params: dict, held_ds) -> tuple[dict[str, Any], dict]:
    """Metrics on the held-out episodes (whole episodes from step 0) and the arrays the plots reuse."""
    from wm_jax.data.sequences import episode_windows

    n_steps = max(r.length for r in held_ds.episodes)
    w = episode_windows(held_ds, pad_to=_pad_len(n_steps))
    extra = [w["actions"]] + ([w["restart"][..., None]] if cfg.mdnrnn.restart_flag else [])
    nll_s, nll_mu, out = _teacher_forced(params, jnp.asarray(w["mu"]), jnp.asarray(w["logvar"]),
                                         jnp.asarray(np.concatenate(extra, -1)), jnp.asarray(1.0 - w["restart"]),
                                         jax.random.key(cfg.seed + 12345))
    mask = w["mask"].T.astype(bool)  # [T, N]
    nll_s, nll_mu = np.asarray(nll_s)[mask], np.asarray(nll_mu)[mask]  # [steps, Z]
    logit, reward = np.asarray(out.done_logit)[mask], np.asarray(out.reward)[mask]
    k = cfg.mdnrnn.done_horizon  # the head's target: death within k steps (the last k steps of a death)
    t_idx = np.arange(w["dones"].shape[1])[None]
    died = w["dones"][np.arange(len(w["lengths"])), w["lengths"] - 1] > 0.5
    target = died[:, None] & (t_idx >= w["lengths"][:, None] - k) & (w["mask"] > 0)
    deaths, rewards = target.T[mask], w["rewards"].T[mask]
    pred = logit > 0
    tp, fp, fn = int((pred & deaths).sum()), int((pred & ~deaths).sum()), int((~pred & deaths).sum())
    metrics = {
        "episodes": len(held_ds), "steps": int(mask.sum()),
        "nll_per_dim": nll_s.mean(0).round(5).tolist(), "nll_mean": float(nll_s.mean()),
        "nll_per_dim_mu": nll_mu.mean(0).round(5).tolist(), "nll_mean_mu": float(nll_mu.mean()),
        "reward_mse": float(((reward - rewards) ** 2).mean()),
        "deaths": int(died.sum()), "done_positives": int(deaths.sum()),
        "done_true_pos": tp, "done_false_pos": fp, "done_false_neg": fn,
        "done_precision": tp / (tp + fp) if tp + fp else None,
        "done_recall": tp / (tp + fn) if tp + fn else None,
        "done_rule": "done logit > 0 vs terminated" + (f" within {k} steps" if k > 1 else ""),
    }
    return metrics, {"windows": w, "out": jax.tree.map(lambda a: np.asarray(a)[:, 0], out)}


def plot_prediction(arrays: dict, png: Path, dims: int = 4) -> Path:
    """V's μ_{t+1} vs the mean of M's most likely component (±σ) for the first held-out episode."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from wm_jax.viz import save_png

    w, out = arrays["windows"], arrays["out"]  # out: [T, Z, K] for episode 0
    t = int(w["lengths"][0])
    best = np.argmax(out.log_pi[:t], -1)[..., None]  # [T, Z, 1]
    mean = np.take_along_axis(out.mu[:t], best, -1)[..., 0]
    sd = np.exp(np.take_along_axis(out.log_sigma[:t], best, -1)[..., 0])
    dims = min(dims, mean.shape[-1])
    fig, axes = plt.subplots(dims, 1, figsize=(9, 1.8 * dims), sharex=True, squeeze=False)
    steps = np.arange(1, t + 1)
    for d, ax in enumerate(axes[:, 0]):
        ax.plot(steps, w["mu"][0, 1:t + 1, d], lw=1.2, label="V: μ of z_{t+1}")
        ax.plot(steps, mean[:, d], lw=1.0, label="M: most likely component mean")
        ax.fill_between(steps, mean[:, d] - sd[:, d], mean[:, d] + sd[:, d], alpha=0.25, color="C1")
        ax.set_ylabel(f"z[{d}]")
    axes[0, 0].legend(loc="upper right", fontsize=7)
    axes[-1, 0].set_xlabel("step t+1 (held-out episode 0, teacher-forced)")
    fig.tight_layout()
    fig.canvas.draw()
    img = np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()
    plt.close(fig)
    return save_png(img, png, scale=1)


def rollout_gif(cfg: Config, params: dict, held_ds, arrays: dict, gif: Path, steps: int = 120) -> Path | None:
    """Real | V recon | M teacher-forced | M free-running (τ = 1) for held-out episode 0; None if V is absent."""
    try:
        from wm_jax.io import load_vae
        from wm_jax.models.vae import decode_jit

        vae, _ = load_vae(cfg.run_dir)
    except (ImportError, FileNotFoundError, ValueError) as e:
        print(f"skipping the M rollout GIF: V not available ({e})")
        return None
    from wm_jax.viz import image_grid, save_gif

    w, out = arrays["windows"], arrays["out"]
    t = min(int(w["lengths"][0]), steps)
    frames = held_ds.load(0).frames[1:t + 1]
    best = np.argmax(out.log_pi[:t], -1)[..., None]
    z_tf = np.take_along_axis(out.mu[:t], best, -1)[..., 0]
    z_free = free_rollout(params, w["mu"][0, 0], w["actions"][0, :t], jax.random.key(cfg.seed + 7),
                          cfg.mdnrnn.restart_flag, tau=1.0)
    rows = [np.asarray(decode_jit(vae, jnp.asarray(z))) for z in (w["mu"][0, 1:t + 1], z_tf, z_free)]
    grid = [image_grid([frames[i:i + 1], rows[0][i:i + 1], rows[1][i:i + 1], rows[2][i:i + 1]])
            for i in range(t)]
    return save_gif(np.stack(grid), gif, fps=15)


def free_rollout(params: dict, z0: np.ndarray, actions: np.ndarray, key: jax.Array, restart_flag: bool,
                 tau: float = 1.0) -> np.ndarray:
    """M dreaming from z0 [Z] under the recorded actions [T, A]: z_1..z_T [T, Z] sampled at temperature τ."""
    hidden, _ = M.sizes(params)
    z_dim = z0.shape[-1]

    def body(carry, inp):
        state, z = carry
        a, k, t = inp
        parts = [z, a] + ([(t == 0).astype(z.dtype)[None]] if restart_flag else [])
        state = M.lstm_step(params, state, jnp.concatenate(parts))
        z = M.sample_z(k, M.mdn_head(params, state.h, z_dim), tau)
        return (state, z), z

    n = actions.shape[0]
    _, zs = jax.lax.scan(body, (M.zero_state(hidden), jnp.asarray(z0)),
                         (jnp.asarray(actions), jax.random.split(key, n), jnp.arange(n)))
    return np.asarray(zs)


def finish(cfg: Config, params: dict, held_ds, folder: Path, plots: bool = True) -> dict[str, Any]:
    """Held-out metrics into ``heldout.json`` and the visuals; returns {"heldout": metrics, "plots": [...]}."""
    from wm_jax.checkpoint import write_json_atomic
    from wm_jax.metrics import plot_curves

    out: dict[str, Any] = {"heldout": None, "plots": []}
    plot_dir = Path(cfg.run_dir) / "plots"
    if plots and (folder / "metrics.jsonl").exists():
        out["plots"].append(str(plot_curves(folder / "metrics.jsonl", plot_dir / "mdnrnn_curves.png",
                                            ["loss", "nll", "reward_mse", "done_bce"], "M training")))
    if held_ds is None or len(held_ds) == 0:
        return out
    metrics, arrays = evaluate_heldout(cfg, params, held_ds)
    write_json_atomic(folder / "heldout.json", metrics)
    out["heldout"] = metrics
    if plots:
        out["plots"].append(str(plot_prediction(arrays, plot_dir / "mdnrnn_pred_vs_actual.png")))
        try:
            gif = rollout_gif(cfg, params, held_ds, arrays, plot_dir / "mdnrnn_rollout.gif")
            if gif:
                out["plots"].append(str(gif))
        except Exception as e:  # a visual must never lose a finished training run
            warnings.warn(f"M rollout GIF failed: {type(e).__name__}: {e}", stacklevel=2)
    return out
