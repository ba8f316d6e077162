"""The fp32 limit: FLOP/s of a large jitted matmul on the default device."""

from __future__ import annotations



def add_arguments(parser) -> None:
    parser.add_argument("--n", type=int, default=2048, help="matrix size")


def measure(args) -> dict:
    from wm_jax.sysinfo import peak_flops

    return {"matmul_n": args.n, "peak_gflops": peak_flops(args.n) / 1e9}
