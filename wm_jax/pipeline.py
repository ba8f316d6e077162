"""The whole pipeline as a sequence of stages, for the experiment scripts.

collect → train-vae → encode → train-mdnrnn → train-controller / sweep-temperature → evaluate.
Every stage is a function of :mod:`wm_jax.stages` (the one ``wm-jax <command>`` calls), run in this process;
each is idempotent (it tops up, resumes from its checkpoint, or returns at once when its DONE marker exists), so
an interrupted experiment resumes by running the same script again.

Results (results.json, table.md, plots) go to ``<run>/results`` unless the experiment is recorded
(``record=True``, the scripts' ``--record``): then to ``results/<name>/``, the committed tables.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from wm_jax import stages
from wm_jax.config import Config, load_config
from wm_jax.io import controller_digest

# No JAX import at module level: experiment scripts import this module, and spawned collection workers
# re-import the script's module, which must stay free of JAX.


class StageError(RuntimeError):
    """A pipeline stage exited with a non-zero status."""


@dataclass
class Experiment:
    """One experiment: a config file plus overrides, a results folder, and per-stage wall times."""

    name: str
    config_path: str
    overrides: list[str] = field(default_factory=list)
    results_root: Path | None = None  # None: <run>/results, or results/ with record=True
    times: dict[str, float] = field(default_factory=dict)
    scale: str = ""  # "quick", "cpu", "paper"; default: the name's last "_" part (takecover_tau_table_cpu -> cpu)
    record: bool = False  # write into results/<name> (the committed tables) instead of <run>/results

    def __post_init__(self) -> None:
        from wm_jax import compile_cache

        self.cfg: Config = load_config(self.config_path, self.overrides)  # validates before any work
        # every stage's programs kept between invocations; how many were there is a condition of the wall times
        self.cached_programs = compile_cache.entries(compile_cache.enable())
        root = self.results_root or (Path("results") if self.record else None)
        self.results_dir = Path(root) / self.name if root is not None else self.cfg.run_dir / "results"
        self.results_dir.mkdir(parents=True, exist_ok=True)
        self._times_file = self.results_dir / "stage_seconds.json"
        if self._times_file.exists():
            if self.cfg.run_dir.exists():  # an interrupted or extended earlier invocation: keep counting its time
                self.times = json.loads(self._times_file.read_text())
            else:  # its run folder was deleted: those seconds were spent on work that is gone
                print(f"[{self.name}] {self.cfg.run_dir} does not exist: stage times start from zero")

    def config(self, overrides: tuple[str, ...] = ()) -> Config:
        """The experiment's config with extra `overrides` (validated)."""
        return load_config(self.config_path, [*self.overrides, *overrides]) if overrides else self.cfg

    def stage(self, label: str, fn: Callable[..., Any], *args: Any, overrides: tuple[str, ...] = (),
              **kwargs: Any) -> Any:
        """Run stage ``fn(cfg, *args, **kwargs)`` (a :mod:`wm_jax.stages` function) on the experiment's config
        plus `overrides`; record its wall time under `label` (also when interrupted); return its result."""
        print(f"\n=== [{self.name}] {label}: {fn.__name__}{' ' + ' '.join(overrides) if overrides else ''}",
              flush=True)
        t = time.time()
        try:
            return fn(self.config(overrides), *args, **kwargs)
        finally:  # an interrupted stage (Ctrl-C, an error) keeps the seconds it spent
            self._record(label, time.time() - t)

    def _record(self, label: str, seconds: float) -> None:
        from wm_jax.checkpoint import write_json_atomic

        self.times[label] = self.times.get(label, 0.0) + seconds
        write_json_atomic(self._times_file, self.times)

    def world_model(self) -> None:
        """collect → V → encode → M (and the models beside it: ``cfg.mdnrnn_members``), each skipped or resumed by
        the command itself; then `iterate.rounds` rounds of (C in the dream → real episodes with C → encode → M and
        the models beside it trained further on all the data)."""
        self.stage("collect", stages.collect)
        self.stage("train-vae", stages.train_vae)
        self.stage("encode", stages.encode)
        self.stage("train-mdnrnn", stages.train_mdnrnn)
        for e in self.cfg.mdnrnn_members:  # the dream's dynamics ensemble and the held-out model beside M
            self.stage(f"train-mdnrnn member {e}", stages.train_mdnrnn, member=e)
        it = self.cfg.iterate
        for r in range(it.rounds):
            name = f"{self.cfg.name}_iter{r}"  # the round's controller, beside the run (shares data, V, M)
            link_world_model(self.cfg, name)
            ctrl_dir = self.cfg.run_dir.parent / name / "controller"
            self.stage(f"iterate {r} train-controller", stages.train_controller,
                       overrides=(f"name={name}", "es.mode=dream", f"es.temperature={it.tau:g}"))
            self.stage(f"iterate {r} collect-agent", stages.collect_agent, ctrl_dir, r)
            self.stage(f"iterate {r} encode", stages.encode)
            steps = self.cfg.mdnrnn.steps + (r + 1) * it.mdnrnn_steps
            for e in (0, *self.cfg.mdnrnn_members):  # the models beside M learn the round's episodes too
                self.stage(f"iterate {r} train-mdnrnn" + (f" member {e}" if e else ""), stages.train_mdnrnn,
                           member=e, overrides=(f"mdnrnn.steps={steps}",))

    def evaluate(self, label: str, out: Path, tag: str, *, policy: str = "agent", controller: Path | None = None,
                 overrides: tuple[str, ...] = (), episodes: int | None = None, seed: int | None = None) -> dict:
        """Real-environment score of `policy` (C from `controller` for the agent), cached in `out` (a
        results.json); rerun only if missing or the controller's weights changed. The GIFs of its best and worst
        episode are copied to <results>/plots/real_<tag>_{best,worst}.gif. `episodes` / `seed` default to the
        config's evaluation (eval.episodes tracks from eval.seed); `overrides`: eval.* options."""
        digest = controller_digest(controller) if controller is not None else ""
        stamp = out.parent / "controller.sha256"  # which weights the cached score belongs to
        if out.exists() and stamp.exists() and stamp.read_text().strip() != digest:
            print(f"=== [{self.name}] {label}: {controller} holds other weights than those scored in {out}: "
                  f"evaluating again")
            out.unlink()
        if out.exists():
            print(f"=== [{self.name}] {label}: cached {out}")
        else:
            self.stage(label, stages.evaluate, self.cfg.run_dir, episodes=episodes or self.cfg.eval.episodes,
                       seed=self.cfg.eval.seed if seed is None else seed, policy=policy, controller=controller,
                       out=out.parent, overrides=overrides)
        stamp.write_text(digest + "\n")
        self.keep(out.parent, {f"{k}.gif": f"real_{tag}_{k}.gif" for k in ("best", "worst")})
        return json.loads(out.read_text())

    def keep(self, folder: Path, names: dict[str, str]) -> None:
        """Copy folder/<src> to results/<name>/plots/<dst> for each (src, dst) that exists."""
        plots = self.results_dir / "plots"
        for src, dst in names.items():
            if (folder / src).exists():
                plots.mkdir(exist_ok=True)
                shutil.copyfile(folder / src, plots / dst)

    def finish(self, rows: list[dict[str, Any]], columns: list[tuple[str, str]], extra: dict | None = None) -> Path:
        """Write results.json and table.md (and copy the run's plots) into results/<name>/."""
        from wm_jax.checkpoint import write_json_atomic
        from wm_jax.sysinfo import machine, provenance

        wall = sum(self.times.values())
        rec = {
            "experiment": self.name,
            "config": self.config_path,
            "overrides": self.overrides,
            "scale": self.scale or self.name.rsplit("_", 1)[-1],
            "date": time.strftime("%Y-%m-%d"),
            "machine": machine(),
            "provenance": provenance(),  # git commit + dirty flag, backend, device kind and count
            "resolved_config": self.cfg.to_dict(),
            "wall_time_h": wall / 3600,  # sum of stage times, over every (resumed) invocation
            "stage_seconds": self.times,
            # programs already in the compile cache when the last invocation started (0: everything compiled)
            "compile_cache_programs_at_start": self.cached_programs,
            "rows": rows,
            **(extra or {}),
        }
        write_json_atomic(self.results_dir / "results.json", rec)
        lines = ["| " + " | ".join(title for _, title in columns) + " |", "|" + "---|" * len(columns)]
        for r in rows:
            lines.append("| " + " | ".join(_cell(r.get(key)) for key, _ in columns) + " |")
        table = "\n".join(lines) + "\n"
        (self.results_dir / "table.md").write_text(table)
        plots = self.cfg.run_dir / "plots"
        if plots.is_dir():
            shutil.copytree(plots, self.results_dir / "plots", dirs_exist_ok=True)
        print(f"\n{table}\nresults: {self.results_dir}/results.json, plots and GIFs: {self.results_dir}/plots/")
        return self.results_dir


def _mtime(path: Path) -> float:
    """Newest modification time of a file, or of any file under a folder (0 if there is none)."""
    if path.is_file():
        return path.stat().st_mtime
    return max((f.stat().st_mtime for f in path.rglob("*") if f.is_file()), default=0.0)


def _cell(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.1f}"
    return str(v)


def score(rec: dict) -> str:
    """'mean ± std' of an evaluate results.json."""
    return f"{rec['mean']:.0f} ± {rec['std']:.0f}"


def late_hazard(rec: dict) -> str:
    """Real deaths per 1,000 live steps over steps 400-800 / 800-1,400 / 1,400-cap of an evaluate results.json
    (TakeCover gets harder as imps keep spawning; a dream kind late in an episode trains a C that dies there)."""
    from wm_jax.metrics import HAZARD_EDGES, episode_hazard

    hz = episode_hazard(rec["lengths"], rec["terminated"])[HAZARD_EDGES.index(400):]
    return " / ".join("–" if h is None else f"{h:.1f}" for h in hz)


def _holds(taus: tuple[float, ...], t: float) -> bool:
    return any(abs(t - u) < 1e-9 for u in taus)


BLIND_SWEEP = "sweep120"  # the best of the sweep periods measured in real TakeCover (wm_jax.train.dream_check)


def sweep_and_score(exp: Experiment, run: Path, taus: tuple[float, ...],
                    overrides: tuple[str, ...] = ()) -> dict[float, tuple[dict, dict]]:
    """Train one C per τ in one batched sweep in run folder `run` (``sweep-temperature``), then score each on the
    real tracks (cached). Returns {τ: (its evaluation's results, its entry of sweep/scores.json: the dream
    evaluation return, and with es.select_model the held-out dream's, select_return)}."""
    models = ["mdnrnn", *(f"mdnrnn_{e}" for e in exp.cfg.mdnrnn_members)]  # M and the models beside it
    finished = {m: (run / m / "DONE").stat().st_mtime for m in models}
    newest = max(finished, key=finished.get)
    if (run / "sweep").is_dir() and 0 < _mtime(run / "sweep") < finished[newest]:
        raise StageError(f"{run / 'sweep'} holds controllers trained in the dream of an older M ({run}/{newest} "
                         f"finished after them): move that folder away, then rerun to train the sweep on this M")
    exp.stage("sweep-temperature", stages.sweep_temperature, taus, overrides=overrides)
    virtual = json.loads((run / "sweep" / "scores.json").read_text())["scores"]
    return {t: (exp.evaluate(f"evaluate tau {t:g}", run / "eval" / f"tau_{t:g}" / "results.json", f"tau_{t:g}",
                             controller=run / "sweep" / f"tau_{t:g}"),
                virtual[f"{t:g}"]) for t in taus}


def tau_table(exp: Experiment, taus: tuple[float, ...], paper: tuple[float, ...] = (),
              dream_check: bool = True) -> Path:
    """The paper's TakeCover table: C trained in the dream at each τ (one batched program), scored for real.

    Rows: the random policy, a blind sweep (left and right alternately, ``BLIND_SWEEP``: what moving without
    looking scores, the bar for a controller that reacts to what it sees), then one row per τ with its virtual
    (dream) score and real score. `paper`: the paper's τ values, which `taus` must hold; rows of other τ are
    marked as beyond the paper's table, and the best real score is reported both over all τ and over the paper's.
    `dream_check`: first score fixed policies in the dream (``wm-jax dream-check``, a diagnostic; no row uses it).
    """
    missing = [t for t in paper if not _holds(taus, t)]
    if missing:
        raise StageError(f"es.taus {list(taus)} lacks the paper's {missing}: the table needs every τ of the paper")
    run = exp.cfg.run_dir
    exp.world_model()
    # Fixed policies scored in M's dream (minutes): a dream that ranks them unlike the real game (e.g. one that
    # rewards running into a wall) shows up here, before the long ES run.
    check = run / "dream_check.json"
    if dream_check:
        if not check.exists() or check.stat().st_mtime < (run / "mdnrnn" / "DONE").stat().st_mtime:  # M retrained
            exp.stage("dream-check", stages.dream_check, taus)
        shutil.copyfile(check, exp.results_dir / "dream_check.json")
    else:  # a copy from an earlier run with the check would describe another M
        (exp.results_dir / "dream_check.json").unlink(missing_ok=True)
    scored = sweep_and_score(exp, run, taus)
    rows = []
    rand = exp.evaluate("evaluate random", run / "eval" / "random" / "results.json", "random", policy="random")
    rows.append({"agent": "random policy", "tau": None, "virtual": None, "real": score(rand),
                 "hazard": late_hazard(rand)})
    blind = exp.evaluate(f"evaluate {BLIND_SWEEP}", run / "eval" / BLIND_SWEEP / "results.json", BLIND_SWEEP,
                         policy=BLIND_SWEEP)
    rows.append({"agent": f"sweeping left/right every {BLIND_SWEEP[5:]} steps (no models)", "tau": None,
                 "virtual": None, "real": score(blind), "hazard": late_hazard(blind)})
    best, best_paper = None, None
    held_out = exp.cfg.es.select_model > 0
    for t, (rec, dream_scores) in scored.items():
        in_paper = not paper or _holds(paper, t)
        rows.append({"agent": "C trained in the dream" + ("" if in_paper else " (τ beyond the paper's table)"),
                     "tau": f"{t:.2f}", "virtual": f"{dream_scores['dream_eval_return']:.0f}",
                     **({"held_out": f"{dream_scores['select_return']:.0f}"} if held_out else {}),
                     "real": score(rec), "hazard": late_hazard(rec)})
        if best is None or rec["mean"] > best[1]["mean"]:
            best = (t, rec)
        if in_paper and (best_paper is None or rec["mean"] > best_paper[1]["mean"]):
            best_paper = (t, rec)
    extra = {"random_mean": rand["mean"], "blind_policy": BLIND_SWEEP, "blind_mean": blind["mean"],
             "best_tau": best[0], "best_real_mean": best[1]["mean"],
             "best_real_std": best[1]["std"], "best_paper_tau": best_paper[0],
             "best_paper_real_mean": best_paper[1]["mean"], "best_paper_real_std": best_paper[1]["std"],
             "episodes": exp.cfg.eval.episodes}
    columns = [("agent", "agent"), ("tau", "τ"), ("virtual", "virtual score"),
               *([("held_out", f"held-out dream (model {exp.cfg.es.select_model}), which chose C")] if held_out
                 else []),
               ("real", f"real score ({exp.cfg.eval.episodes} episodes)"),
               ("hazard", "real deaths per 1,000 steps, steps 400–800 / 800–1,400 / 1,400+")]
    return exp.finish(rows, columns, extra)


def link_world_model(cfg: Config, name: str) -> None:
    """Give run `name` the data, V and M (and M's dynamics-ensemble members) of `cfg`'s run (symlinks), so a
    controller variant reuses them."""
    src, dst = cfg.run_dir.absolute(), (cfg.run_dir.parent / name)
    dst.mkdir(parents=True, exist_ok=True)
    members = [f"mdnrnn_{e}" for e in cfg.mdnrnn_members]
    for part in ("data", "vae", "mdnrnn", *members):
        link = dst / part
        if not link.exists():
            link.symlink_to(src / part, target_is_directory=True)


def score_row(title: str, rec: dict, seconds: float) -> dict:
    """A controller row: its real score, mean, wall time (`seconds` of training + evaluation) and per-track
    returns (what the std hides)."""
    return {"agent": title, "real": score(rec), "mean": rec["mean"], "row_wall": f"{seconds / 60:.0f} min",
            "returns": [round(float(r), 1) for r in rec["returns"]]}


def controller_rows(exp: Experiment, variants: list[tuple[str, str, list[str]]]) -> list[dict]:
    """Train C once per (key, title, overrides) variant, in run folder <name>_<key> sharing V and M; score each
    in the real env."""
    rows = []
    for key, title, overrides in variants:
        label, name = f"{key}:{title}", f"{exp.cfg.name}_{key}"  # e.g. carracing_cpu_full
        link_world_model(exp.cfg, name)
        exp.stage(f"train-controller {label}", stages.train_controller, overrides=(f"name={name}", *overrides))
        run = exp.cfg.run_dir.parent / name
        rec = exp.evaluate(f"evaluate {label}", run / "eval" / "results.json", key,
                           controller=run / "controller", overrides=_eval_flags(overrides))
        exp.keep(run / "plots", {"controller_curves.png": f"controller_curves_{key}.png"})
        row = score_row(title, rec, exp.times.get(f"train-controller {label}", 0.0) +
                        exp.times.get(f"evaluate {label}", 0.0))
        picked = run / "controller" / "score.json"
        if picked.exists() and "selection" in (sel := json.loads(picked.read_text())):
            row["selection"] = sel["selection"]  # which ES mean the final choice kept, and the candidates' returns
        rows.append(row)
    return rows


def _eval_flags(overrides: list[str]) -> tuple[str, ...]:
    """Overrides the agent needs at evaluation too (e.g. an untrained M) are passed on."""
    return tuple(o for o in overrides if o.startswith("eval."))
