"""The worker side of ``wm-jax bench <stage> --compare-torch`` (wm_jax/bench/compare.py), shared by the PyTorch
baselines beside it: print the baseline's info as one JSON line, then for each line "<n>" read from stdin run `n`
steps and print {"steps", "wall_s", "cpu_s"} (and "items" when the block counts its own); "quit" or end of input
ends it. Imported by the scripts in this folder (their own folder is on sys.path when run as scripts)."""

import json
import sys
import time
from collections.abc import Callable


def serve(info: dict, block: Callable[[int], int | None]) -> None:
    """Answer timing requests: `block(n)` runs n steps and returns the items it did, or None (n × items_per_step)."""
    print(json.dumps(info), flush=True)
    for line in sys.stdin:
        if line.strip() in ("", "quit"):
            break
        n = int(line)
        t0, c0 = time.perf_counter(), time.process_time()
        items = block(n)
        reply = {"steps": n, "wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0}
        if items is not None:
            reply["items"] = items
        print(json.dumps(reply), flush=True)


def repeat(step: Callable[[], object]) -> Callable[[int], None]:
    """The block of a fixed-size step: run it n times (the items are n × the info's ``items_per_step``)."""

    def block(n: int) -> None:
        for _ in range(n):
            step()

    return block
