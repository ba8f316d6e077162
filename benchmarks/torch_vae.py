"""OPTIONAL comparison, not part of wm-jax: the same VAE training step in PyTorch on the same CPU.

Run in a throwaway venv (the project never depends on torch):
    python3 -m venv /tmp/torchvenv && /tmp/torchvenv/bin/pip install torch==2.13.0
    /tmp/torchvenv/bin/python benchmarks/torch_vae.py [--batch 100] [--steps 10]
Prints images/s (wall) and images/s normalised by process CPU time (for a machine shared with other jobs).
"""

import argparse
import json
import time

import torch
from torch import nn


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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--channels-last", action="store_true")
    a = ap.parse_args()
    torch.manual_seed(0)
    model = VAE()
    fmt = torch.channels_last if a.channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    x8 = torch.randint(0, 256, (a.batch, 3, 64, 64), dtype=torch.uint8)

    def step():
        x = (x8.float() / 255.0).contiguous(memory_format=fmt)
        recon, mu, logvar = model(x)
        sse = ((recon - x) ** 2).sum((1, 2, 3))
        kl = -0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(1)
        loss = (sse + torch.clamp(kl, min=0.5 * 32)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(a.steps):
        step()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    n = a.batch * a.steps
    print(json.dumps({"torch": torch.__version__, "threads": torch.get_num_threads(), "batch": a.batch,
                      "params": sum(p.numel() for p in model.parameters()), "images_per_s": n / wall,
                      "images_per_cpu_s_x_cores": n / (cpu / torch.get_num_threads()),
                      "channels_last": a.channels_last}))


if __name__ == "__main__":
    main()
