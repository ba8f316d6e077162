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

import json
import time
from pathlib import Path

import numpy as np

from wm_jax.config import Config, ConfigError, save_config

EVAL_SEED_BASE = 2_000_000  # held-out seeds for evaluating the ES mean (collection uses 0.., eval 10_000..)
SELECT_SEED_BASE = 3_000_000  # held-out seeds of the final choice among evaluated means (es.select_trials)


def trial_seeds(key, trials: int) -> list[int]:
    """Environment seeds of one generation's trials, drawn from the generation's rollout key."""
    import jax

    return [int(s) for s in np.asarray(jax.random.randint(key, (trials,), 0, 2**31 - 1))]


def run_real_es(cfg: Config, *, stop_after: int | None = None, progress: bool = True, venv=None) -> dict:
    """Run (or resume) real-environment ES on the run in cfg.run_dir; returns a summary dict.

    `stop_after` stops once that many generations are checkpointed (as if killed; for tests).
    `venv` reuses an open :class:`~wm_jax.envs.vector.VectorEnv` (otherwise one is made from cfg.eval).
    """
    import jax
    from tqdm import tqdm

    from wm_jax.agent import AgentParams, AgentPolicy, load_models, spec_from_config
    from wm_jax.runner import EpisodeSpec, run_episodes
    from wm_jax.checkpoint import Checkpointer
    from wm_jax.envs.vector import VectorEnv
    from wm_jax.es import ESCarry, carry_from_tree, carry_to_tree, get_program
    from wm_jax.evaluation import check_eval_config, slot_layout
    from wm_jax.metrics import MetricsWriter, plot_curves
    from wm_jax.models import controller as ctrl
    from wm_jax.io import save_controller
    from wm_jax.train.controller import initial_mean

    if cfg.es.mode != "real":
        raise ConfigError("config key 'es.mode': run_real_es needs 'real'")
    check_eval_config(cfg)
    es = cfg.es
    done = cfg.run_dir / "controller" / "DONE"
    if done.exists() and (summary := json.loads(done.read_text())).get("generations", 0) >= es.generations:
        # finished: nothing to load or play (its final choice alone is minutes of real episodes)
        print(f"C already trained ({done}); delete it or raise es.generations to train further")
        return summary
    spec = spec_from_config(cfg)
    vae, mdn = load_models(cfg, cfg.run_dir)
    template = ctrl.controller_from_config(jax.random.PRNGKey(0), cfg.controller, cfg.env.name, spec.z_dim,
                                           spec.hidden)
    prog = get_program(cfg, template, devices=jax.devices()[:1])
    strategy, es_params = prog.strategy, prog.es_params
    ask = jax.jit(lambda k, s: strategy.ask(k, s, es_params))
    tell = jax.jit(lambda k, pop, fit, s: strategy.tell(k, pop, fit, s, es_params)[0])
    fitness = jax.jit(prog.fitness)

    start = initial_mean(cfg, template)
    carry = prog.init(jax.random.PRNGKey(es.seed), 1, start)
    best_params = jax.tree.map(np.asarray, prog.mean_params(carry))  # [1, ...]
    best_eval = np.full((1,), -np.inf, np.float32)
    # the es.select_top best evaluated means (leaves [K, ...]) and their evaluations (-inf: empty row)
    archive = jax.tree.map(lambda x: np.repeat(x, es.select_top, axis=0), best_params)
    archive_eval = np.full((es.select_top,), -np.inf, np.float32)
    archive_gen = np.zeros((es.select_top,), np.int32)
    ckpt_dir = cfg.run_dir / "controller"
    ckpt = Checkpointer(ckpt_dir, cfg)
    save_config(cfg, cfg.run_dir / "config.json")  # the run folder's "last command" config (DESIGN.md)
    if ckpt.latest_step() is not None:
        raw = ckpt.restore_raw()
        if "carry" not in raw or "best_params" not in raw:
            raise ConfigError(f"{ckpt_dir}: checkpoint step {ckpt.latest_step()} is not a real-env ES checkpoint")
        try:
            carry = carry_from_tree(carry, raw["carry"])
            best_params = jax.tree.map(lambda t, x: np.asarray(x, t.dtype).reshape(t.shape), best_params,
                                       raw["best_params"])
        except (KeyError, ValueError, TypeError) as e:
            raise ConfigError(f"{ckpt_dir}: checkpoint step {ckpt.latest_step()} does not match this config's "
                              f"controller/ES shapes ({e}); use another run name") from None
        best_eval = np.asarray(raw["best_eval"], np.float32).reshape(1)
        if "archive_eval" in raw and np.asarray(raw["archive_eval"]).shape == archive_eval.shape:
            archive = jax.tree.map(lambda t, x: np.asarray(x, t.dtype).reshape(t.shape), archive, raw["archive"])
            archive_eval = np.asarray(raw["archive_eval"], np.float32)
            archive_gen = np.asarray(raw["archive_gen"], np.int32)
        elif np.isfinite(best_eval[0]):  # a checkpoint from before the archive: it holds the best mean only
            archive = jax.tree.map(lambda a, b: np.concatenate([b, a[1:]]), archive, best_params)
            archive_eval[0], archive_gen[0] = best_eval[0], -1  # -1: its generation was not recorded
    gen = int(carry.generation[0])
    eps_per_gen = es.population * es.trials
    workers, slots = slot_layout(cfg, max(eps_per_gen, es.eval_trials))
    own_venv = venv is None
    writer = MetricsWriter(ckpt_dir, resume_step=gen)
    pbar = tqdm(total=es.generations, initial=gen, desc=f"ES real {cfg.env.name}", disable=not progress,
                dynamic_ncols=True)
    eval_specs = [EpisodeSpec(EVAL_SEED_BASE + i) for i in range(es.eval_trials)]
    last_eval = float("nan")

    def evaluate_mean() -> float:
        """The current ES mean plays the held-out eval tracks; it becomes the best and enters the archive (over the
        worst archived mean) if it beats them."""
        nonlocal best_params, archive
        mean = jax.tree.map(np.asarray, prog.mean_params(carry))  # [1, ...]
        ev, _ = run_episodes(venv, AgentPolicy(spec, AgentParams(vae, mdn, mean)), eval_specs,
                             groups=cfg.eval.groups, progress=False)
        ret = float(np.mean([r.ret for r in ev]))
        if ret > best_eval[0]:
            best_eval[0], best_params = ret, mean
        worst = int(np.argmin(archive_eval))
        if ret > archive_eval[worst]:
            archive_eval[worst], archive_gen[worst] = ret, gen
            archive = jax.tree.map(lambda a, m: np.concatenate([a[:worst], m, a[worst + 1:]]), archive, mean)
        writer.write(gen, eval_return=ret)
        return ret

    try:
        if own_venv:
            venv = VectorEnv(cfg.env, slots, workers)
        if start is not None and gen == 0:  # es.init: the starting controller is a candidate of the final choice too
            last_eval = evaluate_mean()
        while gen < es.generations and (stop_after is None or gen < stop_after):
            t0 = time.perf_counter()
            # Host copies: strong dtypes and no mesh typing (the ES program's init / a restore differ in both),
            # so ask, tell and the policy step compile once whether the run is fresh or resumed.
            es_state = jax.tree.map(lambda x: np.asarray(x[0]), carry.es_state)
            key, k_ask, k_roll, k_tell = jax.random.split(np.asarray(carry.key[0]), 4)
            pop, es_state = ask(k_ask, es_state)
            seeds = trial_seeds(k_roll, es.trials)
            specs = [EpisodeSpec(s, c) for c in range(es.population) for s in seeds]
            policy = AgentPolicy(spec, AgentParams(vae, mdn, pop))
            res, _ = run_episodes(venv, policy, specs, groups=cfg.eval.groups, progress=False,
                                  max_len=es.real_max_steps, stall=es.real_stall_steps)
            returns = np.asarray([r.ret for r in res], np.float32).reshape(es.population, es.trials)
            fit = fitness(pop, returns)
            es_state = tell(k_tell, pop, fit, es_state)
            carry = ESCarry(jax.tree.map(lambda x: x[None], es_state), key[None], carry.generation + 1)
            gen += 1
            frames = sum(r.length for r in res)
            dt = time.perf_counter() - t0
            cand = returns.mean(axis=1)
            writer.write(gen, mean_return=cand.mean(), best_return=cand.max(), worst_return=cand.min(),
                         best_fitness=np.asarray(es_state.best_fitness), std=np.mean(getattr(es_state, "std", np.nan)),
                         mean_length=frames / len(res), frames=frames, frames_per_s=frames / dt, wall_s=dt)
            if (es.eval_every > 0 and gen % es.eval_every == 0) or gen == es.generations:
                last_eval = evaluate_mean()
            if (es.checkpoint_every > 0 and gen % es.checkpoint_every == 0) or gen == es.generations:
                ckpt.save(gen, {"carry": carry_to_tree(carry), "best_params": best_params, "best_eval": best_eval,
                                "archive": archive, "archive_eval": archive_eval, "archive_gen": archive_gen})
            pbar.update(1)
            pbar.set_postfix(mean=f"{cand.mean():.1f}", best=f"{cand.max():.1f}", eval=f"{last_eval:.1f}",
                             fps=f"{frames / dt:.0f}")
        if gen >= es.generations and es.select_trials > 0:
            final_mean = jax.tree.map(np.asarray, prog.mean_params(carry))  # [1, ...]
            selection = select_final(spec, vae, mdn, venv, cfg, archive, archive_eval, archive_gen, final_mean, gen)
            best_params = jax.tree.map(lambda x: x[None], selection.pop("params"))
            writer.write(gen, select_return=selection["return"])
    finally:
        pbar.close()
        writer.close()
        if own_venv and venv is not None:
            venv.close()
    summary = {"generations": gen, "eval_return": float(best_eval[0]), "eval_trials": es.eval_trials,
               "population": es.population, "trials": es.trials, "env": cfg.env.name, "dir": str(ckpt_dir)}
    if gen >= es.generations and es.select_trials > 0:
        summary["selection"] = selection
    if gen < es.generations:  # stopped on purpose: no final outputs
        ckpt.close()
        return summary
    p0 = jax.tree.map(lambda x: np.asarray(x[0]), best_params)
    save_controller(ckpt_dir, p0, cfg, {**summary, "real_eval_return": float(best_eval[0]),
                                        "params": ctrl.num_params(p0)})
    plot_curves(ckpt_dir / "metrics.jsonl", cfg.run_dir / "plots" / "controller_curves.png",
                ["mean_return", "best_return", "eval_return", "std"], title=f"ES in the real env ({cfg.env.name})")
    ckpt.mark_done(summary)
    ckpt.close()
    return summary


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
