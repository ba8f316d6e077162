"""The ``wm-jax`` command line: the only place that knows argparse.

One table (:data:`wm_jax.cli.commands.COMMANDS`) maps each command to its flags, the library function it calls
(``wm_jax.stages``, ``wm_jax.bench``) and a one-screen summary printer. Every command takes the same common
flags (``--config FILE``, dotted ``key=value`` overrides, ``--no-progress``, ``--no-plots``); the config is
validated before any work. Errors print one line and exit 2 (a bad config key, a missing prerequisite such as
an untrained V) or 1 (a diverged training run); Ctrl-C or ``kill`` exits 130 with the checkpoints whole.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Sequence

from wm_jax import __version__


def add_common_flags(parser: argparse.ArgumentParser, config: bool = True) -> None:
    """Flags every command takes; `config`: the command reads a config (``--config`` + overrides)."""
    if config:
        parser.add_argument("--config", default=None, metavar="FILE",
                            help="YAML config (configs/*.yaml); default: the built-in defaults")
        parser.add_argument("overrides", nargs="*", metavar="key=value",
                            help="dotted config overrides, e.g. data.episodes=200 vae.learning_rate=1e-4")
    parser.add_argument("--no-progress", action="store_true",
                        help="hide progress bars (automatic when stderr is not a terminal)")
    parser.add_argument("--no-plots", action="store_true", help="skip PNG plots and GIFs")
    parser.add_argument("--allow-config-change", action="store_true",
                        help="resume a stage folder even though its saved config differs in a key that changes "
                             "results (refused by default, naming the keys)")
    parser.add_argument("--distributed", action="store_true",
                        help="join a multi-process run (jax.distributed.initialize) before JAX starts: coordinator, "
                             "process count and id from WM_JAX_* variables or SLURM/TPU detection "
                             "(docs/distributed.md)")


def progress_flag(args: argparse.Namespace) -> bool | None:
    """False with --no-progress, else None: bars only on a terminal (wm_jax.stages.show_progress)."""
    return False if args.no_progress else None


def build_parser() -> argparse.ArgumentParser:
    from wm_jax.cli.commands import COMMANDS

    top = argparse.ArgumentParser(prog="wm-jax", description="World Models in JAX: V, M, C and the dream.",
                                  epilog="`wm-jax COMMAND --help` shows a command's flags.", allow_abbrev=False)
    top.add_argument("--version", action="version", version=f"wm-jax {__version__}")
    sub = top.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, cmd in COMMANDS.items():
        p = sub.add_parser(name, help=cmd.help, description=cmd.help, allow_abbrev=False)
        cmd.flags(p)
        add_common_flags(p, config=cmd.config)
        p.set_defaults(_command=cmd)
    return top


def parse(argv: list[str]) -> argparse.Namespace:
    """Parse `argv`; key=value overrides may also follow a command's own positional arguments and options
    (``wm-jax config show --config F vae.learning_rate=1e-4``)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        overridable = getattr(args, "_command", None) is not None and args._command.config
        if not overridable or any(x.startswith("-") or "=" not in x for x in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    return args


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv` (default sys.argv[1:]), run the command, return its exit status."""
    from wm_jax.cli.commands import COMMANDS

    argv = list(sys.argv[1:] if argv is None else argv)
    first = COMMANDS.get(argv[0]) if argv else None
    if first is not None and first.compile_cache:  # before anything imports JAX; benchmarks report compile time
        from wm_jax import compile_cache

        compile_cache.enable()
    args = parse(argv)
    cmd = args._command
    from wm_jax.distributed import maybe_initialize

    maybe_initialize(args.distributed)  # before any JAX computation (no command has run yet)
    main_thread = threading.current_thread() is threading.main_thread()
    if main_thread:  # `kill` (SIGTERM) stops a command like Ctrl-C: checkpoints stay whole
        previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return int(cmd.run(args) or 0)
    except KeyboardInterrupt:
        print(f"\nwm-jax {args.command}: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 -- mapped to one line; anything else is a bug and keeps its traceback
        code = error_status(e)
        if code is None:
            raise
        print(f"wm-jax {args.command}: {error_kind(e)}: {e}", file=sys.stderr)
        return code
    finally:
        if main_thread:
            signal.signal(signal.SIGTERM, previous)


def error_status(e: Exception) -> int | None:
    """Exit status for an expected error (None: an unexpected one, shown with its traceback)."""
    if isinstance(e, FloatingPointError):  # a diverged training run (V's NonFiniteError, M's divergence)
        return 1
    if isinstance(e, (ValueError, FileNotFoundError)):  # ConfigError, CorruptShardError are ValueErrors
        return 2
    return None


def error_kind(e: Exception) -> str:
    from wm_jax.config import ConfigError

    if isinstance(e, ConfigError):
        return "config error"
    if isinstance(e, FileNotFoundError):
        return "missing prerequisite"
    return "error"


if __name__ == "__main__":
    sys.exit(main())
