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

import dataclasses
import os
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from wm_jax.config import Config, ConfigError
from wm_jax.io import load_controller, load_mdnrnn, save_controller
from wm_jax.train.controller_inputs import input_rms

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


@dataclasses.dataclass(frozen=True)
class DreamRun:
    """``train_dream``'s resolved inputs."""
    taus: tuple[float, ...]  # one controller per τ
    ckpt_dir: Path  # the ES checkpoints, metrics.jsonl, tb/
    out_dirs: list[Path]  # each τ's final controller
    mdn: dict  # M (C reads its state)
    dp: Any  # DreamParams of M's dream (and es.dream_models' ensemble), tau [τ]
    dp_select: Any  # DreamParams of the held-out dream (es.select_model), tau [τ]; None without it
    template: dict  # a controller pytree: the ES solution's shapes
    z_dim: int
    hidden: int


class DreamES(NamedTuple):
    """The dream ES's checkpointed state."""
    carry: Any  # wm_jax.es.ESCarry, leaves [τ, ...]
    best_params: dict  # leaves [τ, ...] (host copies): per τ, the ES mean with the best evaluation so far
    best_eval: np.ndarray  # [τ] float32 its return in M's dream (-inf: none evaluated yet)
    best_select: np.ndarray  # [τ] float32 ... in the held-out dream (= best_eval without es.select_model)
    rms: np.ndarray | None  # [F] es.scale_inputs: the RMS of C's inputs (the search space's scales); else None

    @property
    def generation(self) -> int:
        return int(self.carry.generation[0])


class DreamReport(NamedTuple):
    """What ``train_dream`` hands its progress_fn after every call of the ES program."""
    generation: int  # generations done
    generations: int  # generations run by this call
    metrics: dict  # the ES program's per-generation metrics, arrays [generations, τ]
    steps_per_s: float  # dream slot-steps computed per second in this call
    eval_return: np.ndarray | None  # [τ] the ES means' return in M's dream, if evaluated in this call
    select_return: np.ndarray | None  # [τ] ... in the held-out dream (es.select_model), if evaluated


def train_dream(cfg: Config, *, mdn: dict | None = None, bank=None, dyn: list[dict] | None = None,
                select: dict | None = None, taus: tuple[float, ...] | None = None, rms: np.ndarray | None = None,
                ckpt_dir: str | os.PathLike | None = None, out_dirs: list | None = None,
                stop_after: int | None = None, devices: list | None = None, gif: bool = True,
                progress: bool = True, progress_fn=None) -> dict:
    """Train one controller per τ in `taus` (default: (cfg.es.temperature,)) in one batched program.

    mdn / bank default to the run's M and latents, dyn to ``wm_jax.run.load_dynamics`` (es.dream_models), `select`
    to the held-out model es.select_model (<run>/mdnrnn_<e>; unused when es.select_model is 0), `rms`
    (es.scale_inputs) to ``input_rms`` on the run's data, or the checkpoint's when resuming. Checkpoints go to
    `ckpt_dir` (default <run>/controller); each τ's final controller to out_dirs[i] (default: ckpt_dir for a single
    τ). `stop_after` stops (as if killed) once that many generations are checkpointed. `progress_fn(DreamReport)`
    replaces the default report (metrics.jsonl + tb/ rows and a progress bar, ``DreamProgress``). Returns a summary.

    Steps: ``dream_run`` (inputs) → ``load_or_init_dream`` → ``dream_generations`` → ``save_dream_outputs``.
    """
    import jax

    from wm_jax.checkpoint import Checkpointer

    run = dream_run(cfg, mdn, bank, dyn, select, taus, ckpt_dir, out_dirs)
    ckpt = Checkpointer(run.ckpt_dir, cfg)
    prog, state = load_or_init_dream(cfg, run, ckpt, rms, devices)
    main = jax.process_index() == 0  # multi-host: every process computes, process 0 writes files
    report = progress_fn or DreamProgress(run, cfg.es.generations, state.generation, progress, write=main)
    try:
        state = dream_generations(cfg, run, prog, state, ckpt, report, stop_after)
    finally:
        if progress_fn is None:
            report.close()
    gen = state.generation
    summary = {"generations": gen, "taus": list(run.taus), "eval_return": state.best_eval.tolist(),
               "select_return": state.best_select.tolist() if run.dp_select is not None else None,
               "dirs": [str(d) for d in run.out_dirs]}
    if gen >= cfg.es.generations and main:  # else stopped early on purpose (tests), or not the writing process
        save_dream_outputs(cfg, run, state, gif)
        ckpt.mark_done(summary)
    ckpt.close()
    return summary


def dream_run(cfg: Config, mdn: dict | None, bank, dyn: list[dict] | None, select: dict | None,
              taus: tuple[float, ...] | None, ckpt_dir, out_dirs: list | None) -> DreamRun:
    """Resolve ``train_dream``'s inputs: the run's M and latents, dynamics and held-out model where not given."""
    import jax

    from wm_jax.envs import dream
    from wm_jax.es import with_taus
    from wm_jax.models import controller as ctrl
    from wm_jax.run import dream_params, load_dream_inputs, load_dynamics

    if mdn is None or bank is None:
        m2, b2 = load_dream_inputs(cfg)
        mdn, bank = mdn if mdn is not None else m2, bank if bank is not None else b2
    taus = tuple(taus) if taus else (cfg.es.temperature,)
    ckpt_dir = Path(ckpt_dir) if ckpt_dir else cfg.run_dir / "controller"
    out_dirs = [Path(d) for d in out_dirs] if out_dirs else [ckpt_dir]
    dyn = dyn if dyn is not None else load_dynamics(cfg)
    dp = with_taus(dream_params(cfg, mdn, bank, dyn), taus)
    dp_select = None
    if cfg.es.select_model:  # C reads M; z', the end come from the held-out model (see es.select_model)
        if select is None:
            try:
                select = load_mdnrnn(cfg.run_dir, member=cfg.es.select_model)
            except FileNotFoundError as e:
                raise ConfigError(f"config key 'es.select_model={cfg.es.select_model}': {e}") from None
        dp_select = dream.held_out(with_taus(dream_params(cfg, mdn, bank, [select]), taus))
    z_dim, hidden = dp.init_mu.shape[-1], mdn["lstm"]["w_h"].shape[0]
    template = ctrl.controller_from_config(jax.random.PRNGKey(0), cfg.controller, cfg.env.id, z_dim, hidden)
    return DreamRun(taus, ckpt_dir, out_dirs, mdn, dp, dp_select, template, z_dim, hidden)


def load_or_init_dream(cfg: Config, run: DreamRun, ckpt, rms: np.ndarray | None, devices: list | None):
    """(ESProgram, DreamES): the checkpoint's state when there is one (it must match this run's τ and
    es.scale_inputs), otherwise a fresh search centred on ``es.init``'s controller or the template."""
    import jax

    from wm_jax.es import carry_from_tree, get_program

    es, n_tau = cfg.es, len(run.taus)
    raw = ckpt.restore_raw() if ckpt.latest_step() is not None else None
    rms = _search_scales(cfg, run, raw, rms)
    prog = get_program(cfg, run.template, devices=devices, input_rms=rms)
    carry = prog.init(jax.random.PRNGKey(es.seed), n_tau, initial_mean(cfg, run.template))
    best_params = jax.tree.map(np.asarray, prog.mean_params(carry))  # host copies: [τ, ...]
    best_eval = np.full((n_tau,), -np.inf, np.float32)
    state = DreamES(carry, best_params, best_eval, best_eval.copy(), rms)
    if raw is None:
        return prog, state
    if np.asarray(raw["taus"]).shape != (n_tau,) or not np.allclose(raw["taus"], run.taus):
        raise ConfigError(f"{run.ckpt_dir}: checkpoint holds taus {np.asarray(raw['taus']).tolist()}, "
                          f"this run asks for {list(run.taus)}; use another run name")
    best_eval = np.asarray(raw["best_eval"], np.float32)
    return prog, state._replace(
        carry=carry_from_tree(carry, raw["carry"]),
        best_params=jax.tree.map(lambda t, x: np.asarray(x, t.dtype).reshape(t.shape), best_params,
                                 raw["best_params"]),
        best_eval=best_eval, best_select=np.asarray(raw.get("best_select", best_eval), np.float32))


def _search_scales(cfg: Config, run: DreamRun, raw: dict | None, rms: np.ndarray | None) -> np.ndarray | None:
    """es.scale_inputs: measured once (or given), then read back from the checkpoint (the search space its ES
    state lives in); None without es.scale_inputs."""
    if raw is not None and (("input_rms" in raw) != cfg.es.scale_inputs):
        raise ConfigError(f"{run.ckpt_dir}: checkpoint was trained with es.scale_inputs={not cfg.es.scale_inputs}; "
                          "use another run name")
    if not cfg.es.scale_inputs:
        return None
    if raw is not None:
        return np.asarray(raw["input_rms"], np.float32)
    return rms if rms is not None else input_rms(cfg, run.mdn, seed=cfg.es.seed)


def dream_generations(cfg: Config, run: DreamRun, prog, state: DreamES, ckpt, progress_fn,
                      stop_after: int | None = None) -> DreamES:
    """Run ES generations (es.generations_per_call per program call) up to es.generations (or `stop_after`):
    evaluate the means every es.eval_every generations, report every call, checkpoint every es.checkpoint_every."""
    import jax

    es = cfg.es
    eval_key = jax.random.fold_in(jax.random.PRNGKey(es.seed), 0x5EED)
    gen = state.generation
    while gen < es.generations and (stop_after is None or gen < stop_after):
        n = min(es.generations_per_call, es.generations - gen)
        t0 = time.perf_counter()
        carry, m = prog.run(state.carry, run.dp, n)
        m = jax.tree.map(np.asarray, m)
        dt = time.perf_counter() - t0
        state, gen, evals = state._replace(carry=carry), gen + n, (None, None)
        if _crossed(gen, n, es.eval_every) or gen == es.generations:
            state, evals = evaluate_means(prog, run, state, jax.random.fold_in(eval_key, gen), es.eval_trials)
        # episode-steps computed per second (ended ones' included)
        progress_fn(DreamReport(gen, n, m, float(m["slot_steps"].sum()) / dt, *evals))
        if _crossed(gen, n, es.checkpoint_every) or gen == es.generations:
            ckpt.save(gen, dream_checkpoint(state, run.taus))
    return state


def evaluate_means(prog, run: DreamRun, state: DreamES, key, trials: int) -> tuple[DreamES, tuple]:
    """The ES means play `trials` dream episodes (and as many in the held-out dream); each τ's mean replaces the
    best so far if it beats it there. Returns the new state and (eval returns [τ], held-out returns [τ] or None)."""
    import jax

    mean = jax.tree.map(np.asarray, prog.mean_params(state.carry))
    last_eval = np.asarray(prog.evaluate(mean, key, run.dp, trials))
    last_select = last_eval if run.dp_select is None else np.asarray(prog.evaluate(mean, key, run.dp_select, trials))
    better = last_select > state.best_select
    best_params = jax.tree.map(lambda b, x: np.where(better.reshape(-1, *[1] * (x.ndim - 1)), x, b),
                               state.best_params, mean)
    state = state._replace(best_params=best_params, best_eval=np.where(better, last_eval, state.best_eval),
                           best_select=np.where(better, last_select, state.best_select))
    return state, (last_eval, last_select if run.dp_select is not None else None)


def dream_checkpoint(state: DreamES, taus: tuple[float, ...]) -> dict:
    """The checkpoint tree of a DreamES (``load_or_init_dream`` reads it back)."""
    from wm_jax.es import carry_to_tree

    return {"carry": carry_to_tree(state.carry), "best_params": state.best_params, "best_eval": state.best_eval,
            "best_select": state.best_select, "taus": np.asarray(taus, np.float32),
            **({"input_rms": state.rms} if state.rms is not None else {})}


class DreamProgress:
    """``train_dream``'s default progress_fn: a metrics.jsonl + tb/ row per generation and per evaluation
    (``write``: process 0 only) and a progress bar. Keys are tagged ``tau_<τ>/`` when there are several τ."""

    def __init__(self, run: DreamRun, generations: int, start: int, progress: bool, write: bool):
        from tqdm import tqdm

        from wm_jax.metrics import MetricsWriter

        self.taus, self.held_out = run.taus, run.dp_select is not None
        self.writer = MetricsWriter(run.ckpt_dir, resume_step=start) if write else None
        self.bar = tqdm(total=generations, initial=start, desc="ES", disable=not progress, dynamic_ncols=True)
        self.last_eval = self.last_select = np.full((len(run.taus),), np.nan, np.float32)

    def tag(self, i: int, k: str) -> str:
        return k if len(self.taus) == 1 else f"tau_{self.taus[i]:g}/{k}"

    def __call__(self, r: DreamReport) -> None:
        m, n_tau, first = r.metrics, len(self.taus), r.generation - r.generations
        for j in range(r.generations if self.writer else 0):
            rec = {self.tag(i, k): m[k][j, i] for i in range(n_tau) for k in m}
            self.writer.write(first + j + 1, **rec, dream_steps_per_s=r.steps_per_s)
        if r.eval_return is not None:
            self.last_eval = r.eval_return
            self.last_select = r.eval_return if r.select_return is None else r.select_return
            rec = {self.tag(i, "eval_return"): self.last_eval[i] for i in range(n_tau)}
            if self.held_out:
                rec.update({self.tag(i, "select_return"): self.last_select[i] for i in range(n_tau)})
            if self.writer:
                self.writer.write(r.generation, **rec)
        self.bar.update(r.generations)
        held = {"held_out": " ".join(f"{v:.1f}" for v in self.last_select)} if self.held_out else {}
        self.bar.set_postfix(best=f"{m['best_return'][-1].max():.1f}", mean=f"{m['mean_return'][-1].mean():.1f}",
                             eval=" ".join(f"{v:.1f}" for v in self.last_eval), sps=f"{r.steps_per_s:,.0f}", **held)

    def close(self) -> None:
        self.bar.close()
        if self.writer:
            self.writer.close()


def save_dream_outputs(cfg: Config, run: DreamRun, state: DreamES, gif: bool) -> None:
    """Each τ's final controller (params.npz + score.json in out_dirs[i]), the curves (from metrics.jsonl), and with
    `gif` one decoded dream episode per τ, each in the dream of its own temperature."""
    import jax

    from wm_jax.metrics import plot_curves
    from wm_jax.models import controller as ctrl

    n_tau, gen, held_out = len(run.taus), state.generation, run.dp_select is not None
    rms_mean = _rms_summary(cfg, state.rms, run.z_dim, run.hidden)
    for i, tau in enumerate(run.taus):
        p_i = jax.tree.map(lambda x, i=i: np.asarray(x[i]), state.best_params)
        score = {"tau": tau, "dream_eval_return": float(state.best_eval[i]), "eval_trials": cfg.es.eval_trials,
                 "generations": gen, "params": ctrl.num_params(p_i), **rms_mean}
        if held_out:  # the mean was chosen by its return in the held-out dream
            score.update(select_model=cfg.es.select_model, select_return=float(state.best_select[i]))
        save_controller(run.out_dirs[i], p_i, cfg.replace(**{"es.temperature": float(tau)}), score)
    ckpt_dir = run.ckpt_dir
    stage = ckpt_dir.parent.name if ckpt_dir.name == "ckpt" else ckpt_dir.name  # sweep/ckpt -> sweep_curves.png
    curves = ["mean_return", "best_return", "eval_return", *(["select_return"] if held_out else []), "std"]
    if (ckpt_dir / "metrics.jsonl").exists():  # written by the default progress_fn
        plot_curves(ckpt_dir / "metrics.jsonl", cfg.run_dir / "plots" / f"{stage}_curves.png", curves,
                    title=f"ES in the dream ({cfg.env.id})",
                    series=[f"tau_{t:g}" for t in run.taus] if n_tau > 1 else None)
    for i, tau in enumerate(run.taus if gif else ()):
        name = "dream_rollout.gif" if n_tau == 1 else f"dream_rollout_tau_{tau:g}.gif"
        p_i = jax.tree.map(lambda x, i=i: x[i], state.best_params)
        dream_gif(cfg, p_i, run.dp.replace(tau=run.dp.tau[i]), cfg.run_dir / "plots" / name)


def _rms_summary(cfg: Config, rms: np.ndarray | None, z_dim: int, hidden: int) -> dict:
    """es.scale_inputs: the search space's input scales, summarised per part of C's input (z, c, h); {} without."""
    if rms is None:
        return {}
    names = [q for q in ("z", "c", "h") if q in cfg.controller.inputs]
    edges = np.cumsum([0] + [z_dim if q == "z" else hidden for q in names])
    return {"input_rms_mean": {q: float(rms[a:b].mean()) for q, a, b in zip(names, edges[:-1], edges[1:])}}


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
                                       inputs=cfg.controller.inputs, env_name=cfg.env.id)
    n = int(np.asarray(alive).sum()) + 1
    frames = np.asarray(decode_jit(vae_params, zs))[:n]  # every step decoded: one shape, one program
    from wm_jax.viz import save_gif

    return save_gif(frames, path)
