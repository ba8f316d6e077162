"""CMA-ES (any evosax distribution-based strategy) with the controller playing the real environment.

``wm-jax train-controller --config F es.mode=real`` lands here (via wm_jax.train.controller). A generation:

    ask (jitted, evosax)  →  population × trials real episodes on the VectorEnv workers, every slot driven by
    its candidate through ONE jitted V → C → M step for all slots  →  fitness = −mean return (+ L2 term,
    wm_jax.es.ESProgram.fitness)  →  tell (jitted).

The ES state, its PRNG key and the generation count are the dream mode's ``ESCarry`` (τ axis of size 1),
checkpointed with the best evaluated controller after every ``es.checkpoint_every`` generations, so a killed
run resumes on the same trajectory: the trial seeds come from the ES key, which is part of the checkpoint.
Trials are common random numbers: every candidate of a generation plays the same ``es.trials`` seeds.
``es.init`` starts the search at a trained controller (e.g. the dream's C, fine-tuned here); that controller is
evaluated first, as generation 0, so the final choice can keep it if no later mean beats it.
Every ``es.eval_every`` generations the ES mean plays ``es.eval_trials`` fixed held-out seeds; the
``es.select_top`` best evaluated means are kept (checkpointed). At the end, with ``es.select_trials`` > 0, those means
and the last one play ``es.select_trials`` other held-out seeds each and the best there is the final controller
(a max over a few noisy evaluations favours a lucky mean); otherwise the best evaluated mean is.

Outputs in ``<run>/controller``: orbax steps, ``metrics.jsonl`` + ``tb/``, ``params.npz`` (best evaluated
mean; ``wm_jax.train.controller.load_controller``), ``score.json``, ``DONE``; ``<run>/plots/controller_curves.png``.
Paper configuration: ``configs/carracing.yaml`` (population 64 × 16 trials). CPU configuration for 2 cores:
``configs/carracing_cpu.yaml`` (population 16 × 2 trials, training episodes cut at 600 steps or 60 steps
without a new track tile: ``es.real_max_steps``, ``es.real_stall_steps``; the ES mean plays whole episodes).
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from wm_jax.config import Config, ConfigError, save_config

EVAL_SEED_BASE = 2_000_000  # held-out seeds for evaluating the ES mean (collection uses 0.., eval 10_000..)
SELECT_SEED_BASE = 3_000_000  # held-out seeds of the final choice among evaluated means (es.select_trials)


def trial_seeds(key, trials: int) -> list[int]:
    """Environment seeds of one generation's trials, drawn from the generation's rollout key."""
    import jax

    return [int(s) for s in np.asarray(jax.random.randint(key, (trials,), 0, 2**31 - 1))]


@dataclasses.dataclass(frozen=True)
class RealRun:
    """``run_real_es``'s models and compiled ES steps."""
    spec: Any  # wm_jax.agent.AgentSpec
    vae: dict  # V
    mdn: dict  # M
    prog: Any  # wm_jax.es.ESProgram (one τ, one device)
    ask: Callable  # jit(key, es_state) -> (population, es_state)
    tell: Callable  # jit(key, population, fitness, es_state) -> es_state
    fitness: Callable  # jit(population, returns [P, trials]) -> fitness [P]
    start: dict | None  # es.init's controller (evaluated as generation 0), or None


class RealES(NamedTuple):
    """The real-env ES's checkpointed state."""
    carry: Any  # wm_jax.es.ESCarry with a τ axis of size 1
    best_params: dict  # leaves [1, ...]: the best evaluated ES mean
    best_eval: np.ndarray  # [1] float32 its mean return on the held-out eval tracks (-inf: none yet)
    archive: dict  # leaves [K, ...]: the es.select_top best evaluated means
    archive_eval: np.ndarray  # [K] float32 their evaluations (-inf: an empty row)
    archive_gen: np.ndarray  # [K] int32 the generation each was evaluated at (-1: not recorded)

    @property
    def generation(self) -> int:
        return int(self.carry.generation[0])


def run_real_es(cfg: Config, *, stop_after: int | None = None, progress: bool = True, venv=None,
                progress_fn=None) -> dict:
    """Run (or resume) real-environment ES on the run in cfg.run_dir; returns a summary dict.

    `stop_after` stops once that many generations are checkpointed (as if killed; for tests).
    `venv` reuses an open :class:`~wm_jax.envs.vector.VectorEnv` (otherwise one is made from cfg.eval).
    `progress_fn(generation, metrics)` replaces the default report (metrics.jsonl + tb/ rows and a progress bar,
    ``RealProgress``). Steps: ``real_run`` → ``load_or_init_real`` → ``real_generations`` → ``save_real_outputs``.
    """
    from wm_jax.checkpoint import Checkpointer
    from wm_jax.envs.vector import VectorEnv
    from wm_jax.evaluation import check_eval_config, slot_layout

    if cfg.es.mode != "real":
        raise ConfigError("config key 'es.mode': run_real_es needs 'real'")
    check_eval_config(cfg)
    done = cfg.run_dir / "controller" / "DONE"
    if done.exists() and (summary := json.loads(done.read_text())).get("generations", 0) >= cfg.es.generations:
        # finished: nothing to load or play (its final choice alone is minutes of real episodes)
        print(f"C already trained ({done}); delete it or raise es.generations to train further")
        return summary
    run = real_run(cfg)
    ckpt = Checkpointer(cfg.run_dir / "controller", cfg)
    save_config(cfg, cfg.run_dir / "config.json")  # the run folder's "last command" config (DESIGN.md)
    state = load_or_init_real(cfg, run, ckpt)
    workers, slots = slot_layout(cfg, max(cfg.es.population * cfg.es.trials, cfg.es.eval_trials))
    own_venv = venv is None
    report = progress_fn or RealProgress(cfg, state.generation, progress)
    try:
        if own_venv:
            venv = VectorEnv(cfg.env, slots, workers)
        state, selection = real_generations(cfg, run, state, venv, ckpt, report, stop_after)
    finally:
        if progress_fn is None:
            report.close()
        if own_venv and venv is not None:
            venv.close()
    es, gen = cfg.es, state.generation
    summary = {"generations": gen, "eval_return": float(state.best_eval[0]), "eval_trials": es.eval_trials,
               "population": es.population, "trials": es.trials, "env": cfg.env.id,
               "dir": str(cfg.run_dir / "controller")}
    if selection is not None:
        summary["selection"] = selection
    if gen >= es.generations:  # else stopped on purpose: no final outputs
        save_real_outputs(cfg, state, summary)
        ckpt.mark_done(summary)
    ckpt.close()
    return summary


def real_run(cfg: Config) -> RealRun:
    """V and M (trained, or untrained per eval.*_untrained), the ES program and its jitted ask / tell / fitness."""
    import jax

    from wm_jax.agent import load_models, spec_from_config
    from wm_jax.es import get_program
    from wm_jax.models import controller as ctrl
    from wm_jax.train.controller import initial_mean

    spec = spec_from_config(cfg)
    vae, mdn = load_models(cfg, cfg.run_dir)
    template = ctrl.controller_from_config(jax.random.PRNGKey(0), cfg.controller, cfg.env.id, spec.z_dim,
                                           spec.hidden)
    prog = get_program(cfg, template, devices=jax.devices()[:1])
    strategy, es_params = prog.strategy, prog.es_params
    ask = jax.jit(lambda k, s: strategy.ask(k, s, es_params))
    tell = jax.jit(lambda k, pop, fit, s: strategy.tell(k, pop, fit, s, es_params)[0])
    return RealRun(spec, vae, mdn, prog, ask, tell, jax.jit(prog.fitness), initial_mean(cfg, template))


def load_or_init_real(cfg: Config, run: RealRun, ckpt) -> RealES:
    """The checkpoint's state when there is one (it must be a real-env ES checkpoint of this config's shapes),
    otherwise a fresh search centred on ``es.init``'s controller (or the template) with an empty archive."""
    import jax

    k = cfg.es.select_top
    carry = run.prog.init(jax.random.PRNGKey(cfg.es.seed), 1, run.start)
    best_params = jax.tree.map(np.asarray, run.prog.mean_params(carry))  # [1, ...]
    fresh = RealES(carry, best_params, np.full((1,), -np.inf, np.float32),
                   jax.tree.map(lambda x: np.repeat(x, k, axis=0), best_params),
                   np.full((k,), -np.inf, np.float32), np.zeros((k,), np.int32))
    if ckpt.latest_step() is None:
        return fresh
    raw = ckpt.restore_raw()
    where = f"{cfg.run_dir / 'controller'}: checkpoint step {ckpt.latest_step()}"
    if "carry" not in raw or "best_params" not in raw:
        raise ConfigError(f"{where} is not a real-env ES checkpoint")
    return _restore_real(fresh, raw, where)


def _restore_real(fresh: RealES, raw: dict, where: str) -> RealES:
    """`fresh` (for its structure, dtypes and shapes) filled from a checkpoint's raw tree; a checkpoint from before
    the archive becomes an archive of its best mean alone (generation -1: not recorded)."""
    import jax

    from wm_jax.es import carry_from_tree

    def like(t, x):  # x as template t's dtype and shape
        return np.asarray(x, t.dtype).reshape(t.shape)

    try:
        carry = carry_from_tree(fresh.carry, raw["carry"])
        best_params = jax.tree.map(like, fresh.best_params, raw["best_params"])
    except (KeyError, ValueError, TypeError) as e:
        raise ConfigError(f"{where} does not match this config's controller/ES shapes ({e}); use another run "
                          "name") from None
    best_eval = np.asarray(raw["best_eval"], np.float32).reshape(1)
    state = fresh._replace(carry=carry, best_params=best_params, best_eval=best_eval)
    if "archive_eval" in raw and np.asarray(raw["archive_eval"]).shape == fresh.archive_eval.shape:
        return state._replace(archive=jax.tree.map(like, fresh.archive, raw["archive"]),
                              archive_eval=np.asarray(raw["archive_eval"], np.float32),
                              archive_gen=np.asarray(raw["archive_gen"], np.int32))
    if not np.isfinite(best_eval[0]):
        return state
    archive_eval, archive_gen = fresh.archive_eval.copy(), fresh.archive_gen.copy()
    archive_eval[0], archive_gen[0] = best_eval[0], -1  # -1: its generation was not recorded
    return state._replace(archive=jax.tree.map(lambda a, b: np.concatenate([b, a[1:]]), fresh.archive, best_params),
                          archive_eval=archive_eval, archive_gen=archive_gen)


def real_generations(cfg: Config, run: RealRun, state: RealES, venv, ckpt, progress_fn,
                     stop_after: int | None = None) -> tuple[RealES, dict | None]:
    """ES generations on `venv` up to es.generations (or `stop_after`): the ES mean plays the eval tracks every
    es.eval_every generations (and first, at es.init's controller), a checkpoint every es.checkpoint_every; at the
    end, with es.select_trials, the final choice. Returns the state and the choice (``select_final``) or None."""
    import jax

    from wm_jax.runner import EpisodeSpec

    es, gen = cfg.es, state.generation
    eval_specs = [EpisodeSpec(EVAL_SEED_BASE + i) for i in range(es.eval_trials)]
    if run.start is not None and gen == 0:  # es.init: the starting controller is a candidate of the final choice too
        state, ret = evaluate_mean(cfg, run, state, venv, eval_specs)
        progress_fn(gen, {"eval_return": ret})
    while gen < es.generations and (stop_after is None or gen < stop_after):
        state, metrics = real_generation(cfg, run, state, venv)
        gen = state.generation
        if (es.eval_every > 0 and gen % es.eval_every == 0) or gen == es.generations:
            state, metrics["eval_return"] = evaluate_mean(cfg, run, state, venv, eval_specs)
        progress_fn(gen, metrics)
        if (es.checkpoint_every > 0 and gen % es.checkpoint_every == 0) or gen == es.generations:
            ckpt.save(gen, real_checkpoint(state))
    if gen < es.generations or es.select_trials <= 0:
        return state, None
    final_mean = jax.tree.map(np.asarray, run.prog.mean_params(state.carry))  # [1, ...]
    selection = select_final(run.spec, run.vae, run.mdn, venv, cfg, state.archive, state.archive_eval,
                             state.archive_gen, final_mean, gen)
    state = state._replace(best_params=jax.tree.map(lambda x: x[None], selection.pop("params")))
    progress_fn(gen, {"select_return": selection["return"]})
    return state, selection


def real_generation(cfg: Config, run: RealRun, state: RealES, venv) -> tuple[RealES, dict]:
    """One generation: ask → population × es.trials episodes (common seeds from the ES key) → fitness → tell.
    Returns the new state and the generation's metrics."""
    import jax

    from wm_jax.agent import AgentParams, AgentPolicy
    from wm_jax.es import ESCarry
    from wm_jax.runner import EpisodeSpec, run_episodes

    es, carry = cfg.es, state.carry
    t0 = time.perf_counter()
    # Host copies: strong dtypes and no mesh typing (the ES program's init / a restore differ in both),
    # so ask, tell and the policy step compile once whether the run is fresh or resumed.
    es_state = jax.tree.map(lambda x: np.asarray(x[0]), carry.es_state)
    key, k_ask, k_roll, k_tell = jax.random.split(np.asarray(carry.key[0]), 4)
    pop, es_state = run.ask(k_ask, es_state)
    seeds = trial_seeds(k_roll, es.trials)
    specs = [EpisodeSpec(s, c) for c in range(es.population) for s in seeds]
    res, _ = run_episodes(venv, AgentPolicy(run.spec, AgentParams(run.vae, run.mdn, pop)), specs,
                          groups=cfg.eval.groups, progress=False, max_len=es.real_max_steps, stall=es.real_stall_steps)
    returns = np.asarray([r.ret for r in res], np.float32).reshape(es.population, es.trials)
    es_state = run.tell(k_tell, pop, run.fitness(pop, returns), es_state)
    carry = ESCarry(jax.tree.map(lambda x: x[None], es_state), key[None], carry.generation + 1)
    frames, dt, cand = sum(r.length for r in res), time.perf_counter() - t0, returns.mean(axis=1)
    return state._replace(carry=carry), {
        "mean_return": cand.mean(), "best_return": cand.max(), "worst_return": cand.min(),
        "best_fitness": np.asarray(es_state.best_fitness), "std": np.mean(getattr(es_state, "std", np.nan)),
        "mean_length": frames / len(res), "frames": frames, "frames_per_s": frames / dt, "wall_s": dt}


def evaluate_mean(cfg: Config, run: RealRun, state: RealES, venv, eval_specs: list) -> tuple[RealES, float]:
    """The current ES mean plays the held-out eval tracks; it becomes the best and enters the archive (over the
    worst archived mean) if it beats them. Returns the new state and its mean return."""
    import jax

    from wm_jax.agent import AgentParams, AgentPolicy
    from wm_jax.runner import run_episodes

    mean = jax.tree.map(np.asarray, run.prog.mean_params(state.carry))  # [1, ...]
    ev, _ = run_episodes(venv, AgentPolicy(run.spec, AgentParams(run.vae, run.mdn, mean)), eval_specs,
                         groups=cfg.eval.groups, progress=False)
    ret = float(np.mean([r.ret for r in ev]))
    if ret > state.best_eval[0]:
        state = state._replace(best_params=mean, best_eval=np.full((1,), ret, np.float32))
    worst = int(np.argmin(state.archive_eval))
    if ret > state.archive_eval[worst]:
        archive_eval, archive_gen = state.archive_eval.copy(), state.archive_gen.copy()
        archive_eval[worst], archive_gen[worst] = ret, state.generation
        archive = jax.tree.map(lambda a, m: np.concatenate([a[:worst], m, a[worst + 1:]]), state.archive, mean)
        state = state._replace(archive=archive, archive_eval=archive_eval, archive_gen=archive_gen)
    return state, ret


def real_checkpoint(state: RealES) -> dict:
    """The checkpoint tree of a RealES (``load_or_init_real`` reads it back)."""
    from wm_jax.es import carry_to_tree

    return {"carry": carry_to_tree(state.carry), "best_params": state.best_params, "best_eval": state.best_eval,
            "archive": state.archive, "archive_eval": state.archive_eval, "archive_gen": state.archive_gen}


class RealProgress:
    """``run_real_es``'s default progress_fn: metrics.jsonl + tb/ rows (the generation's, then its evaluation's)
    and a progress bar."""

    def __init__(self, cfg: Config, start: int, progress: bool):
        from tqdm import tqdm

        from wm_jax.metrics import MetricsWriter

        self.writer = MetricsWriter(cfg.run_dir / "controller", resume_step=start)
        self.bar = tqdm(total=cfg.es.generations, initial=start, desc=f"ES real {cfg.env.id}", disable=not progress,
                        dynamic_ncols=True)
        self.last_eval = float("nan")

    def __call__(self, gen: int, metrics: dict) -> None:
        row = {k: v for k, v in metrics.items() if k not in ("eval_return", "select_return")}
        if row:
            self.writer.write(gen, **row)
        for k in ("eval_return", "select_return"):
            if k in metrics:
                self.writer.write(gen, **{k: metrics[k]})
        self.last_eval = metrics.get("eval_return", self.last_eval)
        if row:
            self.bar.update(1)
            self.bar.set_postfix(mean=f"{row['mean_return']:.1f}", best=f"{row['best_return']:.1f}",
                                 eval=f"{self.last_eval:.1f}", fps=f"{row['frames_per_s']:.0f}")

    def close(self) -> None:
        self.bar.close()
        self.writer.close()


def save_real_outputs(cfg: Config, state: RealES, summary: dict) -> None:
    """The final controller (params.npz + score.json) and the curves (from metrics.jsonl)."""
    import jax

    from wm_jax.io import save_controller
    from wm_jax.metrics import plot_curves
    from wm_jax.models import controller as ctrl

    ckpt_dir = cfg.run_dir / "controller"
    p0 = jax.tree.map(lambda x: np.asarray(x[0]), state.best_params)
    save_controller(ckpt_dir, p0, cfg, {**summary, "real_eval_return": float(state.best_eval[0]),
                                        "params": ctrl.num_params(p0)})
    if (ckpt_dir / "metrics.jsonl").exists():  # written by the default progress_fn
        plot_curves(ckpt_dir / "metrics.jsonl", cfg.run_dir / "plots" / "controller_curves.png",
                    ["mean_return", "best_return", "eval_return", "std"], title=f"ES in the real env ({cfg.env.id})")


def select_final(spec, vae, mdn, venv, cfg: Config, archive: dict, archive_eval: np.ndarray,
                 archive_gen: np.ndarray, final_mean: dict, gen: int) -> dict:
    """The final choice: every archived mean (finite evaluation) and the last mean play ``es.select_trials`` tracks of
    seeds SELECT_SEED_BASE.. (common to all); the best mean return wins. Returns {"params": leaves [...], "return",
    "generation", "candidates": [{"generation", "eval_return", "select_return"}, ...]}."""
    import jax

    from wm_jax.agent import AgentParams, AgentPolicy
    from wm_jax.runner import EpisodeSpec, run_episodes

    rows = [i for i in np.argsort(-archive_eval) if np.isfinite(archive_eval[i])]
    cands = [jax.tree.map(lambda x, i=i: x[i], archive) for i in rows]
    meta = [(int(archive_gen[i]), float(archive_eval[i])) for i in rows]
    if gen not in [g for g, _ in meta]:  # the last mean, unless it is archived already
        cands.append(jax.tree.map(lambda x: x[0], final_mean))
        meta.append((gen, None))
    n = cfg.es.select_trials
    stacked = jax.tree.map(lambda *xs: np.stack(xs), *cands)
    specs = [EpisodeSpec(SELECT_SEED_BASE + k, c) for c in range(len(cands)) for k in range(n)]
    res, _ = run_episodes(venv, AgentPolicy(spec, AgentParams(vae, mdn, stacked)), specs, groups=cfg.eval.groups,
                          progress=False)
    returns = np.asarray([r.ret for r in res], np.float64).reshape(len(cands), n).mean(axis=1)
    win = int(np.argmax(returns))
    table = [{"generation": g, "eval_return": e, "select_return": float(r)} for (g, e), r in zip(meta, returns)]
    print("final choice over " + f"{n} held-out tracks: " + ", ".join(
        f"gen {t['generation']} {t['select_return']:.1f}" for t in table) + f" -> gen {meta[win][0]}")
    return {"params": cands[win], "return": float(returns[win]), "generation": meta[win][0], "tracks": n,
            "candidates": table}


def final_state(run_dir: str | Path) -> dict:
    """The latest checkpoint of a real-env ES run as nested numpy arrays (tests compare two of these)."""
    from wm_jax.checkpoint import Checkpointer

    with Checkpointer(Path(run_dir) / "controller") as ck:
        return ck.restore_raw()
