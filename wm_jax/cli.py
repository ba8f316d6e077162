"""The ``wm-jax`` command line.

Every command module exposes ``add_arguments(parser)`` and ``run(args) -> int``; it is imported only when
its command runs, so ``wm-jax collect`` never initialises JAX. Commands that take a config accept
``--config FILE`` and trailing dotted overrides (``data.episodes=200``), validated before any work.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import threading

COMMANDS: dict[str, tuple[str, str]] = {
    "collect": ("wm_jax.data.collect", "random-policy rollouts from the real environment into shards"),
    "train-vae": ("wm_jax.train.vae", "train V on the collected frames"),
    "eval-vae": ("wm_jax.train.vae_eval", "V checkpoints' held-out reconstruction error (TakeCover: fireball recall)"),
    "encode": ("wm_jax.train.encode", "write V's (mu, logvar) for every frame beside the data"),
    "train-mdnrnn": ("wm_jax.train.mdnrnn", "train M on encoded sequences"),
    "collect-agent": ("wm_jax.data.collect_agent", "real episodes played by a trained controller, added to the data"),
    "train-controller": ("wm_jax.train.controller", "train C with an evosax strategy (dream or real env)"),
    "sweep-temperature": ("wm_jax.train.sweep", "train one controller per dream temperature, batched"),
    "dream-check": ("wm_jax.train.dream_check", "score fixed reference policies in M's dream (before ES)"),
    "dream-score": ("wm_jax.train.dream_score", "score trained controllers in M's dream and a held-out model's"),
    "evaluate": ("wm_jax.evaluate", "score a run's controller in the real environment"),
    "bench": ("wm_jax.bench", "throughput benchmarks (collect, vae, encode, mdnrnn, dream, evaluate, peak)"),
}


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The shared ``--config FILE [key=value ...]`` arguments."""
    parser.add_argument("--config", default=None, help="YAML config file (configs/*.yaml)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="dotted overrides, e.g. data.episodes=200")


def config_from_args(args: argparse.Namespace):
    from wm_jax.config import load_config

    return load_config(args.config, args.overrides)


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    top = argparse.ArgumentParser(prog="wm-jax", description="World Models in JAX: V, M, C and the dream.")
    top.add_argument("command", choices=sorted(COMMANDS), help="; ".join(f"{k}: {v[1]}" for k, v in COMMANDS.items()))
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        top.parse_args(argv[:1] or ["--help"])
        return 2
    name = argv[0]
    from wm_jax import compile_cache

    if name != "bench":  # a benchmark's first call reports its compile time, so it always compiles
        compile_cache.enable()  # before the command's module imports JAX
    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser(prog=f"wm-jax {name}", description=COMMANDS[name][1])
    module.add_arguments(parser)
    args = parser.parse_args(argv[1:])
    from wm_jax.config import ConfigError

    main_thread = threading.current_thread() is threading.main_thread()
    if main_thread:
        # `kill` (SIGTERM) stops a command like Ctrl-C: checkpoints stay whole, experiment scripts record the time.
        previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return int(module.run(args) or 0)
    except ConfigError as e:
        print(f"wm-jax {name}: config error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nwm-jax {name}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
