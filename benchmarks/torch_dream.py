"""OPTIONAL comparison, not part of wm-jax: ES generations in M's dream, batched, in PyTorch on the same CPU.

torch is only in the ``bench`` extra (``pip install -e .[bench]``; pinned torch==2.13.0); wm-jax never imports it.

    python benchmarks/torch_dream.py [--env carracing|takecover] [--generations 1]
        prints candidate-steps/s (wall) and per CPU-second x threads.
    python benchmarks/torch_dream.py --serve [--env ...] [sizes]
        what ``wm-jax bench dream --compare-torch`` runs beside JAX (protocol: wm_jax/bench/compare.py): one JSON
        line (versions, threads, parameters, items_per_step = pop x trials x steps), then for each "<n>" line n
        generations, answered with {"steps", "items" (candidate-steps computed), "wall_s", "cpu_s"}.

What ``wm-jax bench dream`` times (wm_jax/bench/dream.py, wm_jax/es.py, wm_jax/envs/dream*.py), at its sizes
(CarRacing z 32, LSTM 256, C on [z, h] with bias: 867 parameters; TakeCover z 64, LSTM 512, C on [z, c, h] without
bias: 1,088), written the way one would in PyTorch: the whole population x trials batch as one tensor, eager,
under ``torch.inference_mode()`` (no autograd bookkeeping), fp32. One generation = CMA-ES ask (eigh of C, as
evosax's CMA_ES: same weights, learning rates, negative weights) -> pop x trials dream episodes -> tell with
fitness = -mean return. Each dream step, for every candidate x trial: C's action (batched per-candidate weights,
``bmm``; CarRacing tanh / (tanh+1)/2 / clip(tanh, 0, 1), TakeCover tanh in thirds), an ``nn.LSTMCell`` step on
[z, a] (b_hh a frozen zero: M's one bias), the head [H -> 3·K·Z + 2], z' ~ the τ-scaled mixture (component by
inverse CDF of softmax(logits / τ) with one uniform per trial and z dimension, z' = μ + σ·√τ·ε: common random
numbers, the noise drawn per trial and shared by the population), the reward (M's head for CarRacing, 1 for
TakeCover), the end (done logit > 0, or the step cap) and the running returns. M has random weights with the
done head forced off (bias -1e4), as the JAX bench, so every episode runs all ``--steps``; the loop checks every
``--chunk`` steps whether any episode lives (the JAX loop's exit test). Candidate-steps = pop x trials x steps
run, as ``dream_steps_per_s`` counts them.
"""

import argparse
import json
import math
import time

import torch
from torch import nn
from torch_serve import serve  # benchmarks/torch_serve.py (this script's folder)

SIZES = {"carracing": {"z": 32, "hidden": 256, "action": 3, "inputs": "zh", "bias": True, "reward": "model"},
         "takecover": {"z": 64, "hidden": 512, "action": 1, "inputs": "zch", "bias": False, "reward": "alive"}}


class M(nn.Module):
    """M for the dream: one LSTM cell and the head (wm_jax.models.mdnrnn's sizes and column layout)."""

    def __init__(self, z: int, action: int, hidden: int, mixtures: int = 5):
        super().__init__()
        self.z, self.k = z, mixtures
        self.cell = nn.LSTMCell(z + action, hidden)
        with torch.no_grad():
            self.cell.bias_hh.zero_()
        self.cell.bias_hh.requires_grad_(False)  # one bias, as M's (b_ih + 0)
        self.head = nn.Linear(hidden, 3 * mixtures * z + 2)
        with torch.no_grad():  # the done head forced off: every episode runs all steps (as the JAX bench)
            self.head.weight[-1].zero_()
            self.head.bias[-1] = -1e4


def model_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


class CMAES:
    """evosax's CMA_ES (default params, elite ratio 1/2, negative weights) on a flat [D] search space, in torch."""

    def __init__(self, dim: int, pop: int, sigma: float = 0.1):
        n, mu = dim, pop // 2
        wp = math.log((pop + 1) / 2) - torch.log(torch.arange(1, pop + 1, dtype=torch.float64))
        mu_eff = wp[:mu].sum() ** 2 / (wp[:mu] ** 2).sum()
        mu_eff_minus = wp[mu:].sum() ** 2 / (wp[mu:] ** 2).sum()
        self.c_c = (4 + mu_eff / n) / (n + 4 + 2 * mu_eff / n)
        self.c_1 = 2 / ((n + 1.3) ** 2 + mu_eff)
        self.c_mu = torch.minimum(1 - self.c_1 - 1e-8, 2 * (mu_eff + 1 / mu_eff - 2) / ((n + 2) ** 2 + mu_eff))
        min_alpha = min(1 + self.c_1 / self.c_mu, 1 + 2 * mu_eff_minus / (mu_eff + 2),
                        (1 - self.c_1 - self.c_mu) / (n * self.c_mu))
        pos, neg = wp[wp > 0].sum(), wp[wp < 0].abs().sum()
        self.weights = torch.where(wp >= 0, wp / pos, min_alpha * wp / neg).float()
        self.c_std = (mu_eff + 2) / (n + mu_eff + 5)
        self.d_std = 1 + 2 * max(0.0, math.sqrt((mu_eff - 1) / (n + 1)) - 1) + self.c_std
        self.chi_n = math.sqrt(n) * (1 - 1 / (4 * n) + 1 / (21 * n**2))
        self.mu_eff, self.n, self.pop = float(mu_eff), n, pop
        self.c_c, self.c_1, self.c_mu, self.c_std = (float(x) for x in (self.c_c, self.c_1, self.c_mu, self.c_std))
        self.mean, self.std = torch.zeros(n), sigma
        self.p_std, self.p_c, self.C = torch.zeros(n), torch.zeros(n), torch.eye(n)
        self.B, self.D, self.gen = torch.eye(n), torch.ones(n), 0

    def ask(self) -> torch.Tensor:
        """[pop, D] candidates (eigendecomposition of C every generation, as evosax)."""
        C = (self.C + self.C.T) / 2
        C.diagonal().clamp_(min=0.0)
        C = C.clamp(max=1e8) + 1e-8 * torch.eye(self.n)
        d2, self.B = torch.linalg.eigh(C)
        self.C, self.D = C, d2.clamp(min=1e-8).sqrt()
        return self.mean + self.std * (torch.randn(self.pop, self.n) * self.D) @ self.B.T

    def tell(self, pop: torch.Tensor, fitness: torch.Tensor) -> None:
        """Update from fitness [pop] (lower is better)."""
        w = self.weights[torch.argsort(torch.argsort(fitness))]
        y_k = (pop - self.mean) / self.std
        y_w = w.clamp(min=0.0) @ y_k
        self.mean = self.mean + self.std * y_w
        self.p_std = (1 - self.c_std) * self.p_std + math.sqrt(self.c_std * (2 - self.c_std) * self.mu_eff) * (
            self.B @ ((self.B.T @ y_w) / self.D))
        norm = float(self.p_std.norm())
        self.std = self.std * math.exp(self.c_std / self.d_std * (norm / self.chi_n - 1))
        h_std = norm / math.sqrt(1 - (1 - self.c_std) ** (2 * (self.gen + 2))) < (1.4 + 2 / (self.n + 1)) * self.chi_n
        self.p_c = (1 - self.c_c) * self.p_c + h_std * math.sqrt(self.c_c * (2 - self.c_c) * self.mu_eff) * y_w
        delta = (1 - h_std) * self.c_c * (2 - self.c_c)
        c_inv_sqrt_y = ((y_k @ self.B) / self.D) @ self.B.T
        w_o = w * torch.where(w >= 0, 1.0, self.n / (c_inv_sqrt_y**2).sum(-1).clamp(min=1e-8))
        rank_mu = (y_k * w_o[:, None]).T @ y_k
        self.C = ((1 + self.c_1 * delta - self.c_1 - self.c_mu * float(self.weights.sum())) * self.C
                  + self.c_1 * torch.outer(self.p_c, self.p_c) + self.c_mu * rank_mu)
        self.gen += 1


def feature_dim(s: dict) -> int:
    return s["z"] + {"zh": 1, "zch": 2}[s["inputs"]] * s["hidden"]


def controller_dim(s: dict) -> int:
    return (feature_dim(s) + int(s["bias"])) * s["action"]


def squash(raw: torch.Tensor, env: str) -> torch.Tensor:
    """C's raw outputs [..., A] -> the env action (wm_jax.envs.spec.squash_action)."""
    a = torch.tanh(raw)
    if env == "carracing":
        return torch.stack([a[..., 0], (a[..., 1] + 1) / 2, a[..., 2].clamp(0.0, 1.0)], -1)
    return torch.where(a < -1 / 3, -1.0, torch.where(a > 1 / 3, 1.0, 0.0))


class Dream:
    """pop x trials dream episodes of CMA-ES candidates, one generation per ``generation()``."""

    def __init__(self, env: str, pop: int, trials: int, steps: int, tau: float = 1.15, mixtures: int = 5,
                 hidden: int = 0, chunk: int = 50, seed: int = 0):
        torch.manual_seed(seed)
        self.s = {**SIZES[env], "hidden": hidden or SIZES[env]["hidden"]}
        self.env, self.pop, self.trials, self.steps, self.tau, self.chunk = env, pop, trials, steps, tau, chunk
        s = self.s
        self.m = M(s["z"], s["action"], s["hidden"], mixtures).eval()
        self.bank_mu, self.bank_logvar = torch.randn(1000, s["z"]), torch.full((1000, s["z"]), -3.0)
        self.es = CMAES(controller_dim(s), pop)

    def controllers(self, flat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """[P, D] -> W [P, F, A], b [P, 1, A] (or None without bias)."""
        f, a = feature_dim(self.s), self.s["action"]
        w = flat[:, :f * a].reshape(-1, f, a)
        return w, (flat[:, f * a:].reshape(-1, 1, a) if self.s["bias"] else None)

    def step(self, z, h, c, w, b, u, eps):
        """One dream step of the whole batch. z [B, Z], h, c [B, H] (B = P·T, candidate-major), C's weights
        w [P, F, A], b [P, 1, A] or None, the trials' noise u, eps [T, Z] -> z', h', c', reward, done logit [P, T]."""
        P, T, Z, K = self.pop, self.trials, self.s["z"], self.m.k
        B, kz = P * T, K * Z
        feats = torch.cat([z, h] if self.s["inputs"] == "zh" else [z, c, h], -1).view(P, T, -1)
        raw = torch.bmm(feats, w) if b is None else torch.baddbmm(b, feats, w)
        h, c = self.m.cell(torch.cat([z, squash(raw, self.env).view(B, -1)], -1), (h, c))
        out = self.m.head(h)  # [B, 3KZ + 2]
        logits, mu, log_sigma = out[:, :3 * kz].view(P, T, 3, K, Z).unbind(2)
        e = torch.exp((logits - logits.amax(2, keepdim=True)) / self.tau)
        cdf = e.cumsum(2)
        idx = (cdf < u[:, None] * cdf[:, :, -1:]).sum(2, keepdim=True).clamp_(max=K - 1)  # [P, T, 1, Z]
        z = (mu.gather(2, idx) + torch.exp(log_sigma.gather(2, idx)) * math.sqrt(self.tau) * eps[:, None]).view(B, Z)
        reward = out[:, -2].view(P, T) if self.s["reward"] == "model" else torch.ones(P, T)
        return z, h, c, reward, out[:, -1].view(P, T)

    def rollout(self, w, b, steps: int) -> tuple[torch.Tensor, int]:
        """Returns [P, T] and candidate-steps computed."""
        P, T, Z, H = self.pop, self.trials, self.s["z"], self.s["hidden"]
        B = P * T
        i = torch.randint(0, self.bank_mu.shape[0], (T,))
        z0 = self.bank_mu[i] + torch.exp(0.5 * self.bank_logvar[i]) * torch.randn(T, Z)
        z = z0.expand(P, T, Z).reshape(B, Z)
        h, c = torch.zeros(B, H), torch.zeros(B, H)
        ret, alive = torch.zeros(P, T), torch.ones(P, T, dtype=torch.bool)
        length = torch.zeros(P, T, dtype=torch.int32)
        t = 0
        while t < steps:
            if t % self.chunk == 0 and not bool(alive.any()):
                break
            u, eps = torch.rand(T, Z), torch.randn(T, Z)  # per trial, shared by the population
            z, h, c, reward, done_logit = self.step(z, h, c, w, b, u, eps)
            t += 1
            done = (done_logit > 0) | (t >= self.steps)
            ret += torch.where(alive, reward, 0.0)
            length += alive
            alive &= ~done
        return ret, P * T * t

    def generation(self, steps: int | None = None) -> int:
        """ask -> rollouts -> tell; returns candidate-steps computed."""
        with torch.inference_mode():
            flat = self.es.ask()
            returns, n = self.rollout(*self.controllers(flat), steps or self.steps)
            self.es.tell(flat, -returns.mean(1))
        return n


def info(d: Dream) -> dict:
    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "env": d.env,
            "params": model_params(d.m), "controller_params": controller_dim(d.s),
            "items_per_step": d.pop * d.trials * d.steps, "unit": "candidate-steps per generation",
            "sizes": {"z": d.s["z"], "hidden": d.s["hidden"], "pop": d.pop, "trials": d.trials, "steps": d.steps,
                      "tau": d.tau, "chunk": d.chunk}}




def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--env", choices=sorted(SIZES), default="carracing", help="the paper's sizes of which env")
    ap.add_argument("--pop", type=int, default=64, help="population (wm-jax bench dream: 64)")
    ap.add_argument("--trials", type=int, default=16, help="trials per candidate (16)")
    ap.add_argument("--steps", type=int, default=1000, help="dream steps per episode (1000)")
    ap.add_argument("--mixtures", type=int, default=5, help="Gaussians per z dimension K")
    ap.add_argument("--hidden", type=int, default=0, help="LSTM units (0: the env's paper size)")
    ap.add_argument("--tau", type=float, default=1.15, help="sampling temperature τ")
    ap.add_argument("--chunk", type=int, default=50, help="steps per any-episode-alive check")
    ap.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default, one per core)")
    ap.add_argument("--generations", type=int, default=1, help="timed generations (standalone)")
    ap.add_argument("--serve", action="store_true", help="time generations on request (see module doc)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    d = Dream(a.env, a.pop, a.trials, a.steps, a.tau, a.mixtures, a.hidden, a.chunk)
    d.generation(steps=min(a.steps, 5))  # warm-up: allocator, eigh, oneDNN primitives
    if a.serve:
        serve(info(d), lambda n: sum(d.generation() for _ in range(n)))
        return
    t0, c0 = time.perf_counter(), time.process_time()
    n = sum(d.generation() for _ in range(a.generations))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(json.dumps({**info(d), "dream_steps_per_s": n / wall,
                      "dream_steps_per_cpu_s_x_threads": n / (cpu / torch.get_num_threads())}))


if __name__ == "__main__":
    main()
