"""The README's figure, ``docs/takecover.png``: the headline TakeCover τ table (virtual and real score per τ
against the random and blind-sweep policies, the paper's τ 1.15 and the target) beside every TakeCover run's best
real score. Drawn by ``python -m wm_jax.report`` (``plot_takecover``) from the run folders that
``wm_jax.results_index`` reads; matplotlib is imported only when there is something to draw.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from wm_jax.results_index import Run, best_real, load_runs, parse_score

FIGURE = Path("docs") / "takecover.png"
TAKECOVER_HEADLINE = "takecover_tau_table_cpu"  # the headline τ table: the figure's left panel, the README's section
TAKECOVER_PREFIX = "takecover_tau_table_"  # the runs the figure's right panel compares
PAPER_TAU115 = (1092, 556)  # the paper's τ 1.15 row (Ha & Schmidhuber 2018, table 2): real score mean, std
TAKECOVER_TARGET = 1100  # issue #7's cpu-scale target for the best τ


def _tau_rows(rec: dict) -> list[tuple[float, float | None, float, float]]:
    """A τ table's controller rows: (τ, virtual score or None, real mean, real std)."""
    out = []
    for r in rec.get("rows", []):
        score = parse_score(r.get("real", ""))
        if r.get("tau") and score:
            virtual = (r.get("virtual") or "").replace(",", "")
            out.append((float(r["tau"]), float(virtual) if virtual.replace(".", "").isdigit() else None, *score))
    return out


def plot_takecover(results: Path, out: Path) -> bool:
    """docs/takecover.png: left, the headline τ table (virtual and real score per τ, ± one standard error, the
    random and blind-sweep policies, the paper's τ 1.15); right, every TakeCover run's best real score. Returns
    whether the file changed (False, writing nothing, when the headline run is absent or the picture is the same)."""
    runs = [r for r in load_runs(results) if r.name.startswith(TAKECOVER_PREFIX) and best_real(r.rec)]
    head = next((r for r in runs if r.name == TAKECOVER_HEADLINE), None)
    if head is None:
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rec, n = head.rec, head.rec.get("episodes", 100)
    rows = _tau_rows(rec)
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(12, 5.2), gridspec_kw={"width_ratios": [1, 1.15]})
    taus = [t for t, *_ in rows]
    ax.errorbar(taus, [m for _, _, m, _ in rows], [s / math.sqrt(n) for *_, s in rows], marker="o", capsize=3,
                label=f"real game ({n} episodes, ± 1 SE)")
    ax.plot(taus, [v for _, v, *_ in rows], "s--", label="in the dream (virtual)")
    ax.errorbar([1.15], [PAPER_TAU115[0]], [PAPER_TAU115[1] / 10], fmt="*", ms=12, color="k", label="paper, τ 1.15")
    for value, text, style in ((rec.get("random_mean"), "random policy", ":"),
                               (rec.get("blind_mean"), "sweeping blind (no models)", "-."),
                               (TAKECOVER_TARGET, "target", "-")):
        if value:
            ax.axhline(value, ls=style, lw=1, color="grey")
            ax.text(taus[0], value, f" {text} {value:,.0f}", va="bottom", fontsize=8, color="dimgrey")
    ax.set(xlabel="dream temperature τ", ylabel="steps survived", title=f"{head.name}: C trained in the dream")
    ax.legend(fontsize=8, loc="lower right")
    _plot_levers(bx, runs, head)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    if out.exists() and out.read_bytes() == tmp.read_bytes():
        tmp.unlink()  # the same picture: leave the tracked file untouched
        return False
    tmp.replace(out)
    return True


def _plot_levers(ax: Any, runs: list[Run], head: Run) -> None:
    """Horizontal bars: each TakeCover run's best real score ± one SE, sorted; superseded runs left out."""
    runs = sorted((r for r in runs if r.entry.get("status") != "superseded"), key=lambda r: best_real(r.rec)[0])
    means = [best_real(r.rec)[0] for r in runs]
    ses = [best_real(r.rec)[1] / math.sqrt(r.rec.get("episodes", 100)) for r in runs]
    colors = ["tab:orange" if r.name == head.name else "tab:blue" for r in runs]
    ax.barh(range(len(runs)), means, xerr=ses, color=colors, capsize=2)
    labels = [r.name.removeprefix(head.name).lstrip("_") or "headline" for r in runs]
    ax.set_yticks(range(len(runs)), labels, fontsize=8)
    for value, text, style in ((head.rec.get("blind_mean"), "blind sweep", "-."), (TAKECOVER_TARGET, "target", "-")):
        if value:
            ax.axvline(value, ls=style, lw=1, color="grey")
            ax.text(value, len(runs) - 0.4, f"{text} ", ha="right", fontsize=8, color="dimgrey")
    ax.set(xlabel="best real score over τ (± 1 SE)", title=f"every run {head.name}_* (orange: the headline)")
