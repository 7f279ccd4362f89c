"""The paper's training step, re-implemented from its description, as a speed baseline.

Liu et al. (ICLR 2025) train a GPT-2-style backbone with a BaseConv mixer on the
primitives (MULTIPLY: 40 tokens x 20 dims, batch 1024, width 64, 2 layers, MLP x4, ReLU,
Adam with eps 1e-16, float32). This module rebuilds the *structure* of one of their
training steps so its cost can be timed next to ours on the same machine
(bench/benchmarks/test_bench_training.py::test_speed_vs_paper). It is written from scratch for
timing only; nothing else in the suite uses it. `ours_at_paper_config` is the run config of our
step at the same config, the one both timings (the benchmark and bench.experiments.gpu_check) compare with.

Model (per their description):
    x = read_in(u) + pos_emb[:L]                      nn.Linear(20, 64), nn.Embedding(L, 64)
    per block (2):
        h = LayerNorm(x)
        c = conv(in_proj(h)) + in_proj(h)             conv: nn.Conv1d(64, 64, kernel_size=L,
                                                      groups=64, padding=L-1), output cut to L
        y = out_proj(c * projection(h))               three nn.Linear(64, 64)
        x = x + (w0 * y + w1 * h)                     learnable branch weights, init (1, 0)
        x = x + mlp(LayerNorm(x))                     Linear(64, 256) -> ReLU -> Linear(256, 64)
    y = read_out(LayerNorm(x))                        nn.Linear(64, 10)

Step (per their training loop): draw a Gaussian batch and its MULTIPLY targets; zero
grads; forward; MSE loss plus the L1 penalty term (weight 0 in this recipe, but its
graph is built every step); backward; clip the grad norm at 100; compute the grad norm
parameter by parameter (one host sync per tensor) and skip the step if it is above 1e3
or NaN; Adam step; compute the grad norm again the same way.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

# Our BaseConv at the paper's primitive config: 2 layers, width 64, MLP x4 with ReLU, the conv
# bias and the learnable branch mix their block has; Adam with eps 1e-16, LR 1e-3.
PAPER_BASECONV_PARAMS = {"width": 64, "depth": 2, "activation": "relu", "mlp_factor": 4, "conv_bias": True,
                         "branch_mix": True}


def ours_at_paper_config(batch_size: int, device: str, conv_backend: str = "auto", **fields):
    """The RunConfig of our MULTIPLY step at the paper's config (fields: further RunConfig fields)."""
    from bench.harness.config import make_run_config

    fields.setdefault("steps", 10**9)
    fields.setdefault("eval_size", batch_size)
    return make_run_config(task={"name": "multiply"},
                           model={"name": "baseconv", "params": {**PAPER_BASECONV_PARAMS, "conv_backend": conv_backend}},
                           optimizer={"name": "adam", "lr": 1e-3, "eps": 1e-16}, batch_size=batch_size, device=device,
                           **fields)


class ShortConv(nn.Module):
    """Depthwise causal conv via nn.Conv1d with a kernel as long as the sequence."""

    def __init__(self, width: int, seq_len: int):
        super().__init__()
        self.conv = nn.Conv1d(width, width, kernel_size=seq_len, groups=width, padding=seq_len - 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, L, D)
        L = x.shape[1]
        return self.conv(x.transpose(1, 2))[..., :L].transpose(1, 2) + x


class PaperBaseConv(nn.Module):
    def __init__(self, width: int, seq_len: int):
        super().__init__()
        self.in_proj = nn.Linear(width, width)
        self.projection = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)
        self.conv = ShortConv(width, seq_len)
        self.branch = nn.Parameter(torch.tensor([1.0, 0.0]))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        y = self.out_proj(self.conv(self.in_proj(h)) * self.projection(h))
        return self.branch[0] * y + self.branch[1] * h


class PaperBlock(nn.Module):
    def __init__(self, width: int, seq_len: int, mlp_factor: int):
        super().__init__()
        self.ln_1 = nn.LayerNorm(width)
        self.mixer = PaperBaseConv(width, seq_len)
        self.ln_2 = nn.LayerNorm(width)
        self.fc = nn.Linear(width, mlp_factor * width)
        self.proj = nn.Linear(mlp_factor * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.mixer(self.ln_1(x))
        return x + self.proj(F.relu(self.fc(self.ln_2(x))))


class PaperModel(nn.Module):
    def __init__(self, d_in: int = 20, d_out: int = 10, seq_len: int = 40, width: int = 64, depth: int = 2,
                 mlp_factor: int = 4):
        super().__init__()
        self.read_in = nn.Linear(d_in, width)
        self.pos_emb = nn.Embedding(seq_len, width)
        self.blocks = nn.ModuleList([PaperBlock(width, seq_len, mlp_factor) for _ in range(depth)])
        self.ln_f = nn.LayerNorm(width)
        self.read_out = nn.Linear(width, d_out)
        for module in self.modules():  # GPT-2 style init of linear maps and embeddings
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
        for block in self.blocks:
            nn.init.normal_(block.proj.weight, std=0.02 / math.sqrt(2 * depth))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(u.shape[1], device=u.device)
        x = self.read_in(u) + self.pos_emb(pos)
        for block in self.blocks:
            x = block(x)
        return self.read_out(self.ln_f(x))


def _per_tensor_grad_norm(model: nn.Module) -> float:
    total = 0.0
    for p in model.parameters():
        if p.grad is not None:
            total += p.grad.data.norm(2).item() ** 2
    return total**0.5


class PaperTrainer:
    """One MULTIPLY training step the way the paper's loop takes it."""

    def __init__(self, batch_size: int = 1024, seq_len: int = 40, d_in: int = 20, width: int = 64, depth: int = 2,
                 mlp_factor: int = 4, lr: float = 1e-3, device: str = "cpu", seed: int = 0):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.model = PaperModel(d_in, d_in // 2, seq_len, width, depth, mlp_factor).to(device)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=lr, eps=1e-16)
        self.generator = torch.Generator(device=device).manual_seed(seed)
        self.shape = (batch_size, seq_len, d_in)
        self.device = device
        self.l1_weight = 0.0

    def step(self) -> float:
        xs = torch.randn(self.shape, generator=self.generator, device=self.device)
        half = self.shape[-1] // 2
        ys = xs[..., :half] * xs[..., half:]
        l1_norm = sum(p.abs().sum() for p in self.model.parameters())
        self.optimizer.zero_grad()
        loss = F.mse_loss(self.model(xs), ys) + self.l1_weight * l1_norm
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm=100)
        grad_norm = _per_tensor_grad_norm(self.model)
        if grad_norm > 1e3 or math.isnan(grad_norm):
            return loss.item()
        self.optimizer.step()
        _per_tensor_grad_norm(self.model)
        return loss.item()
