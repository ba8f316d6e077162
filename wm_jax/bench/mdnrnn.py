"""``wm-jax bench mdnrnn``: M's training-step throughput (timesteps/s) against the machine's matmul limit.

One timestep = one (sample, t) of a [batch, seq_len] window through the full training step (sampling z,
input projection, LSTM scan, MDN head, loss, backward, clipping, Adam). FLOPs are the matmul FLOPs
(``models.mdnrnn.flops_per_timestep``: forward + 2x backward), so ``fraction_of_peak`` compares with the
measured fp32 jitted-matmul rate of this machine (``sysinfo.peak_flops``).

Variants: ``custom`` (shipped: custom-VJP scan, weight gradients as one matmul after the scan),
``reference`` (same model, plain autodiff through lax.scan) and ``flax`` (flax ``nn.RNN(OptimizedLSTMCell)``
+ Dense head, the issue's baseline). ``--breakdown`` times the parts of the custom step separately.

The variants are timed in alternating blocks of >= ``--min-seconds``, ``--rounds`` times (``wm_jax.bench.compare``),
each keeping its best block. ``--compare-torch`` adds two blocks to every round: fp32 matmuls (the measured peak,
which ``fraction_of_peak`` then uses) and the same step in PyTorch (``benchmarks/torch_mdnrnn.py --serve``:
``nn.LSTM``, autograd, clipping, Adam), giving ``torch_timesteps_per_s``, ``ratio_vs_torch`` (best over best) and
``ratio_vs_torch_median`` (of the per-round ratios).
"""

from __future__ import annotations

import os
import time

import numpy as np


def add_arguments(parser) -> None:
    parser.add_argument("--batch", type=int, default=100, help="sequences per training step (paper: 100)")
    parser.add_argument("--seq-len", type=int, default=999, help="timesteps per sequence (paper: 999)")
    parser.add_argument("--z", type=int, default=32, help="latent size Z (32 CarRacing, 64 Doom)")
    parser.add_argument("--actions", type=int, default=3, help="action size A (3 CarRacing, 1 Doom)")
    parser.add_argument("--hidden", type=int, default=256, help="LSTM units (256 CarRacing, 512 Doom)")
    parser.add_argument("--mixtures", type=int, default=5, help="Gaussians per z dimension (paper: 5)")
    parser.add_argument("--restart-flag", action="store_true",
                        help="M reads an episode-start flag (mdnrnn.restart_flag)")
    parser.add_argument("--unroll", type=int, default=1, help="lax.scan unroll factor")
    parser.add_argument("--variant", default="custom", choices=("custom", "reference", "flax"),
                        help="LSTM implementation timed: custom VJP scan, its plain twin, or flax's cell")
    parser.add_argument("--compare", default="", help="comma list of other variants/unrolls to time too, "
                        "e.g. 'reference,flax,custom:2'")
    parser.add_argument("--breakdown", action="store_true", help="time the step's parts separately")
    parser.add_argument("--devices", type=int, default=1, help="data-parallel devices (default 1)")
    parser.add_argument("--min-seconds", type=float, default=3.0, help="timing window per repeat")
    parser.add_argument("--rounds", type=int, default=3, help="round-robin timing rounds over the variants")
    parser.add_argument("--compare-torch", action="store_true", help="also time the same step in PyTorch, and the "
                        "matmul peak, in the same rounds (needs the bench extra: torch)")


def _batch(args, key):
    import jax
    import jax.numpy as jnp

    b, t, z, a = args.batch, args.seq_len, args.z, args.actions
    ks = jax.random.split(key, 4)
    return {"mu": jax.random.normal(ks[0], (b, t + 1, z)), "logvar": jax.random.normal(ks[1], (b, t + 1, z)) - 2,
            "actions": jax.random.uniform(ks[2], (b, t, a), minval=-1, maxval=1),
            "rewards": jax.random.normal(ks[3], (b, t)), "dones": jnp.zeros((b, t)).at[:, -1].set(1.0),
            "mask": jnp.ones((b, t)), "restart": jnp.zeros((b, t)).at[:, 0].set(1.0)}


def _mdn_config(args):
    from wm_jax.config import MDNRNNConfig

    return MDNRNNConfig(hidden=args.hidden, mixtures=args.mixtures, seq_len=args.seq_len, batch_size=args.batch,
                        restart_flag=args.restart_flag, scan_unroll=args.unroll, done_pos_weight=1.0)


def _flax_step(args, m, optimizer):
    """The issue's baseline: flax nn.RNN(nn.OptimizedLSTMCell) + Dense head, same loss terms, autodiff."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import optax

    from wm_jax.models import mdnrnn as M

    class FlaxM(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = nn.RNN(nn.OptimizedLSTMCell(args.hidden))(x)
            return nn.Dense(M.head_dim(args.z, args.mixtures))(h)

    model = FlaxM()

    def loss_fn(p, batch, key):
        z = M.sample_latents(key, batch["mu"], batch["logvar"])
        out = model.apply(p, M.model_inputs(z, batch["actions"], batch["restart"], m.restart_flag))
        r = M.split_head(out, args.z)
        zk = lambda a: jnp.swapaxes(a, -1, -2)  # noqa: E731
        o = M.MDNOutput(jax.nn.log_softmax(zk(r.logits), -1), zk(r.mu), zk(r.log_sigma), r.reward, r.done_logit)
        mask = batch["mask"]
        n = mask.sum()
        nll = (M.mdn_nll(o, z[:, 1:]).mean(-1) * mask).sum() / n
        rm = (((o.reward - batch["rewards"]) ** 2) * mask).sum() / n
        bce = (M.bce_with_logits(o.done_logit, batch["dones"], m.done_pos_weight) * mask).sum() / n
        return nll + rm + bce

    def step(p, s, batch, key):
        loss, g = jax.value_and_grad(loss_fn)(p, batch, key)
        u, s = optimizer.update(g, s, p)
        return optax.apply_updates(p, u), s, {"loss": loss}

    x0 = jnp.zeros((args.batch, args.seq_len, M.input_dim(args.z, args.actions, m.restart_flag)))
    return jax.jit(step, donate_argnums=(0, 1)), model.init(jax.random.key(0), x0)


def _build_variant(args, variant: str, unroll: int, devices) -> dict:
    """Compile one variant's training step; returns {"call": blocking one-step closure, "compile_seconds"}."""
    import dataclasses

    import jax

    from wm_jax.models import mdnrnn as M
    from wm_jax.parallel import make_mesh, replicate, shard_batch
    from wm_jax.train.mdnrnn import make_optimizer, make_train_step

    m = dataclasses.replace(_mdn_config(args), scan_unroll=unroll)
    opt = make_optimizer(m)
    mesh = make_mesh(devices)
    if variant == "flax":
        step, params = _flax_step(args, m, opt)
    else:
        step = make_train_step(m, opt, mesh, custom_grad=(variant == "custom"))
        params = M.init_params(jax.random.key(0), args.z, args.actions, args.hidden, args.mixtures, m.restart_flag)
    params = replicate(params, mesh)
    state = {"p": params, "s": replicate(opt.init(params), mesh)}
    batch = shard_batch(_batch(args, jax.random.key(1)), mesh)
    key = jax.random.key(2)

    def call():
        state["p"], state["s"], met = step(state["p"], state["s"], batch, key)
        jax.block_until_ready(met["loss"])

    t0 = time.perf_counter()
    call()
    return {"variant": variant, "unroll": unroll, "call": call, "compile_seconds": time.perf_counter() - t0}


def _time_round_robin(built: list[dict], args, extra: dict) -> dict[str, list[tuple[float, float]]]:
    """Time the variants (and the `extra` blocks: peak, PyTorch) in alternating blocks of >= --min-seconds,
    --rounds times (load drifts hit all alike); each variant keeps its best block. Returns the blocks' rates."""
    from wm_jax.bench.compare import alternate, call_block

    ts = args.batch * args.seq_len
    blocks = {b["name"]: call_block(b["call"], ts, args.min_seconds) for b in built}
    rates = alternate({**blocks, **extra}, args.rounds)
    for b in built:
        r = [w for w, _ in rates[b["name"]]]
        b["rounds"] = [round(ts / x, 4) for x in r]  # seconds per step, block by block
        b["step_seconds"] = ts / max(r)
    return rates


def _torch_args(args) -> list:
    if args.restart_flag or args.devices != 1:
        raise ValueError("--compare-torch: the PyTorch step has no restart flag and runs on one device")
    return ["--batch", args.batch, "--seq-len", args.seq_len, "--z", args.z, "--actions", args.actions,
            "--hidden", args.hidden, "--mixtures", args.mixtures]


def _breakdown(args) -> dict:
    """Seconds and GFLOP/s of the custom step's parts, each jitted alone at the benchmark sizes."""
    import jax
    import jax.numpy as jnp

    from wm_jax.models import mdnrnn as M
    from wm_jax.sysinfo import time_call

    b, t, h, z = args.batch, args.seq_len, args.hidden, args.z
    p = M.init_params(jax.random.key(0), z, args.actions, h, args.mixtures, args.restart_flag)
    ks = jax.random.split(jax.random.key(3), 4)
    xp = jax.random.normal(ks[0], (t, b, 4 * h))
    keep, h0 = jnp.ones((t, b)), jnp.zeros((b, h))
    hs = jax.random.normal(ks[1], (t, b, h)) * 0.3
    target = jax.random.normal(ks[2], (t, b, z))
    x_raw = jax.random.normal(ks[3], (t, b, M.sizes(p)[1]))
    w_h = p["lstm"]["w_h"]
    rec = 2 * b * h * 4 * h * t  # one pass of h @ W_h over the window
    head = 2 * b * h * M.head_dim(z, args.mixtures) * t

    ones = jnp.ones((t, b))

    def head_loss(w, bias, hs_):  # the shipped chunked head + losses (wm_jax.models.mdn_loss)
        return sum(M.head_losses(w, bias, hs_, target, ones, ones, ones, z, 1.0))

    parts = {
        "recurrent_matmul_only_fwd": (lambda w, x: jax.lax.scan(lambda c, x_t: ((x_t + c @ w)[:, :h], None),
                                                                 h0, x, unroll=args.unroll)[0], (w_h, xp), rec),
        "lstm_scan_fwd": (lambda w, x: M.lstm_scan(w, x, keep, h0, h0, args.unroll)[0], (w_h, xp), rec),
        "lstm_scan_fwd_bwd": (jax.grad(lambda w, x: (M.lstm_scan(w, x, keep, h0, h0, args.unroll)[0] * hs).sum(),
                                       (0, 1)), (w_h, xp), 3 * rec),
        "lstm_inputs_fwd_bwd": (jax.grad(lambda w, x: (M.lstm_scan_inputs(w["w_x"], w["b"], w["w_h"], x, keep, h0, h0,
                                                                           args.unroll)[0] * hs).sum()),
                                (p["lstm"], x_raw), 3 * (rec + 2 * b * x_raw.shape[-1] * 4 * h * t)),
        "dW_h_matmul_after_scan": (M.matmul_flat_t, (hs, xp), rec),
        "head_and_losses_fwd_bwd": (jax.grad(head_loss, (0, 1, 2)), (p["head"]["w"], p["head"]["b"], hs), 3 * head),
    }
    out = {}
    for name, (fn, a, flops) in parts.items():
        f = jax.jit(fn)
        jax.block_until_ready(f(*a))
        sec = time_call(lambda f=f, a=a: jax.block_until_ready(f(*a)), repeats=2, min_seconds=args.min_seconds)
        out[name] = {"ms": round(sec * 1e3, 2), "gflops_per_s": round(flops / sec / 1e9, 2)}
        print(f"  {name:28s} {sec * 1e3:9.1f} ms  {flops / sec / 1e9:6.1f} GFLOP/s", flush=True)
    return out


def measure(args) -> dict:
    import jax

    from wm_jax.bench.compare import TorchWorker, matmul_block, summarise, torch_figures
    from wm_jax.models.mdnrnn import flops_per_timestep
    from wm_jax.sysinfo import peak_flops

    devices = jax.devices()[: args.devices]
    if len(devices) < args.devices:
        raise ValueError(f"--devices {args.devices}: only {len(jax.devices())} available")
    fl = flops_per_timestep(args.z, args.actions, args.hidden, args.mixtures, args.restart_flag)
    specs = [(args.variant, args.unroll)] + [(n, int(u or 1)) for n, _, u in
                                             (c.partition(":") for c in filter(None, args.compare.split(",")))]
    if len(set(specs)) < len(specs):
        raise ValueError(f"--variant/--compare: a variant:unroll is listed twice in {specs}")
    torch_args = _torch_args(args) if args.compare_torch else None
    built = [{**_build_variant(args, v, u, devices), "name": f"{v}:{u}"} for v, u in specs]
    extra, worker = {}, None
    try:
        if torch_args is not None:
            extra["peak"] = matmul_block(args.min_seconds)
            worker = TorchWorker("torch_mdnrnn.py", torch_args, args.min_seconds)
            extra["torch"] = worker.block
        rates = _time_round_robin(built, args, extra)
    finally:
        if worker is not None:
            worker.close()
    cores = os.cpu_count() or 1
    s = summarise(rates, cores)
    peak = s["peak"]["best"] if worker is not None else peak_flops()
    runs = []
    for b in built:
        b.pop("call")
        b["timesteps_per_s"] = args.batch * args.seq_len / b["step_seconds"]
        b["fraction_of_peak"] = b["timesteps_per_s"] * fl["train"] / peak
        print(f"{b['variant']} unroll {b['unroll']}: {b['timesteps_per_s']:,.0f} timesteps/s "
              f"({b['fraction_of_peak']:.1%} of {peak / 1e9:.0f} GFLOP/s); rounds {b['rounds']} s", flush=True)
        runs.append(b)
    main = runs[0]
    res = {
        "sizes": {"batch": args.batch, "seq_len": args.seq_len, "z": args.z, "actions": args.actions,
                  "hidden": args.hidden, "mixtures": args.mixtures, "restart_flag": args.restart_flag},
        **main,
        "flops_per_timestep": fl["train"], "flops_breakdown_forward": fl,
        "achieved_gflops_per_s": main["timesteps_per_s"] * fl["train"] / 1e9,
        "peak_gflops_per_s": peak / 1e9, "limit_timesteps_per_s": peak / fl["train"], "devices_used": len(devices),
    }
    if len(runs) > 1:
        res["compare"] = runs[1:]
    if worker is not None:
        res.update(torch_figures(rates, s, worker.info, "timesteps", cores, jax=built[0]["name"]))
        res.update({"timesteps_per_s_median": s[built[0]["name"]]["median"], "blocks": s,
                    "method": "alternating blocks in one run; rates = best block (wm_jax.bench.compare)"})
    if args.breakdown:
        res["breakdown"] = _breakdown(args)
    res["load_average"] = list(np.round(os.getloadavg(), 2))
    return res
