"""Metrics: JSONL + TensorBoard for every training stage, and PNG training curves."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np


HAZARD_EDGES = (0, 100, 200, 400, 800, 1400)  # time-bucket starts of a hazard; the last runs to the episode cap


def hazard_per_1000(hz, live) -> list[float | None]:
    """Deaths per 1,000 live steps in each bucket (None where no episode was alive), summed over episodes.
    `hz`, `live`: [E, B] deaths (or death probabilities) and live steps per episode and bucket."""
    hz, live = np.asarray(hz).sum(0), np.asarray(live).sum(0)
    return [round(float(1000 * h / n), 3) if n > 0 else None for h, n in zip(hz, live)]


def episode_hazard(lengths, terminated, edges=HAZARD_EDGES) -> list[float | None]:
    """The empirical hazard of real episodes: an episode of length L lives steps 0..L-1 and, if it was
    terminated (a death, not the cap), dies at step L-1; deaths per 1,000 live steps per bucket of `edges`."""
    lengths, dead = np.asarray(lengths)[:, None], np.asarray(terminated, bool)[:, None]
    lo = np.asarray(edges)[None, :]
    hi = np.append(np.asarray(edges)[1:], np.iinfo(np.int64).max)[None, :]
    live = np.clip(np.minimum(lengths, hi) - lo, 0, None)
    died = dead & (lengths - 1 >= lo) & (lengths - 1 < hi)
    return hazard_per_1000(died.astype(np.float64), live)


class MetricsWriter:
    """Append metrics to ``<dir>/metrics.jsonl`` and TensorBoard event files in ``<dir>/tb``.

    Records at or past `resume_step` from an earlier (killed) run are dropped on open, so a resumed run
    does not write the same step twice. In a multi-process run only process 0 writes (wm_jax.distributed);
    on the others the writer is inert: it opens, truncates and writes nothing.
    """

    def __init__(self, directory: str | os.PathLike, resume_step: int | None = None, tensorboard: bool = True):
        from wm_jax.distributed import is_main_process

        self.directory = Path(directory)
        self.path = self.directory / "metrics.jsonl"
        self._file, self._tb = None, None
        if not is_main_process():
            return
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            keep = [r for r in read_jsonl(self.path) if resume_step is not None and r.get("step", 0) <= resume_step]
            tmp = self.path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in keep))
            os.replace(tmp, self.path)
        self._file = open(self.path, "a")
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(str(self.directory / "tb"), flush_secs=10)

    def write(self, step: int, **values: Any) -> None:
        if self._file is None:  # not process 0
            return
        rec = {"step": int(step)}
        for k, v in values.items():
            v = float(np.asarray(v))
            rec[k] = v
            if self._tb is not None and math.isfinite(v):
                self._tb.add_scalar(k, v, int(step))
        self._file.write(json.dumps(rec) + "\n")
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self._tb is not None:
            self._tb.close()

    def __enter__(self) -> "MetricsWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    out = []
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line:
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break  # a torn last line from a kill: stop there
    return out


def plot_curves(jsonl: str | os.PathLike, png: str | os.PathLike, keys: list[str], title: str = "",
                series: list[str] | None = None) -> Path:
    """Plot `keys` of a metrics.jsonl against step into a PNG (one panel per key). With `series`, each panel
    draws one labelled line per prefix: "<prefix>/<key>" (e.g. one per τ of a sweep). Only process 0 of a
    multi-process run draws; the others return the path without writing."""
    from wm_jax.distributed import is_main_process

    if not is_main_process():
        return Path(png)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recs = read_jsonl(jsonl)
    names = {k: [f"{s}/{k}" for s in series] if series else [k] for k in keys}
    keys = [k for k in keys if any(n in r for r in recs for n in names[k])]
    fig, axes = plt.subplots(1, max(1, len(keys)), figsize=(4 * max(1, len(keys)), 3), squeeze=False)
    for ax, k in zip(axes[0], keys):
        for name in names[k]:
            pts = [(r["step"], r[name]) for r in recs if name in r]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], label=name.split("/")[0] if series else None)
        if series:
            ax.legend(fontsize=7)
        ax.set_xlabel("step")
        ax.set_title(k)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=90)
    plt.close(fig)
    return png
