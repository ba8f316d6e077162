"""OPTIONAL comparison, not part of wm-jax: M's training step (LSTM + MDN head) in PyTorch on the same CPU.

torch is only in the ``bench`` extra (``pip install -e .[bench]``; pinned torch==2.13.0); wm-jax never imports it.

    python benchmarks/torch_mdnrnn.py [--batch 100] [--seq-len 999] [--steps 3]
        prints timesteps/s (wall) and timesteps/s normalised by process CPU time.
    python benchmarks/torch_mdnrnn.py --serve [sizes]
        what ``wm-jax bench mdnrnn --compare-torch`` runs beside JAX (protocol: wm_jax/bench/compare.py): one JSON
        line (versions, threads, parameters, items_per_step = batch x seq_len), then one timing line per "<steps>".

The same step as ``wm_jax.train.mdnrnn.make_train_step`` at ``wm-jax bench mdnrnn``'s sizes: z = μ + σ·ε from V's
posterior, x_t = [z_t, a_t], a one-layer LSTM (``nn.LSTM``: PyTorch's fused CPU kernel, the fast baseline; gate
order i, f, g, o as M's) from a zero state, a linear head [H -> 3·K·Z + 2] read as component-major mixture logits,
μ, log σ ([K, Z] blocks), reward and done logit; loss = mixture NLL of z_{t+1} (mean over Z) + reward MSE + done
BCE (positives × done_pos_weight = 1, as the JAX bench), masked means; global-norm clipping at 1, Adam lr 1e-3,
fp32. ``nn.LSTM`` holds two bias vectors (b_ih + b_hh) where M holds one: b_hh stays a frozen zero, so the trained
parameters are M's, 422,882 at Z 32, A 3, H 256, K 5. The JAX bench's windows start episodes at t = 0 only (a
reset of the zero state: nothing), so the LSTM runs without resets.
"""

import argparse
import json
import math
import time

import torch
from torch import nn
from torch.nn import functional as F
from torch_serve import repeat, serve  # benchmarks/torch_serve.py (this script's folder)

LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


class MDNRNN(nn.Module):
    def __init__(self, z: int = 32, actions: int = 3, hidden: int = 256, mixtures: int = 5):
        super().__init__()
        self.z, self.k = z, mixtures
        self.lstm = nn.LSTM(z + actions, hidden)  # time-major [T, B, I]
        with torch.no_grad():
            self.lstm.bias_hh_l0.zero_()
        self.lstm.bias_hh_l0.requires_grad_(False)  # one bias, as M's (b_ih + 0)
        self.head = nn.Linear(hidden, 3 * mixtures * z + 2)

    def forward(self, x):
        """x [T, B, I] -> (logits, mu, log_sigma [T, B, K, Z], reward, done_logit [T, B])."""
        h, _ = self.lstm(x)
        out = self.head(h)
        kz = self.k * self.z
        mix = out[..., :3 * kz].unflatten(-1, (3, self.k, self.z))
        return mix[..., 0, :, :], mix[..., 1, :, :], mix[..., 2, :, :], out[..., 3 * kz], out[..., 3 * kz + 1]


def trained_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def make_batch(batch: int, seq_len: int, z: int, actions: int) -> dict:
    """The JAX bench's synthetic window (wm_jax.bench.mdnrnn._batch), time-major: [T(+1), B, ...]."""
    g = torch.Generator().manual_seed(1)
    dones = torch.zeros(seq_len, batch)
    dones[-1] = 1.0
    return {"mu": torch.randn(seq_len + 1, batch, z, generator=g),
            "logvar": torch.randn(seq_len + 1, batch, z, generator=g) - 2,
            "actions": torch.rand(seq_len, batch, actions, generator=g) * 2 - 1,
            "rewards": torch.randn(seq_len, batch, generator=g), "dones": dones, "mask": torch.ones(seq_len, batch)}


def sequence_loss(model: MDNRNN, data: dict, zs, done_pos_weight: float = 1.0):
    """M's loss (wm_jax.models.mdnrnn.sequence_loss) on a window with latents zs [T+1, B, Z] already drawn."""
    logits, mu, log_sigma, reward, done_logit = model(torch.cat([zs[:-1], data["actions"]], -1))
    u = (zs[1:, :, None, :] - mu) * torch.exp(-log_sigma)  # [T, B, K, Z]
    joint = torch.log_softmax(logits, -2) - 0.5 * u * u - log_sigma
    nll_tbz = LOG_SQRT_2PI - torch.logsumexp(joint, -2)  # [T, B, Z]
    mask = data["mask"]
    n = mask.sum().clamp(min=1.0)
    nll = (nll_tbz.mean(-1) * mask).sum() / n
    r_mse = (((reward - data["rewards"]) ** 2) * mask).sum() / n
    d_bce = (F.binary_cross_entropy_with_logits(done_logit, data["dones"], reduction="none",
                                                pos_weight=torch.tensor(done_pos_weight)) * mask).sum() / n
    return nll + r_mse + d_bce


def make_step(batch: int, seq_len: int, z: int, actions: int, hidden: int, mixtures: int):
    """(step() -> loss, model): one clipped Adam step on a fixed window, z drawn afresh every step."""
    torch.manual_seed(0)
    model = MDNRNN(z, actions, hidden, mixtures)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=1e-3)
    data = make_batch(batch, seq_len, z, actions)

    def step():
        zs = data["mu"] + torch.exp(0.5 * data["logvar"]) * torch.randn_like(data["mu"])  # [T+1, B, Z]
        loss = sequence_loss(model, data, zs)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        return loss.detach()

    return step, model


def info(model: nn.Module, a) -> dict:
    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "params": trained_params(model),
            "items_per_step": a.batch * a.seq_len, "unit": "timesteps",
            "sizes": {"batch": a.batch, "seq_len": a.seq_len, "z": a.z, "actions": a.actions, "hidden": a.hidden,
                      "mixtures": a.mixtures}, "lstm": "torch.nn.LSTM (fused CPU kernel)"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=100, help="sequences per step (wm-jax bench mdnrnn: 100)")
    ap.add_argument("--seq-len", type=int, default=999, help="timesteps per sequence (999)")
    ap.add_argument("--z", type=int, default=32, help="latent size Z")
    ap.add_argument("--actions", type=int, default=3, help="action size A")
    ap.add_argument("--hidden", type=int, default=256, help="LSTM units H")
    ap.add_argument("--mixtures", type=int, default=5, help="Gaussians per z dimension K")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default, one per core)")
    ap.add_argument("--steps", type=int, default=3, help="timed steps (standalone)")
    ap.add_argument("--serve", action="store_true", help="time blocks of steps on request (see module doc)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    step, model = make_step(a.batch, a.seq_len, a.z, a.actions, a.hidden, a.mixtures)
    for _ in range(2):  # warm-up: allocator, oneDNN primitives
        step()
    if a.serve:
        serve(info(model, a), repeat(step))
        return
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(a.steps):
        loss = step()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    n = a.batch * a.seq_len * a.steps
    print(json.dumps({**info(model, a), "timesteps_per_s": n / wall, "loss": float(loss),
                      "timesteps_per_cpu_s_x_threads": n / (cpu / torch.get_num_threads())}))


if __name__ == "__main__":
    main()
