"""``wm-jax bench scaling --model {vae,mdnrnn}``: training throughput against batch width, to see where a device
saturates; and the width sweep that ``wm-jax bench dream --scaling`` shares.

Widths double from 64 (``--widths`` lists them instead) until the next would pass ``--max-width``, would not fit
the device's memory (an out-of-memory error from XLA ends the sweep at the last width that ran), or the last timed
step took longer than ``--max-seconds``. Each width is timed by the stage's own benchmark (``bench.vae.measure``,
``bench.mdnrnn.measure``: compile excluded, blocked on), so a point here is what ``wm-jax bench vae --batch W``
would report. Memory per width: the peak bytes in use (``device.memory_stats()``) on an accelerator, the process's
peak RSS on CPU; both are high-water marks over the process, so each point is an upper bound (widths only grow).

On CPU the default cap keeps a whole sweep to a few minutes on 2 cores (``--max-width`` raises it); on an
accelerator the default cap is far above what fits, so memory or time ends the sweep. ``saturation``: the smallest
width within 10% of the best throughput. ``figure`` draws throughput and fraction of peak against width (PNG).
"""

from __future__ import annotations

import itertools
import math
import os
import resource
import shlex
import time
from collections.abc import Callable
from pathlib import Path

CPU_MAX_WIDTH = {"vae": 256, "mdnrnn": 256, "dream": 2048}  # a few minutes per sweep on a 2-core VM
ACCEL_MAX_WIDTH = 1 << 22
HEADLINE = {"vae": ("images_per_s", "images/s (train)"), "mdnrnn": ("timesteps_per_s", "timesteps/s (train)"),
            "dream": ("dream_steps_per_s", "candidate-steps/s (ES generations)")}


def add_arguments(parser) -> None:
    parser.add_argument("--model", choices=("vae", "mdnrnn"), required=True, help="V or M training step")
    add_sweep_arguments(parser)
    parser.add_argument("--model-args", default="", help="options for the stage's benchmark at every width, e.g. "
                        "\"--seq-len 200 --hidden 512\" (see wm-jax bench mdnrnn --help)")


def add_sweep_arguments(parser) -> None:
    parser.add_argument("--widths", default="", help="comma list of batch widths (default: 64, 128, ... doubling)")
    parser.add_argument("--max-width", type=int, default=0,
                        help=f"largest width (0: CPU {CPU_MAX_WIDTH}, accelerators {ACCEL_MAX_WIDTH})")
    parser.add_argument("--max-seconds", type=float, default=30.0,
                        help="stop after a width whose timed call took longer than this")


def widths_to_try(text: str, max_width: int, start: int = 64) -> list[int]:
    """The widths of a sweep: the comma list `text`, or start, 2·start, ... up to `max_width`."""
    if text:
        ws = [int(w) for w in text.split(",") if w.strip()]
        if not ws or min(ws) < 1:
            raise ValueError(f"--widths: positive integers, got {text!r}")
        return sorted(ws)
    out = []
    w = start
    while w <= max_width:
        out.append(w)
        w *= 2
    return out


def default_max_width(kind: str) -> int:
    import jax

    return CPU_MAX_WIDTH[kind] if jax.default_backend() == "cpu" else ACCEL_MAX_WIDTH


def memory() -> dict:
    """Peak bytes so far: the first device's allocator peak (accelerators) or the process's peak RSS (CPU)."""
    import jax

    dev = jax.devices()[0]
    stats = None
    if dev.platform != "cpu":
        try:
            stats = dev.memory_stats()
        except Exception:  # noqa: BLE001 -- a backend without allocator statistics
            stats = None
    if stats:
        return {"peak_bytes": int(stats.get("peak_bytes_in_use", 0)), "bytes_limit": stats.get("bytes_limit"),
                "memory_source": "device.memory_stats peak_bytes_in_use"}
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    return {"peak_bytes": int(rss), "memory_source": "peak RSS (ru_maxrss)"}


class DoesNotFit(Exception):
    """Raised by a width's measurement that knows before running that it would not fit the device's memory."""


def is_out_of_memory(err: BaseException) -> bool:
    text = str(err)
    return "RESOURCE_EXHAUSTED" in text or "Out of memory" in text or "out of memory" in text


def sweep(widths: list[int], measure_one: Callable[[int], dict], max_seconds: float,
          seconds_key: str) -> tuple[list[dict], str]:
    """Run `measure_one(width)` for each width in turn; returns (points, why it stopped). A point is the
    measurement plus "width", memory() after it and its wall seconds; `seconds_key` names the point's seconds per
    timed call, which ends the sweep once above `max_seconds`."""
    points: list[dict] = []
    for i, w in enumerate(widths):
        t0 = time.perf_counter()
        try:
            point = measure_one(w)
        except DoesNotFit as e:
            return points, f"width {w} does not fit: {e}"
        except Exception as e:  # only an allocation failure ends the sweep quietly
            if not is_out_of_memory(e):
                raise
            return points, f"out of memory at width {w}"
        point = {"width": w, **point, **memory(), "wall_seconds": time.perf_counter() - t0,
                 "load_average_1min": round(os.getloadavg()[0], 2)}  # a shared machine's load, for the record
        points.append(point)
        print(f"width {w}: {point.get(seconds_key, 0):.3g} s per call", flush=True)
        if point.get(seconds_key, 0) > max_seconds and i + 1 < len(widths):
            return points, f"a call took {point[seconds_key]:.1f} s > --max-seconds {max_seconds:g}"
    return points, "last width"


def saturation(points: list[dict], key: str, within: float = 0.9) -> dict:
    """The smallest width whose `key` is at least `within` of the best: where widening stops paying."""
    if not points:
        return {}
    best = max(points, key=lambda p: p[key])
    first = next(p for p in points if p[key] >= within * best[key])
    return {"width": first["width"], key: first[key], "best_width": best["width"], f"best_{key}": best[key],
            "within": within}


def _stage_args(args, module, base: list[str], width_flag: str, width: int):
    """The stage benchmark's options for one width: `base` + ``width_flag width``, parsed by the parser the CLI
    hands over (``args.parse_stage_options(module, argv)``: only the CLI knows argparse)."""
    return args.parse_stage_options(module, [*base, width_flag, str(width)])


def measure(args) -> dict:
    from wm_jax.bench import mdnrnn as bench_mdnrnn
    from wm_jax.bench import vae as bench_vae

    module = {"vae": bench_vae, "mdnrnn": bench_mdnrnn}[args.model]
    key, unit = HEADLINE[args.model]
    base = shlex.split(args.model_args)
    if args.model == "vae" and "--seconds" not in base:
        base += ["--seconds", "1"]
    if args.model == "mdnrnn":
        base += [] if "--min-seconds" in base else ["--min-seconds", "1"]
        base += [] if "--rounds" in base else ["--rounds", "2"]
    widths = widths_to_try(args.widths, args.max_width or default_max_width(args.model))

    def one(width: int) -> dict:
        res = module.measure(_stage_args(args, module, base, "--batch", width))
        sec = width / res[key] if args.model == "vae" else res["step_seconds"]
        return {key: res[key], "fraction_of_peak": res.get("fraction_of_peak"), "seconds_per_step": sec}

    points, stopped = sweep(widths, one, args.max_seconds, "seconds_per_step")
    return {"stage": f"{args.model}_scaling", "model": args.model, "model_args": base, "unit": unit,
            "headline": key, "points": points, "stopped_by": stopped, "saturation": saturation(points, key)}


def figure(result: dict, path: Path) -> Path | None:
    """Throughput (left, log) and fraction of the measured peak (right) against width (log2); PNG at `path`."""
    points = result.get("points")
    if not points:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = result["headline"]
    w = [p["width"] for p in points]
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    ax.plot(w, [p[key] for p in points], "o-", color="C0")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch width" + (" (population × trials × τ)" if result.get("model") == "dream" else ""))
    ax.set_ylabel(result.get("unit", key), color="C0")
    frac = [p.get("fraction_of_peak") for p in points]
    if all(f is not None for f in frac):
        ax2 = ax.twinx()
        ax2.plot(w, [100 * f for f in frac], "s--", color="C1", alpha=0.7)
        ax2.set_ylabel("% of measured matmul peak", color="C1")
        ax2.set_ylim(bottom=0)
    sat = result.get("saturation", {})
    if sat:
        ax.axvline(sat["width"], color="grey", ls=":", lw=1)
    dev = result.get("device", {})
    kind = dev.get("device_kind", "?")
    on = f"{kind}, {dev.get('cpu_count', '?')} cores" if dev.get("backend") == "cpu" else kind
    where = f"; within 10% of the best from width {sat['width']}" if sat else ""
    ax.set_title(f"{result['stage']} on {on} ({result.get('time', '')[:10]}){where}", fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path


def rate_at(points: list[dict], key: str, width: int) -> float:
    """`key` at `width`, interpolated log-log between the measured widths; beyond the widest, the widest's rate
    (a device past saturation gains no more); below the narrowest, the narrowest's rate scaled down linearly."""
    pts = sorted(points, key=lambda p: p["width"])
    if width >= pts[-1]["width"]:
        return pts[-1][key]
    if width <= pts[0]["width"]:
        return pts[0][key] * width / pts[0]["width"]
    lo, hi = next((a, b) for a, b in itertools.pairwise(pts) if a["width"] <= width <= b["width"])
    f = math.log(width / lo["width"]) / math.log(hi["width"] / lo["width"])
    return math.exp((1 - f) * math.log(lo[key]) + f * math.log(hi[key]))


def estimate_seconds(record: dict, width: int, steps: int, generations: int) -> dict:
    """Expected ES wall time from a dream scaling record: `generations` generations of `width` episodes that run
    `steps` steps each, at the rate the record interpolates for that width (compile and evaluations excluded)."""
    sps = rate_at(record["points"], "dream_steps_per_s", width)
    per_gen = width * steps / sps
    return {"width": width, "steps": steps, "generations": generations, "dream_steps_per_s": sps,
            "seconds_per_generation": per_gen, "hours": per_gen * generations / 3600,
            "device": record.get("device", {}).get("device_kind", "?"), "measured": record.get("time", "?")}


def estimate(record_path: str | os.PathLike, width: int, steps: int, generations: int) -> dict:
    """``wm-jax estimate RECORD --width W --steps S --generations G``: :func:`estimate_seconds` from a dream scaling
    JSON (ValueError when the file is not one)."""
    import json

    record = json.loads(Path(record_path).read_text())
    if record.get("stage") != "dream_scaling" or not record.get("points"):
        raise ValueError(f"{record_path}: not a dream scaling record (wm-jax bench dream --scaling)")
    return estimate_seconds(record, width, steps, generations)
