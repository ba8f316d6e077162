"""The command table: ``wm-jax <name>`` -> (flags, the library function it calls, the summary it prints).

Each ``_run_<name>(args)`` resolves the config, calls one function of :mod:`wm_jax.stages` (or
:mod:`wm_jax.bench`) and prints a short summary; nothing here computes anything.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from wm_jax.cli import progress_flag


@dataclass(frozen=True)
class Command:
    """One CLI command."""

    help: str
    flags: Callable[[argparse.ArgumentParser], None]  # the command's own flags (the common ones are added)
    run: Callable[[argparse.Namespace], int]
    config: bool = True  # takes --config FILE and key=value overrides
    compile_cache: bool = True  # keep compiled programs on disk (off for benchmarks: they report compile time)


def _config(args: argparse.Namespace):
    from wm_jax.config import load_config

    return load_config(args.config, args.overrides)


def _taus(text: str | None) -> tuple[float, ...] | None:
    """--taus "0.5,1,1.15" -> (0.5, 1.0, 1.15); None when not given."""
    if not text:
        return None
    try:
        return tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--taus must be comma-separated numbers, got {text!r}") from None


def _no_flags(parser: argparse.ArgumentParser) -> None:
    del parser


# ---------------------------------------------------------------- world model


def _run_collect(args: argparse.Namespace) -> int:
    from wm_jax.stages import collect

    cfg = _config(args)
    r = collect(cfg, progress=progress_flag(args))
    print(f"collect: {r['episodes']} episodes ({r['frames']} frames, mean return {r['mean_return']:.1f}) "
          f"in {r.path}")
    return 0


def _run_train_vae(args: argparse.Namespace) -> int:
    from wm_jax.stages import train_vae

    r = train_vae(_config(args), plots=not args.no_plots, progress=progress_flag(args),
                  allow_config_change=args.allow_config_change)
    if "holdout_mse" in r.summary:
        print(f"held-out per-pixel MSE {r['holdout_mse']:.5f} on {r['holdout_frames']} frames")
    if "recon_spread" in r.summary:  # a V finished before the spread was recorded has none in its DONE
        print(f"per-pixel spread over the held-out frames: reconstructions {r['recon_spread']:.5f}, frames "
              f"{r['frame_spread']:.5f} (near 0 for the reconstructions: the decoder ignores z)")
    if r.get("fireball_recall") is not None:
        print(f"held-out fireball pixels kept by the reconstructions: {r['fireball_recall']:.1%} "
              f"({r['fireball_frames']} frames with a fireball on its way)")
    if "foreground_recall" in r.summary:
        print(f"held-out pixels off the playfield kept by the reconstructions: {_share(r['foreground_recall'])} "
              f"({r['foreground_pixels']} pixels); of small moving objects: {_share(r['small_object_recall'])} "
              f"({r['small_object_pixels']} pixels); painted off the playfield where the frame is: "
              f"{_share(r['foreground_precision'])} ({r['painted_pixels']} pixels)")
    print(f"V finished at step {r['step']}: {r.path}")
    return 0


def _share(x: float | None) -> str:
    """A recall as a percentage, or '–' when no pixel counted (None)."""
    return "–" if x is None else f"{x:.1%}"


def _flags_eval_vae(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", default="", help="comma-separated V steps (default: every step kept)")
    p.add_argument("--holdout-episodes", type=int, default=None,
                   help="score on the last N episodes of the data (default: vae.holdout_episodes)")
    p.add_argument("--data", default=None,
                   help="score on this data folder instead of the run's (compare V's of runs on the same frames)")
    p.add_argument("--max-frames", type=int, default=20_000, help="cap on the held-out frames scored")


def _run_eval_vae(args: argparse.Namespace) -> int:
    from wm_jax.stages import evaluate_vae

    steps = [int(s) for s in args.steps.split(",") if s.strip()] or None
    out = evaluate_vae(_config(args), steps=steps, holdout_episodes=args.holdout_episodes,
                       max_frames=args.max_frames, data_dir=args.data).summary
    print(f"V checkpoints of {out['run_dir']} on the last {out['holdout_episodes']} episodes of {out['data_dir']} "
          f"({out['trained_on']} of them in V's training set), {out['rows'][0]['holdout_frames']} frames:")
    fire = "fireball_recall" in out["rows"][0]
    fg = "foreground_recall" in out["rows"][0]
    print("| step | held-out MSE | spread: reconstructions / frames |" + (" fireball pixels kept |" if fire else "")
          + (" foreground pixels kept | small moving objects' pixels kept | painted pixels on foreground |"
             if fg else ""))
    print("|---:|---:|---:|" + ("---:|" if fire else "") + ("---:|---:|---:|" if fg else ""))
    for r in out["rows"]:
        line = f"| {r['step']} | {r['holdout_mse']:.5f} | {r['recon_spread']:.5f} / {r['frame_spread']:.5f} |"
        if fire:
            line += (f" {r['fireball_recall']:.1%} ({r['fireball_frames']} frames) |"
                     if r["fireball_recall"] is not None else " – (no frame with a fireball on its way) |")
        if fg:
            line += (f" {_share(r['foreground_recall'])} ({r['foreground_pixels']} px) |"
                     f" {_share(r['small_object_recall'])} ({r['small_object_pixels']} px) |"
                     f" {_share(r['foreground_precision'])} ({r['painted_pixels']} px) |")
        print(line)
    print(f"written: {out['path']}")
    return 0


def _run_encode(args: argparse.Namespace) -> int:
    from wm_jax.stages import encode

    r = encode(_config(args), progress=progress_flag(args))
    print(f"encoded {r['encoded']} episodes ({r['frames']} frames, {r['frames_per_s']:.0f} frames/s), skipped "
          f"{r['skipped']} already encoded with V step {r['vae_step']}: {r.path}")
    return 0


def _flags_train_mdnrnn(p: argparse.ArgumentParser) -> None:
    p.add_argument("--member", type=int, default=0,
                   help="dynamics-ensemble member (es.dream_models): 0 is M itself (<run>/mdnrnn); e >= 1 trains "
                        "another model the same way with its own init and batch order (<run>/mdnrnn_<e>)")


def _run_train_mdnrnn(args: argparse.Namespace) -> int:
    from wm_jax.stages import train_mdnrnn

    r = train_mdnrnn(_config(args), member=args.member, plots=not args.no_plots, progress=progress_flag(args),
                     allow_config_change=args.allow_config_change)
    held = r.get("heldout") or {}
    if held:
        print(f"held-out NLL/dim {held['nll_mean']:.4f} (mu targets {held['nll_mean_mu']:.4f}); done precision "
              f"{held['done_precision']} recall {held['done_recall']} on {held['deaths']} deaths")
    print(f"M finished at step {r['step']}: {r.path}")
    return 0


# ---------------------------------------------------------------- controller


def _run_train_controller(args: argparse.Namespace) -> int:
    from wm_jax.stages import train_controller

    cfg = _config(args)
    s = train_controller(cfg, gif=not args.no_plots, progress=progress_flag(args),
                         allow_config_change=args.allow_config_change).summary
    if cfg.es.mode == "real":
        print(f"controller (real {s['env']}): best evaluated ES mean {s['eval_return']:.2f} over "
              f"{s['eval_trials']} episodes after {s['generations']} generations ({s['population']} x "
              f"{s['trials']}), in {s['dir']}")
    else:
        print(f"controller: dream return {s['eval_return'][0]:.2f} (τ={s['taus'][0]}), written to {s['dirs'][0]}")
    return 0


def _flags_taus(p: argparse.ArgumentParser, default: str) -> None:
    p.add_argument("--taus", type=_taus, default=None, metavar="T1,T2,...",
                   help=f"comma-separated dream temperatures (default: {default})")


def _run_sweep(args: argparse.Namespace) -> int:
    from wm_jax.stages import sweep_temperature

    r = sweep_temperature(_config(args), args.taus, gif=not args.no_plots, progress=progress_flag(args),
                          allow_config_change=args.allow_config_change)
    for t, ret, d in zip(r["taus"], r["eval_return"], r["dirs"]):
        print(f"tau {t:g}: dream return {ret:.2f}  ->  {d}")
    return 0


def _flags_collect_agent(p: argparse.ArgumentParser) -> None:
    p.add_argument("--controller", required=True, help="controller folder (params.npz) that plays")
    p.add_argument("--round", type=int, required=True, help="iteration round: picks the episode indices")


def _run_collect_agent(args: argparse.Namespace) -> int:
    from wm_jax.stages import collect_agent

    cfg = _config(args)
    s = collect_agent(cfg, args.controller, args.round, progress=progress_flag(args)).summary
    print(f"collect-agent round {s['round']}: {s['episodes']} episodes ({s['played']} played now) with "
          f"{s['controller']} + exploration (epsilon {cfg.iterate.epsilon:g}): mean return {s['mean_return']:.1f}, "
          f"mean length {s['mean_length']:.0f}, {s['frames']} frames -> {cfg.data_dir}")
    return 0


def _flags_dream_check(p: argparse.ArgumentParser) -> None:
    _flags_taus(p, "es.temperature")
    p.add_argument("--episodes", type=int, default=64, help="dream episodes per policy and τ")
    p.add_argument("--seed", type=int, default=0, help="PRNG seed of the dream episodes")


def _run_dream_check(args: argparse.Namespace) -> int:
    from wm_jax.metrics import HAZARD_EDGES
    from wm_jax.stages import dream_check

    r = dream_check(_config(args), args.taus, episodes=args.episodes, seed=args.seed)
    for tau, row in r["scores"].items():
        print(f"tau {tau}: " + "  ".join(f"{k} {v['mean']:.1f} ± {v['std']:.1f}" for k, v in row.items()))
        print(f"  deaths per 1,000 live steps from steps {list(HAZARD_EDGES)}: "
              + "  ".join(f"{k} {v}" for k, v in r["hazard"][tau].items()))
    print(f"-> {r.path}")
    return 0


def _flags_dream_score(p: argparse.ArgumentParser) -> None:
    p.add_argument("--controllers", required=True,
                   help="comma-separated controller folders (or params.npz files) to score")
    p.add_argument("--member", type=int, default=1, help="the held-out model <run>/mdnrnn_<member> (>= 1)")
    _flags_taus(p, "es.temperature")
    p.add_argument("--trials", type=int, default=256, help="dream episodes per controller, τ and dream")
    p.add_argument("--seed", type=int, default=0, help="PRNG seed of the dream episodes")
    p.add_argument("--out", default=None, help="JSON path (default <run_dir>/dream_score.json)")


def _run_dream_score(args: argparse.Namespace) -> int:
    from wm_jax.stages import dream_score

    ctrls = [c.strip() for c in args.controllers.split(",") if c.strip()]
    r = dream_score(_config(args), ctrls, member=args.member, taus=args.taus, trials=args.trials,
                    seed=args.seed, out=args.out)
    for name, row in r["scores"].items():
        print(f"{name}: " + "  ".join(f"τ {t}: own {v['own']:.0f}, held-out {v['held_out']:.0f}"
                                      for t, v in row.items()))
    print(f"-> {r.path}")
    return 0


# ---------------------------------------------------------------- real environment


def _flags_evaluate(p: argparse.ArgumentParser) -> None:
    p.add_argument("--run", default=None, help="run folder holding config.json, vae/, mdnrnn/, controller/ "
                                               "(its config.json is used unless --config is given)")
    p.add_argument("--episodes", type=int, default=None, help="episodes to play (default eval.episodes)")
    p.add_argument("--seed", type=int, default=None, help="first environment seed (default eval.seed)")
    p.add_argument("--controller", default=None,
                   help="controller checkpoint folder or run folder (default <run>/controller)")
    p.add_argument("--policy", default="agent",
                   help="agent: V+M+C from the run; random: uniform random actions; or a fixed reference policy "
                        "of wm_jax.envs.reference (TakeCover: stay, left, right, sweepN; CarRacing: coast, gas)")
    p.add_argument("--out", default=None, help="output folder (default <run>/eval, or <run>/eval/<policy> for a "
                                               "policy without models)")


def _eval_config(args: argparse.Namespace):
    """The run's saved config (or --config) with the overrides applied; and the run folder."""
    from wm_jax.config import ConfigError, load_saved_config, parse_override

    if args.run and not args.config:
        run = Path(args.run)
        saved = next((d for d in (run, run / "controller") if (d / "config.json").exists()), None)
        if saved is None:
            raise ConfigError(f"--run {run}: no config.json there (pass --config FILE for a fresh folder)")
        cfg = load_saved_config(saved)
        if args.overrides:
            cfg = cfg.replace(**dict(parse_override(o) for o in args.overrides))
        return cfg, run
    cfg = _config(args)
    return cfg, Path(args.run) if args.run else cfg.run_dir


def _run_evaluate(args: argparse.Namespace) -> int:
    from wm_jax.stages import evaluate

    cfg, run = _eval_config(args)
    if args.no_plots:
        cfg = cfg.replace(**{"eval.gifs": False})
    r = evaluate(cfg, run, episodes=args.episodes, seed=args.seed, policy=args.policy, controller=args.controller,
                 out=args.out, progress=progress_flag(args))
    s = r.summary
    print(f"{s['env']} {s['policy']}: {s['mean']:.1f} ± {s['std']:.1f} over {s['episodes']} episodes "
          f"(seeds {s['seed']}..{s['seed'] + s['episodes'] - 1}; {s['frames']} frames in {s['wall_s']:.1f} s, "
          f"{s['frames_per_s']:.0f} frames/s) -> {r.path}")
    if "hazard" in s:
        print("deaths per 1,000 live steps from step " + ", ".join(
            f"{e}: {'-' if h is None else h}" for e, h in zip(s["hazard_edges"], s["hazard"])))
    return 0


# ---------------------------------------------------------------- config, benchmarks


def _flags_config(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=("show",), help="show: print the resolved config as YAML")


def _run_config(args: argparse.Namespace) -> int:
    from wm_jax.config_show import format_config

    print(format_config(_config(args)), end="")
    return 0


def _flags_bench(p: argparse.ArgumentParser) -> None:
    from wm_jax.bench import STAGES

    p.add_argument("stage", choices=STAGES, help="what to measure")
    p.add_argument("--out", default=None,
                   help="JSON output file (default checkpoints/bench/<stage>[_<env>].json, outside git)")
    p.add_argument("--record", action="store_true",
                   help="write benchmarks/<stage>[_<env>].json in the checkout (the README's tables read those)")
    p.add_argument("rest", nargs=argparse.REMAINDER, help="the stage's own options (wm-jax bench STAGE --help)")


def _run_bench(args: argparse.Namespace) -> int:
    from wm_jax.bench import add_stage_options, run_stage

    sub = argparse.ArgumentParser(prog=f"wm-jax bench {args.stage}", allow_abbrev=False)
    add_stage_options(args.stage, sub)
    sub.set_defaults(parse_stage_options=parse_stage_options)  # `bench scaling` times other stages' benchmarks
    sub.add_argument("--out", default=args.out, help="JSON output file")
    sub.add_argument("--record", action="store_true", default=args.record, help="write into benchmarks/")
    opts = sub.parse_args(args.rest)
    run_stage(args.stage, opts, out=opts.out, record=opts.record)  # prints the JSON and where it went
    return 0


def parse_stage_options(module, argv: list[str]) -> argparse.Namespace:
    """A benchmark module's options parsed from `argv` (its ``add_arguments`` on an argparse parser)."""
    p = argparse.ArgumentParser(prog=f"wm-jax bench {module.__name__.rsplit('.', 1)[-1]}", allow_abbrev=False)
    module.add_arguments(p)
    return p.parse_args(argv)


def _flags_estimate(p: argparse.ArgumentParser) -> None:
    p.add_argument("record", help="a dream scaling JSON (wm-jax bench dream --scaling)")
    p.add_argument("--width", type=int, required=True, help="population x trials x τ per generation")
    p.add_argument("--steps", type=int, required=True, help="dream steps per episode (the cap: an upper bound)")
    p.add_argument("--generations", type=int, required=True, help="ES generations")


def _run_estimate(args: argparse.Namespace) -> int:
    import json

    from wm_jax.bench.scaling import estimate

    print(json.dumps(estimate(args.record, args.width, args.steps, args.generations), indent=2))
    return 0


COMMANDS: dict[str, Command] = {
    "collect": Command("random-policy rollouts from the real environment into shards", _no_flags, _run_collect),
    "train-vae": Command("train V on the collected frames", _no_flags, _run_train_vae),
    "eval-vae": Command("V checkpoints' held-out reconstruction error (TakeCover: fireball recall; Atari: "
                        "foreground and small-object recall)",
                        _flags_eval_vae, _run_eval_vae),
    "encode": Command("write V's (mu, logvar) for every frame beside the data", _no_flags, _run_encode),
    "train-mdnrnn": Command("train M on encoded sequences", _flags_train_mdnrnn, _run_train_mdnrnn),
    "collect-agent": Command("real episodes played by a trained controller, added to the data",
                             _flags_collect_agent, _run_collect_agent),
    "train-controller": Command("train C with CMA-ES (in M's dream, or in the real env with es.mode=real)",
                                _no_flags, _run_train_controller),
    "sweep-temperature": Command("train one controller per dream temperature, all in one batched program",
                                 lambda p: _flags_taus(p, "es.taus"), _run_sweep),
    "dream-check": Command("score fixed reference policies in M's dream (before ES)", _flags_dream_check,
                           _run_dream_check),
    "dream-score": Command("score trained controllers in M's dream and a held-out model's", _flags_dream_score,
                           _run_dream_score),
    "evaluate": Command("score a run's controller (or a policy without models) in the real environment",
                        _flags_evaluate, _run_evaluate),
    "config": Command("print the resolved config (YAML, each field with its comment)", _flags_config, _run_config,
                      compile_cache=False),
    "bench": Command("throughput benchmarks (collect, vae, encode, mdnrnn, dream, evaluate, peak, scaling) -> JSON",
                     _flags_bench, _run_bench, config=False, compile_cache=False),
    "estimate": Command("expected ES wall time at a batch width, from a dream scaling record (bench dream "
                        "--scaling)", _flags_estimate, _run_estimate, config=False, compile_cache=False),
}
