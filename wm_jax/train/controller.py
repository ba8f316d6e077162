"""``wm-jax train-controller``: train C with an evosax strategy inside M's dream (or in the real env).

Dream mode reads M (``wm_jax.train.mdnrnn.load_mdnrnn``) and the initial-state bank (row 0 of the first
cfg.es.initial_states ``<data_dir>/latents/ep_*.npz``), then runs ES generations (wm_jax.es) with an
orbax checkpoint in ``<run_dir>/controller`` after every cfg.es.checkpoint_every generations: ES state, PRNG
key, generation, best evaluated params, history. Killing and rerunning resumes the same trajectory.

Outputs in ``<run_dir>/controller``: ``params.npz`` (the final controller: the ES mean with the best dream
evaluation; with es.select_model, the best in the held-out model's dream), ``score.json``, ``metrics.jsonl`` +
``tb/``, ``DONE``; ``<run_dir>/plots/controller_curves.png`` and ``plots/dream_rollout.gif`` (if V is present).
``load_controller(path)`` loads ``params.npz``.
Real mode is ``wm_jax.train.controller_real.run_real_es(cfg)``.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from pathlib import Path

import numpy as np

from wm_jax.config import Config, ConfigError
from wm_jax.io import load_controller, load_mdnrnn, save_controller


# ---------------------------------------------------------------- inputs: M and the initial-state bank


def input_rms(cfg: Config, mdn: dict, episodes: int = 64, seed: int = 0) -> np.ndarray:
    """RMS [F] of C's inputs (cfg.controller.inputs) over `episodes` recorded episodes spread over the data set:
    z drawn from V's posterior (as C reads it in the real env), M's c and h teacher-forced on the recorded actions.
    Inputs far quieter than the rest are floored at a tenth of the median RMS (see es.scale_inputs)."""
    import jax
    import jax.numpy as jnp

    from wm_jax.data.dataset import open_dataset
    from wm_jax.data.sequences import episode_windows

    data = open_dataset(cfg.data_dir, skip_corrupt=cfg.data.skip_corrupt)
    n = min(episodes, len(data))
    if n == 0:
        raise FileNotFoundError(f"no episodes in {cfg.data_dir} to measure C's inputs on (es.scale_inputs)")
    w = episode_windows(data, sorted(set(np.linspace(0, len(data) - 1, n).round().astype(int).tolist())))
    rms = np.asarray(_input_rms(cfg.controller.inputs, cfg.mdnrnn.restart_flag)(
        mdn, *(jnp.asarray(w[k]) for k in ("mu", "logvar", "actions", "mask")), jax.random.PRNGKey(seed)))
    if not np.all(np.isfinite(rms)):
        raise ValueError(f"non-finite RMS of C's inputs on {cfg.data_dir} (M or the latents hold NaN/inf)")
    return np.maximum(rms, 0.1 * np.median(rms)).astype(np.float32)


@functools.lru_cache(maxsize=4)
def _input_rms(inputs: str, restart_flag: bool):
    """jit(M, mu, logvar, actions, mask, key) -> RMS [F] of C's inputs; one compiled function per input kind."""
    import jax
    import jax.numpy as jnp

    from wm_jax.models import controller as ctrl
    from wm_jax.models import mdnrnn as M

    def run(mdn, mu, logvar, actions, mask, key):
        z = M.sample_latents(key, mu, logvar)  # [N, T+1, Z]
        restart = jnp.zeros(actions.shape[:2], z.dtype).at[:, 0].set(1.0)
        x = jnp.swapaxes(M.model_inputs(z, actions, restart, restart_flag), 0, 1)  # [T, N, I]
        zt, m = jnp.swapaxes(z[:, :-1], 0, 1), jnp.swapaxes(mask, 0, 1)

        def step(carry, inp):
            state, sq = carry
            x_t, z_t, m_t = inp
            f = ctrl.features(z_t, state, inputs)  # what C reads at step t: z_t and M's state before x_t
            return (M.lstm_step(mdn, state, x_t), sq + (m_t[:, None] * f**2).sum(0)), None

        state = M.zero_state(mdn["lstm"]["w_h"].shape[0], (mu.shape[0],))
        f_dim = ctrl.feature_dim(inputs, mu.shape[-1], state.h.shape[-1])
        (_, sq), _ = jax.lax.scan(step, (state, jnp.zeros((f_dim,), z.dtype)), (x, zt, m))
        return jnp.sqrt(sq / jnp.maximum(m.sum(), 1.0))

    return jax.jit(run)


# ---------------------------------------------------------------- the training loop (τ-batched)


def initial_mean(cfg: Config, template: dict) -> dict | None:
    """The controller named by ``es.init`` (None when unset), checked against the template's keys and shapes."""
    if not cfg.es.init:
        return None
    try:
        params = load_controller(cfg.es.init)
    except FileNotFoundError as e:
        raise ConfigError(f"config key 'es.init': {e}") from None
    want = {k: tuple(np.shape(v)) for k, v in template.items()}
    got = {k: tuple(np.shape(v)) for k, v in params.items()}
    if want != got:
        raise ConfigError(f"config key 'es.init': the controller in {cfg.es.init} has arrays {got}, this config's "
                          f"controller (controller.* options, z and M sizes) needs {want}")
    bad = [k for k, v in params.items() if not np.all(np.isfinite(np.asarray(v)))]
    if bad:
        raise ConfigError(f"config key 'es.init': the controller in {cfg.es.init} holds non-finite values in {bad}")
    return {k: np.asarray(v, np.asarray(template[k]).dtype) for k, v in params.items()}


def _crossed(gen: int, n: int, every: int) -> bool:
    return every > 0 and gen // every > (gen - n) // every


def train_dream(cfg: Config, *, mdn: dict | None = None, bank=None, dyn: list[dict] | None = None,
                select: dict | None = None, taus: tuple[float, ...] | None = None, rms: np.ndarray | None = None,
                ckpt_dir: str | os.PathLike | None = None, out_dirs: list | None = None,
                stop_after: int | None = None, devices: list | None = None, gif: bool = True,
                progress: bool = True) -> dict:
    """Train one controller per τ in `taus` (default: (cfg.es.temperature,)) in one batched program.

    mdn / bank default to the run's M and latents, dyn to ``wm_jax.run.load_dynamics`` (es.dream_models), `select` to the
    held-out model es.select_model (<run>/mdnrnn_<e>; unused when es.select_model is 0), `rms` (es.scale_inputs) to
    ``input_rms`` on the run's data, or the checkpoint's when resuming. Checkpoints go to
    `ckpt_dir` (default <run>/controller); each τ's final controller to out_dirs[i] (default: ckpt_dir for a single
    τ). `stop_after` stops (as if killed) once that many generations are checkpointed. Returns a summary dict.
    """
    import jax
    from tqdm import tqdm

    from wm_jax.checkpoint import Checkpointer
    from wm_jax.envs import dream
    from wm_jax.es import carry_from_tree, carry_to_tree, get_program, with_taus
    from wm_jax.metrics import MetricsWriter, plot_curves
    from wm_jax.models import controller as ctrl
    from wm_jax.run import dream_params, load_dream_inputs, load_dynamics

    if mdn is None or bank is None:
        m2, b2 = load_dream_inputs(cfg)
        mdn, bank = mdn if mdn is not None else m2, bank if bank is not None else b2
    taus = tuple(taus) if taus else (cfg.es.temperature,)
    n_tau, es = len(taus), cfg.es
    ckpt_dir = Path(ckpt_dir) if ckpt_dir else cfg.run_dir / "controller"
    out_dirs = [Path(d) for d in out_dirs] if out_dirs else [ckpt_dir]
    dyn = dyn if dyn is not None else load_dynamics(cfg)
    dp = with_taus(dream_params(cfg, mdn, bank, dyn), taus)
    dp_select = None
    if es.select_model:  # C reads M; z', the end come from the held-out model (see es.select_model)
        if select is None:

            try:
                select = load_mdnrnn(cfg.run_dir, member=es.select_model)
            except FileNotFoundError as e:
                raise ConfigError(f"config key 'es.select_model={es.select_model}': {e}") from None
        dp_select = dream.held_out(with_taus(dream_params(cfg, mdn, bank, [select]), taus))
    z_dim = dp.init_mu.shape[-1]
    hidden = mdn["lstm"]["w_h"].shape[0]
    template = ctrl.controller_from_config(jax.random.PRNGKey(0), cfg.controller, cfg.env.name, z_dim, hidden)
    ckpt = Checkpointer(ckpt_dir, cfg)
    raw = ckpt.restore_raw() if ckpt.latest_step() is not None else None
    # es.scale_inputs: measured once, then read back from the checkpoint (the search space its ES state lives in)
    if raw is not None and (("input_rms" in raw) != es.scale_inputs):
        raise ConfigError(f"{ckpt_dir}: checkpoint was trained with es.scale_inputs={not es.scale_inputs}; "
                          "use another run name")
    if not es.scale_inputs:
        rms = None
    elif raw is not None:
        rms = np.asarray(raw["input_rms"], np.float32)
    elif rms is None:
        rms = input_rms(cfg, mdn, seed=es.seed)
    prog = get_program(cfg, template, devices=devices, input_rms=rms)
    carry = prog.init(jax.random.PRNGKey(es.seed), n_tau, initial_mean(cfg, template))
    best_params = jax.tree.map(np.asarray, prog.mean_params(carry))  # host copies: [τ, ...]
    best_eval = np.full((n_tau,), -np.inf, np.float32)  # the chosen means' evaluations in M's dream
    best_select = best_eval.copy()  # ... and in the held-out dream (= best_eval without es.select_model)
    eval_key = jax.random.fold_in(jax.random.PRNGKey(es.seed), 0x5EED)
    if raw is not None:
        if np.asarray(raw["taus"]).shape != (n_tau,) or not np.allclose(raw["taus"], taus):
            raise ConfigError(f"{ckpt_dir}: checkpoint holds taus {np.asarray(raw['taus']).tolist()}, "
                              f"this run asks for {list(taus)}; use another run name")
        carry = carry_from_tree(carry, raw["carry"])
        best_params = jax.tree.map(lambda t, x: np.asarray(x, t.dtype).reshape(t.shape), best_params,
                                   raw["best_params"])
        best_eval = np.asarray(raw["best_eval"], np.float32)
        best_select = np.asarray(raw.get("best_select", best_eval), np.float32)
    gen = int(carry.generation[0])
    main = jax.process_index() == 0  # multi-host: every process computes, process 0 writes files
    writer = MetricsWriter(ckpt_dir, resume_step=gen) if main else None
    pbar = tqdm(total=es.generations, initial=gen, desc="ES", disable=not progress, dynamic_ncols=True)
    tag = (lambda i, k: k) if n_tau == 1 else (lambda i, k: f"tau_{taus[i]:g}/{k}")
    last_eval = last_select = np.full((n_tau,), np.nan, np.float32)
    try:
        while gen < es.generations and (stop_after is None or gen < stop_after):
            n = min(es.generations_per_call, es.generations - gen)
            t0 = time.perf_counter()
            carry, m = prog.run(carry, dp, n)
            m = jax.tree.map(np.asarray, m)
            dt = time.perf_counter() - t0
            cand_steps = float(m["slot_steps"].sum())  # episode-steps computed (ended ones' included)
            for j in range(n):
                rec = {tag(i, k): m[k][j, i] for i in range(n_tau) for k in m}
                if writer:
                    writer.write(gen + j + 1, **rec, dream_steps_per_s=cand_steps / dt)
            gen += n
            if _crossed(gen, n, es.eval_every) or gen == es.generations:
                mean = jax.tree.map(np.asarray, prog.mean_params(carry))
                k_eval = jax.random.fold_in(eval_key, gen)
                last_eval = np.asarray(prog.evaluate(mean, k_eval, dp, es.eval_trials))
                last_select = last_eval if dp_select is None else np.asarray(
                    prog.evaluate(mean, k_eval, dp_select, es.eval_trials))
                better = last_select > best_select
                best_select = np.where(better, last_select, best_select)
                best_eval = np.where(better, last_eval, best_eval)
                best_params = jax.tree.map(lambda b, x: np.where(better.reshape(-1, *[1] * (x.ndim - 1)), x, b),
                                           best_params, mean)
                if writer:
                    rec = {tag(i, "eval_return"): last_eval[i] for i in range(n_tau)}
                    if dp_select is not None:
                        rec.update({tag(i, "select_return"): last_select[i] for i in range(n_tau)})
                    writer.write(gen, **rec)
            if _crossed(gen, n, es.checkpoint_every) or gen == es.generations:
                ckpt.save(gen, {"carry": carry_to_tree(carry), "best_params": best_params, "best_eval": best_eval,
                                "best_select": best_select, "taus": np.asarray(taus, np.float32),
                                **({"input_rms": rms} if rms is not None else {})})
            pbar.update(n)
            pbar.set_postfix(best=f"{m['best_return'][-1].max():.1f}", mean=f"{m['mean_return'][-1].mean():.1f}",
                             eval=" ".join(f"{v:.1f}" for v in last_eval), sps=f"{cand_steps / dt:,.0f}",
                             **({"held_out": " ".join(f"{v:.1f}" for v in last_select)} if dp_select is not None else {}))
    finally:
        pbar.close()
        if writer:
            writer.close()
    summary = {"generations": gen, "taus": list(taus), "eval_return": best_eval.tolist(),
               "select_return": best_select.tolist() if dp_select is not None else None,
               "dirs": [str(d) for d in out_dirs]}
    if gen < es.generations or not main:  # stopped early on purpose (tests), or not the writing process
        ckpt.close()
        return summary
    rms_mean = {}  # es.scale_inputs: the search space's input scales, summarised per part of C's input (z, c, h)
    if rms is not None:
        names = [q for q in ("z", "c", "h") if q in cfg.controller.inputs]
        edges = np.cumsum([0] + [z_dim if q == "z" else hidden for q in names])
        rms_mean = {"input_rms_mean": {q: float(rms[a:b].mean()) for q, a, b in zip(names, edges[:-1], edges[1:])}}
    for i, tau in enumerate(taus):
        p_i = jax.tree.map(lambda x: np.asarray(x[i]), best_params)
        score = {"tau": tau, "dream_eval_return": float(best_eval[i]), "eval_trials": es.eval_trials,
                 "generations": gen, "params": ctrl.num_params(p_i), **rms_mean}
        if dp_select is not None:  # the mean was chosen by its return in the held-out dream
            score.update(select_model=es.select_model, select_return=float(best_select[i]))
        save_controller(out_dirs[i], p_i, cfg.replace(**{"es.temperature": float(tau)}), score)
    stage = ckpt_dir.parent.name if ckpt_dir.name == "ckpt" else ckpt_dir.name  # sweep/ckpt -> sweep_curves.png
    png = cfg.run_dir / "plots" / f"{stage}_curves.png"
    curves = ["mean_return", "best_return", "eval_return", *(["select_return"] if dp_select is not None else []), "std"]
    plot_curves(ckpt_dir / "metrics.jsonl", png, curves,
                title=f"ES in the dream ({cfg.env.name})",
                series=[f"tau_{t:g}" for t in taus] if n_tau > 1 else None)
    if gif:  # one decoded dream episode per τ, each in the dream of its own temperature
        for i, tau in enumerate(taus):
            name = "dream_rollout.gif" if n_tau == 1 else f"dream_rollout_tau_{tau:g}.gif"
            p_i = jax.tree.map(lambda x: x[i], best_params)
            dream_gif(cfg, p_i, dp.replace(tau=dp.tau[i]), cfg.run_dir / "plots" / name)
    ckpt.mark_done(summary)
    ckpt.close()
    return summary


def dream_gif(cfg: Config, ctrl_params: dict, dp, path: Path, steps: int = 300) -> Path | None:
    """Decode one dream episode of `ctrl_params` through V into a GIF; skipped (None) when V is absent."""
    import jax

    from wm_jax.envs import dream_batch

    try:
        from wm_jax.io import load_vae
        from wm_jax.models.vae import decode_jit

        vae_params, _ = load_vae(cfg.run_dir)
    except (ImportError, FileNotFoundError, ConfigError) as e:
        print(f"dream GIF skipped: V is not available ({e})", file=sys.stderr)
        return None
    zs, _, alive = dream_batch.episode(ctrl_params, jax.random.PRNGKey(cfg.es.seed + 1), dp, steps,
                                       inputs=cfg.controller.inputs, env_name=cfg.env.name)
    n = int(np.asarray(alive).sum()) + 1
    frames = np.asarray(decode_jit(vae_params, zs))[:n]  # every step decoded: one shape, one program
    from wm_jax.viz import save_gif

    return save_gif(frames, path)
