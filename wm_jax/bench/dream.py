"""``wm-jax bench dream [--env takecover]``: dream steps per second over whole ES generations.

One timed call = ``generations`` full generations (ask → pop × trials rollouts → tell) in one compiled program;
compile is excluded. M has random weights with the done head forced off (bias −1e4), so every episode runs
the full ``--steps`` and ``dream_steps_per_s = pop · trials · steps · generations / seconds`` counts
candidate-steps actually computed (with ``--compact``: the compacted batch's). Default sizes: CarRacing z 32,
LSTM 256; TakeCover z 64, LSTM 512 (paper); pop 64 × 16 trials × 1000 steps.

To name the limit, ``--profile`` (default on) also times, back to back on the same batch:
``matmul_floor``: a bare scan of only the step's three matmuls ([B, I]·W_x, [B, H]·W_h, [B, H]·W_head),
``rollout_only``: the dream rollout without ask/tell,
so the report splits a generation into matmuls / the rest of the step (gates, sampling, RNG) / ES overhead.

Episodes that end (``--end-prob p``): the done head instead ends each step with probability p (bernoulli), so
episode lengths are geometric (mean 1/p, cut at ``--steps``) and a batch runs until its longest episode ends.
``episode_steps_per_s`` counts only the steps episodes were alive; ``--compact k`` (es.dream_compact) halves the
batch up to k times as episodes end, and ``wm-jax bench dream --env takecover --end-prob 0.001 --compact 0`` vs
``--compact 4`` measures what that buys. The profile assumes full-length episodes: --end-prob skips it.

A τ sweep (``--taus``, one compiled program for every τ as ``sweep-temperature`` runs it) with ``--end-prob`` one
value per τ gives the sweep's spread: a cool dream its controller has learned to exploit keeps its episodes alive
to the cap while the hot ones end early. Compaction shrinks the batch of every τ's episodes as one
(``dream_batch.rollout_taus``), by ``--compact-ratio`` (es.dream_compact_ratio) at a time.

``--compare-torch`` (one τ, full-length episodes): after the above, ``--rounds`` rounds of alternating blocks
(``wm_jax.bench.compare``): one call of the generation program, 2 s of fp32 matmuls (the measured peak, which
``fraction_of_peak`` then uses) and the same generations in PyTorch (``benchmarks/torch_dream.py --serve``: the
population x trials batch as one tensor, eager, CMA-ES in torch). ``dream_steps_per_s`` is then the best JAX block,
``torch_dream_steps_per_s`` the best PyTorch one, ``ratio_vs_torch`` their ratio and ``ratio_vs_torch_median`` the
median of the per-round ratios; ``profile_generation_seconds`` is the profile's own best generation.
"""

from __future__ import annotations

import os
import time
from types import SimpleNamespace

import numpy as np

SIZES = {"carracing": {"z": 32, "hidden": 256, "action": 3, "inputs": "zh", "bias": True},
         "takecover": {"z": 64, "hidden": 512, "action": 1, "inputs": "zch", "bias": False}}


def add_arguments(parser) -> None:
    parser.add_argument("--env", choices=sorted(SIZES), default="carracing", help="the paper's sizes of which env")
    parser.add_argument("--pop", type=int, default=64, help="population (paper 64)")
    parser.add_argument("--trials", type=int, default=16, help="trials per candidate (paper 16)")
    parser.add_argument("--steps", type=int, default=1000, help="dream steps per episode")
    parser.add_argument("--mixtures", type=int, default=5, help="Gaussians per z dimension (paper: 5)")
    parser.add_argument("--hidden", type=int, default=0, help="LSTM units (0: the env's paper size)")
    parser.add_argument("--chunk", type=int, default=50, help="steps per early-exit check")
    parser.add_argument("--generations", type=int, default=1, help="generations per timed call")
    parser.add_argument("--repeats", type=int, default=2, help="timed calls (best is reported)")
    parser.add_argument("--end-prob", default="0",
                        help="per-step end probability (bernoulli); 0: episodes never end before --steps. A comma "
                        "list gives one per τ of --taus (a τ sweep whose dreams end at different rates)")
    parser.add_argument("--taus", default="1.15", help="comma list: τ batched in one program (a τ sweep)")
    parser.add_argument("--compact", type=int, default=0, help="es.dream_compact: batch shrinks as episodes end")
    parser.add_argument("--compact-ratio", type=float, default=0.5, help="es.dream_compact_ratio")
    parser.add_argument("--single-device", action="store_true", help="use only the first device")
    parser.add_argument("--no-profile", action="store_true", help="skip the matmul-floor / rollout-only timings")
    parser.add_argument("--unroll", type=int, default=1, help="es.unroll: dream steps per scan iteration")
    parser.add_argument("--unrolls", default="", help="comma list, e.g. 1,2,4,8: time one program per es.unroll "
                        "in one process, in turn for --repeats rounds (a loaded machine slows all alike); each's best")
    parser.add_argument("--compare-torch", action="store_true", help="also time the same generations in PyTorch, and "
                        "the matmul peak, in alternating rounds (needs the bench extra: torch)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of --compare-torch")
    parser.add_argument("--scaling", action="store_true", help="throughput against width = pop x trials x τ: "
                        "--pop doubles from the width 64 up (wm_jax.bench.scaling); JSON + PNG")
    from wm_jax.bench.scaling import add_sweep_arguments

    add_sweep_arguments(parser)


def flops_per_step(z: int, hidden: int, action: int, mixtures: int, feat: int) -> int:
    """Matmul FLOPs of one candidate-step: LSTM input + recurrent projections, the MDN head, the controller."""
    head = 3 * mixtures * z + 2
    return 2 * ((z + action) * 4 * hidden + hidden * 4 * hidden + hidden * head + feat * action)


def _best(fn, repeats: int) -> float:
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _config(args, pop: int):
    from wm_jax.config import load_config

    s = SIZES[args.env]
    return load_config(None, [f"env.name={args.env}", f"es.population={pop}", f"es.trials={args.trials}",
                              f"es.dream_max_steps={args.steps}", f"es.dream_chunk={args.chunk}",
                              f"controller.inputs={s['inputs']}", f"controller.bias={str(s['bias']).lower()}",
                              f"es.dream_compact={args.compact}", f"es.dream_compact_ratio={args.compact_ratio}",
                              f"es.unroll={args.unroll}"])


def _world(args):
    """M (random weights, done head forced off or bernoulli) and the τ-batched DreamParams: (mdn, dp, taus, probs)."""
    import jax
    import jax.numpy as jnp

    from wm_jax.envs import dream
    from wm_jax.es import with_taus
    from wm_jax.models import mdnrnn

    s = SIZES[args.env]
    z, hid, a = s["z"], args.hidden or s["hidden"], s["action"]
    taus = [float(t) for t in args.taus.split(",")]
    probs = [float(p) for p in args.end_prob.split(",")]
    if len(probs) == 1:
        probs = probs * len(taus)
    if len(probs) != len(taus) or not all(0.0 <= p < 1.0 for p in probs) or (0.0 in probs and max(probs) > 0):
        raise ValueError(f"--end-prob: one value or one per τ ({len(taus)}), all in [0, 1) and all 0 or none; "
                         f"got {args.end_prob}")
    mdn = mdnrnn.init_params(jax.random.PRNGKey(0), z, a, hid, args.mixtures)
    mdn["head"]["w"] = mdn["head"]["w"].at[:, -1].set(0.0)  # the done logit is the bias alone
    if max(probs) > 0:  # bernoulli ends with probability p at every step: geometric episode lengths
        top = max(probs)  # the logit gives the largest p; each τ's done_scale brings its own down to it
        mdn["head"]["b"] = mdn["head"]["b"].at[-1].set(float(np.log(top / (1 - top))))
        base = dream.make_params(mdn, *_bank(z), max_steps=args.steps, kind=args.env, done_mode="bernoulli")
        if len(set(probs)) > 1:
            base = base.replace(done_scale=jnp.asarray([p / top for p in probs], jnp.float32))
    else:
        mdn["head"]["b"] = mdn["head"]["b"].at[-1].set(-1e4)  # never done: every episode runs all steps
        base = dream.make_params(mdn, *_bank(z), max_steps=args.steps, kind=args.env)
    return mdn, with_taus(base, taus), taus, probs


def measure(args) -> dict:
    if args.scaling:
        return measure_scaling(args)
    if args.unrolls:
        return measure_unrolls(args)
    import jax

    from wm_jax.es import ESProgram
    from wm_jax.models import controller as ctrl
    from wm_jax.sysinfo import peak_flops

    s = SIZES[args.env]
    z, hid, a = s["z"], args.hidden or s["hidden"], s["action"]
    cfg = _config(args, args.pop)
    mdn, dp, taus, probs = _world(args)
    if args.compare_torch and (len(taus) > 1 or max(probs) > 0 or args.compact):
        raise ValueError("--compare-torch times full-length episodes at one τ: no --end-prob, --compact or τ list")
    template = ctrl.controller_from_config(jax.random.PRNGKey(0), cfg.controller, args.env, z, hid)
    devices = jax.devices()[:1] if args.single_device else None
    prog = ESProgram(cfg, template, devices=devices)
    carry = prog.init(jax.random.PRNGKey(0), len(taus))

    t0 = time.perf_counter()
    out, m = prog.run(carry, dp, args.generations)
    jax.block_until_ready(out)
    first = time.perf_counter() - t0
    steps_run = int(m["steps_run"].max(axis=1).sum())  # loop steps per generation (the τ run in one loop)
    alive_steps, slot_steps = int(m["alive_steps"].sum()), int(m["slot_steps"].sum())
    gen_fn = lambda: jax.block_until_ready(prog.run(carry, dp, args.generations))  # noqa: E731
    profile = not args.no_profile and max(probs) == 0 and len(taus) == 1
    if not profile:
        sec = _best(gen_fn, args.repeats)
    batch = args.pop * args.trials * len(taus)
    if profile:
        prof = _profile(prog, dp, carry, mdn, batch, args, z, hid, a, gen_fn)
        sec = prof.pop("generation_seconds")
    feat = ctrl.feature_dim(s["inputs"], z, hid)
    fps = flops_per_step(z, hid, a, args.mixtures, feat)
    compared = {}
    if args.compare_torch:  # the headline from the alternated blocks; the profile keeps its own generation time
        compared = {**({"profile_generation_seconds": sec} if profile else {}),
                    **_compare_torch(args, gen_fn, slot_steps, hid)}
        sec, peak = slot_steps / compared.pop("jax_best"), compared.pop("peak_best")
    else:
        peak = peak_flops()
    sps = slot_steps / sec  # batch · steps_run without compaction
    result = {
        "env": args.env, "z_dim": z, "lstm_hidden": hid, "mixtures": args.mixtures, "population": args.pop,
        "trials": args.trials, "steps": args.steps, "generations_per_call": args.generations,
        "controller_params": ctrl.num_params(template), "devices_used": prog.n_devices,
        "steps_run": steps_run, "seconds_per_call": sec, "first_call_seconds_incl_compile": first,
        "end_prob": probs[0] if len(set(probs)) == 1 else probs, "taus": taus, "compact": args.compact,
        "compact_ratio": args.compact_ratio, "unroll": args.unroll, "episode_steps": alive_steps,
        "slot_steps": slot_steps,
        "episode_steps_per_s": alive_steps / sec, "dream_steps_per_s": sps, "flops_per_step": fps,
        "achieved_gflops": sps * fps / 1e9,
        "peak_gflops": peak / 1e9, "fraction_of_peak": sps * fps / peak,
        "limit_steps_per_s_at_peak": peak / fps,
    }
    if profile:
        result.update(prof)
    result.update(compared)
    return result


def _compare_torch(args, gen_fn, slot_steps: int, hidden: int) -> dict:
    """Alternating rounds of one JAX generation call, the matmul peak and the same generations in PyTorch
    (wm_jax.bench.compare): the record's torch keys, plus "jax_best" (dream steps/s) and "peak_best" (FLOP/s)."""
    from wm_jax.bench.compare import TorchWorker, alternate, call_block, matmul_block, summarise, torch_figures

    torch_args = ["--env", args.env, "--pop", args.pop, "--trials", args.trials, "--steps", args.steps,
                  "--mixtures", args.mixtures, "--hidden", hidden, "--tau", args.taus, "--chunk", args.chunk]
    cores = os.cpu_count() or 1
    blocks = {"jax": call_block(gen_fn, slot_steps, 0.0), "peak": matmul_block(2.0)}
    with TorchWorker("torch_dream.py", torch_args, steps=args.generations) as worker:
        rates = alternate({**blocks, "torch": worker.block}, args.rounds)
    s = summarise(rates, cores)
    return {**torch_figures(rates, s, worker.info, "dream_steps", cores), "jax_best": s["jax"]["best"],
            "peak_best": s["peak"]["best"], "dream_steps_per_s_median": s["jax"]["median"], "blocks": s,
            "rounds": args.rounds, "method": "alternating blocks in one run; rates = best block (wm_jax.bench.compare)"}


def measure_unrolls(args) -> dict:
    """Dream steps/s of the same generation program at each es.unroll of --unrolls, timed round-robin: every round
    times each program once (wall and process CPU seconds), and each keeps its best round."""
    import jax

    from wm_jax.es import ESProgram
    from wm_jax.models import controller as ctrl

    s = SIZES[args.env]
    z, hid = s["z"], args.hidden or s["hidden"]
    _, dp, taus, probs = _world(args)
    devices = jax.devices()[:1] if args.single_device else None
    runs = {}
    for u in (int(x) for x in args.unrolls.split(",")):
        cfg = _config(SimpleNamespace(**{**vars(args), "unroll": u}), args.pop)
        template = ctrl.controller_from_config(jax.random.PRNGKey(0), cfg.controller, args.env, z, hid)
        prog = ESProgram(cfg, template, devices=devices)
        carry = jax.device_put(prog.init(jax.random.PRNGKey(0), len(taus)), prog.replicated)
        t0 = time.perf_counter()
        compiled = prog.compile_run(carry, dp, args.generations)
        _, m = jax.block_until_ready(compiled(carry, dp))
        runs[u] = {"call": lambda c=compiled, k=carry: jax.block_until_ready(c(k, dp)),
                   "first_call_seconds_incl_compile": time.perf_counter() - t0,
                   "slot_steps": int(m["slot_steps"].sum()), "episode_steps": int(m["alive_steps"].sum()),
                   "seconds_per_call": float("inf"), "cpu_seconds_per_call": float("inf"), "rounds": []}
    for _ in range(args.repeats):
        for r in runs.values():
            t0, c0 = time.perf_counter(), time.process_time()
            r["call"]()
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            r["rounds"].append(round(wall, 3))
            r["seconds_per_call"] = min(r["seconds_per_call"], wall)
            r["cpu_seconds_per_call"] = min(r["cpu_seconds_per_call"], cpu)
    by_unroll = {}
    for u, r in runs.items():
        r.pop("call")
        r["dream_steps_per_s"] = r["slot_steps"] / r["seconds_per_call"]
        r["dream_steps_per_cpu_s"] = r["slot_steps"] / r["cpu_seconds_per_call"]
        by_unroll[str(u)] = r
        print(f"unroll {u}: {r['dream_steps_per_s']:,.0f} steps/s, {r['dream_steps_per_cpu_s']:,.0f} per CPU-s; "
              f"rounds {r['rounds']} s", flush=True)
    return {"stage": "dream_unroll", "env": args.env, "z_dim": z, "lstm_hidden": hid, "population": args.pop,
            "trials": args.trials, "steps": args.steps, "taus": taus, "chunk": args.chunk,
            "end_prob": probs[0] if len(set(probs)) == 1 else probs, "compact": args.compact,
            "generations_per_call": args.generations, "rounds": args.repeats, "by_unroll": by_unroll,
            "load_average": list(np.round(os.getloadavg(), 2))}


def measure_scaling(args) -> dict:
    """Dream throughput against width = pop · trials · n_τ: the population doubles from the smallest giving width
    ≥ 64 (at least 2 candidates) until memory, --max-width or --max-seconds stops it (wm_jax.bench.scaling).
    Each width's generation program is compiled ahead; where its buffers would not fit the device, the sweep
    stops before running it. Returns the points (steps/s, fraction of peak, memory) and the saturation width."""
    import jax

    from wm_jax.bench import scaling
    from wm_jax.models import controller as ctrl
    from wm_jax.sysinfo import peak_flops

    s = SIZES[args.env]
    z, hid, a = s["z"], args.hidden or s["hidden"], s["action"]
    _, dp, taus, probs = _world(args)
    per_candidate = args.trials * len(taus)
    pop0 = max(2, -(-64 // per_candidate))
    widths = scaling.widths_to_try(args.widths, args.max_width or scaling.default_max_width("dream"),
                                   start=pop0 * per_candidate)
    fps = flops_per_step(z, hid, a, args.mixtures, ctrl.feature_dim(s["inputs"], z, hid))
    peak = peak_flops()
    devices = jax.devices()[:1] if args.single_device else None

    def one(width: int) -> dict:
        if width % per_candidate:
            raise ValueError(f"--widths: {width} is not a multiple of trials x τ = {per_candidate}")
        pop = width // per_candidate
        point = _generation_point(args, pop, dp, len(taus), z, hid, devices)
        sps = point["slot_steps"] / point["seconds_per_call"]
        return {"population": pop, **point, "dream_steps_per_s": sps,
                "episode_steps_per_s": point["episode_steps"] / point["seconds_per_call"],
                "fraction_of_peak": sps * fps / peak}

    points, stopped = scaling.sweep(widths, one, args.max_seconds, "seconds_per_call")
    return {"stage": "dream_scaling", "model": "dream", "env": args.env, "z_dim": z, "lstm_hidden": hid,
            "mixtures": args.mixtures, "trials": args.trials, "taus": taus, "steps": args.steps,
            "end_prob": probs[0] if len(set(probs)) == 1 else probs, "compact": args.compact,
            "unroll": args.unroll, "generations_per_call": args.generations, "flops_per_step": fps,
            "peak_gflops": peak / 1e9, "unit": scaling.HEADLINE["dream"][1], "headline": "dream_steps_per_s",
            "points": points, "stopped_by": stopped, "saturation": scaling.saturation(points, "dream_steps_per_s")}


def _generation_point(args, pop: int, dp, n_tau: int, z: int, hid: int, devices) -> dict:
    """One width of the scaling sweep: compile `args.generations` generations of population `pop` ahead, check
    that the program's buffers fit the device, then time it (best of --repeats after a warm-up call)."""
    import jax

    from wm_jax.bench.scaling import DoesNotFit, memory
    from wm_jax.es import ESProgram
    from wm_jax.models import controller as ctrl

    cfg = _config(args, pop)
    template = ctrl.controller_from_config(jax.random.PRNGKey(0), cfg.controller, args.env, z, hid)
    prog = ESProgram(cfg, template, devices=devices)
    carry = jax.device_put(prog.init(jax.random.PRNGKey(0), n_tau), prog.replicated)
    t0 = time.perf_counter()
    compiled = prog.compile_run(carry, dp, args.generations)
    compile_s = time.perf_counter() - t0
    mem = compiled.memory_analysis()
    need = None if mem is None else int(mem.temp_size_in_bytes + mem.argument_size_in_bytes
                                        + mem.output_size_in_bytes)
    limit = memory().get("bytes_limit")
    if need is not None and limit and need > 0.95 * limit:
        raise DoesNotFit(f"its program needs {need / 2**30:.1f} GiB of {limit / 2**30:.1f} GiB")
    _, m = jax.block_until_ready(compiled(carry, dp))
    sec = _best(lambda: jax.block_until_ready(compiled(carry, dp)), args.repeats)
    return {"seconds_per_call": sec, "compile_seconds": compile_s, "program_bytes": need,
            "slot_steps": int(m["slot_steps"].sum()), "episode_steps": int(m["alive_steps"].sum()),
            "devices_used": prog.n_devices}


def figure(result: dict, path):
    """The --scaling curve (PNG beside the JSON); nothing for a single-width run."""
    from wm_jax.bench.scaling import figure as scaling_figure

    return scaling_figure(result, path) if result.get("points") else None


def _bank(z: int):
    import jax
    import jax.numpy as jnp

    return jax.random.normal(jax.random.PRNGKey(1), (1000, z)), jnp.full((1000, z), -3.0)


def _profile(prog, dp, carry, mdn, batch, args, z, hid, a, gen_fn) -> dict:
    import jax
    import jax.numpy as jnp

    from wm_jax.envs.dream_batch import tau_axes

    steps = args.steps * args.generations
    w_x, w_h, w_o = mdn["lstm"]["w_x"], mdn["lstm"]["w_h"], mdn["head"]["w"]

    @jax.jit
    def floor(x0, h0):
        def body(c, _):
            x, h = c
            g = x @ w_x + h @ w_h  # [B, 4H]
            h = jnp.tanh(g[:, :hid])
            out = h @ w_o
            return (out[:, :z + a], h), None

        return jax.lax.scan(body, (x0, h0), None, length=steps)[0]

    x0, h0 = jnp.zeros((batch, z + a)), jnp.zeros((batch, hid))

    pop = jax.vmap(lambda k: jax.tree.map(lambda t: 0.1 * jax.random.normal(k, t.shape), prog.template))(
        jax.random.split(jax.random.PRNGKey(2), args.pop))
    roll = jax.jit(jax.vmap(lambda p, par: prog.rollout(p, jax.random.PRNGKey(3), par, args.trials).slot_steps,
                            in_axes=(None, tau_axes(dp))))
    roll_steps = int(roll(pop, dp).sum()) * args.generations  # this population's episodes, not the generation's
    fns = {"gen": gen_fn, "floor": lambda: jax.block_until_ready(floor(x0, h0)),
           "roll": lambda: jax.block_until_ready(roll(pop, dp))}
    fns["floor"](), fns["roll"]()  # compile / warm up (the generation already ran)
    best = {k: float("inf") for k in fns}
    for _ in range(args.repeats):  # interleaved rounds: the three see the same machine load
        for k, f in fns.items():
            t0 = time.perf_counter()
            f()
            best[k] = min(best[k], time.perf_counter() - t0)
    gen_sec, floor_sec, roll_sec = best["gen"], best["floor"], best["roll"] * args.generations
    mm_flops = 2 * ((z + a) * 4 * hid + hid * 4 * hid + hid * mdn["head"]["w"].shape[1])
    return {
        "generation_seconds": gen_sec, "matmul_floor_seconds": floor_sec,
        "matmul_floor_steps_per_s": batch * steps / floor_sec,
        "matmul_floor_gflops": batch * steps * mm_flops / floor_sec / 1e9,
        "rollout_only_seconds": roll_sec, "rollout_only_steps_per_s": roll_steps / roll_sec,
        "share_matmuls": floor_sec / gen_sec, "share_other_step_ops": max(0.0, roll_sec - floor_sec) / gen_sec,
        "share_es_ask_tell": max(0.0, gen_sec - roll_sec) / gen_sec,
    }
