"""OPTIONAL comparison, not part of wm-jax: the same VAE training step in PyTorch on the same CPU.

torch is only in the ``bench`` extra (``pip install -e .[bench]``; pinned torch==2.13.0); wm-jax never imports it.

    python benchmarks/torch_vae.py [--batch 100] [--steps 10] [--contiguous]
        prints images/s (wall) and images/s normalised by process CPU time.
    python benchmarks/torch_vae.py --serve [--batch 100]
        what ``wm-jax bench vae --compare-torch`` runs beside JAX: after the warm-up prints one JSON line
        (versions, threads, parameters, items_per_step = batch), then for each line "<steps>" read from stdin runs that many steps and
        prints {"steps", "wall_s", "cpu_s"}; "quit" or end of input ends it. A separate process, so that neither
        framework's idle worker threads spin on the cores while the other one is timed.

Same model as wm_jax.models.vae (4,348,547 parameters at Z = 32), same loss (sum-squared error + KL floored at
kl_tolerance * Z = 16), Adam lr 1e-4, fp32, channels-last by default (the faster layout for torch here).
"""

import argparse
import json
import time

import torch
from torch import nn
from torch_serve import repeat, serve as serve_blocks  # benchmarks/torch_serve.py (this script's folder)


class VAE(nn.Module):
    def __init__(self, z: int = 32):
        super().__init__()
        self.enc = nn.Sequential(nn.Conv2d(3, 32, 4, 2), nn.ReLU(), nn.Conv2d(32, 64, 4, 2), nn.ReLU(),
                                 nn.Conv2d(64, 128, 4, 2), nn.ReLU(), nn.Conv2d(128, 256, 4, 2), nn.ReLU())
        self.mu, self.logvar, self.dec_in = nn.Linear(1024, z), nn.Linear(1024, z), nn.Linear(z, 1024)
        self.dec = nn.Sequential(nn.ConvTranspose2d(1024, 128, 5, 2), nn.ReLU(), nn.ConvTranspose2d(128, 64, 5, 2),
                                 nn.ReLU(), nn.ConvTranspose2d(64, 32, 6, 2), nn.ReLU(),
                                 nn.ConvTranspose2d(32, 3, 6, 2), nn.Sigmoid())

    def forward(self, x):
        h = self.enc(x).flatten(1)
        mu, logvar = self.mu(h), self.logvar(h)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
        return self.dec(self.dec_in(z).view(-1, 1024, 1, 1)), mu, logvar


def make_step(batch: int, channels_last: bool = True):
    """(step() -> None, model): one Adam step on a fixed uint8 batch [batch,3,64,64] (converted inside)."""
    torch.manual_seed(0)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = VAE().to(memory_format=fmt)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x8 = torch.randint(0, 256, (batch, 3, 64, 64), dtype=torch.uint8)

    def step() -> None:
        x = (x8.float() / 255.0).contiguous(memory_format=fmt)
        recon, mu, logvar = model(x)
        sse = ((recon - x) ** 2).sum((1, 2, 3))
        kl = -0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(1)
        loss = (sse + torch.clamp(kl, min=0.5 * 32)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step, model


def info(model: nn.Module, batch: int, channels_last: bool) -> dict:
    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "batch": batch, "items_per_step": batch,
            "params": sum(p.numel() for p in model.parameters()), "channels_last": channels_last}


def serve(batch: int, channels_last: bool) -> None:
    step, model = make_step(batch, channels_last)
    for _ in range(2):
        step()
    serve_blocks(info(model, batch, channels_last), repeat(step))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--contiguous", action="store_true", help="NCHW-contiguous tensors instead of channels-last")
    ap.add_argument("--serve", action="store_true", help="time blocks of steps on request (see module doc)")
    a = ap.parse_args()
    if a.serve:
        serve(a.batch, not a.contiguous)
        return
    step, model = make_step(a.batch, not a.contiguous)
    for _ in range(2):
        step()
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(a.steps):
        step()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    n = a.batch * a.steps
    print(json.dumps({**info(model, a.batch, not a.contiguous), "images_per_s": n / wall,
                      "images_per_cpu_s_x_cores": n / (cpu / torch.get_num_threads())}))


if __name__ == "__main__":
    main()
