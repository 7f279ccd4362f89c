"""Mamba-style selective state-space mixer (Gu & Dao 2023), in plain torch.

    x, z = split(in_proj(h))                      in_proj: width -> 2 inner (inner = expand * width)
    x = silu(short_conv(x))                       depthwise causal conv, `conv_kernel` taps
    dt = softplus(dt_proj(x_proj_dt(x)) + dt_bias)        (B, L, inner), low rank `dt_rank`
    B_t, C_t = x_proj_B(x), x_proj_C(x)           (B, L, N) each: input-dependent ("selective")
    s_t = exp(dt_t * A) * s_{t-1} + dt_t * B_t * x_t      per channel, diagonal A = -exp(A_log) (inner, N)
    y_t = <s_t, C_t> + D * x_t
    out = out_proj(y * silu(z))

The scan runs step by step over the sequence (exact, and cheap at the suite's lengths).
Non-causal models (causal=False) add the same branch run over the reversed sequence, with
its own scan parameters (x_proj, dt_proj, dt_bias, A_log, D) and short conv, as
bidirectional Mamba variants do.

Init as Mamba: A_log = log(1..N) per channel (S4D-real), D = 1, dt_bias = softplus^-1 of a
log-uniform draw in [dt_min, dt_max], in_proj, x_proj and dt_proj U(+-1/sqrt(fan_in));
out_proj from the backbone's Gaussian init (as every mixer's output map).
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import model_validator

import kernels

from ..config import ModelConfig
from ..initialization import fill_uniform
from ..registry import register_mixer


class MambaConfig(ModelConfig):
    state_dim: int = 16  # N: state size per channel
    expand: int = 1  # inner width = expand * width (Mamba uses 2; 1 keeps the mixer near the others' size)
    conv_kernel: int = 4
    dt_rank: int | None = None  # None -> ceil(width / 16)
    dt_min: float = 1e-3
    dt_max: float = 1e-1

    @model_validator(mode="after")
    def _check_mamba(self):
        for field in ("state_dim", "expand", "conv_kernel"):
            if getattr(self, field) < 1:
                raise ValueError(f"{field} must be a positive integer, got {getattr(self, field)}")
        if self.dt_rank is not None and self.dt_rank < 1:
            raise ValueError(f"dt_rank must be a positive integer (or None for ceil(width / 16)), got {self.dt_rank}")
        if not 0 < self.dt_min <= self.dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max, got dt_min={self.dt_min}, dt_max={self.dt_max}")
        return self

    @property
    def inner(self) -> int:
        return self.expand * self.width

    @property
    def rank(self) -> int:
        return self.dt_rank or math.ceil(self.width / 16)


def selective_scan(x, dt, A, B, C, D) -> torch.Tensor:
    """y_t = <s_t, C_t> + D x_t with s_t = exp(dt_t A) s_{t-1} + dt_t B_t x_t, s_{-1} = 0.

    x, dt (batch, L, inner); A (inner, N); B, C (batch, L, N); D (inner,) -> y (batch, L, inner).
    """
    batch, length, inner = x.shape
    state = x.new_zeros(batch, inner, A.shape[1])
    ys = []
    for t in range(length):
        decay = torch.exp(dt[:, t, :, None] * A)  # (batch, inner, N)
        state = decay * state + (dt[:, t, :, None] * x[:, t, :, None]) * B[:, t, None, :]
        ys.append(torch.einsum("bin,bn->bi", state, C[:, t]))
    return torch.stack(ys, dim=1) + D * x


class SelectiveBranch(nn.Module):
    """Short conv, input-dependent dt, B, C, and the scan: x (batch, L, inner) -> y (batch, L, inner)."""

    def __init__(self, config: MambaConfig):
        super().__init__()
        self.config = config
        inner, n, rank = config.inner, config.state_dim, config.rank
        self.conv_filter = nn.Parameter(torch.zeros(inner, config.conv_kernel))
        self.conv_bias = nn.Parameter(torch.zeros(inner))
        self.x_proj = nn.Linear(inner, rank + 2 * n, bias=False)
        self.dt_proj = nn.Linear(rank, inner, bias=False)
        self.dt_bias = nn.Parameter(torch.zeros(inner))
        self.A_log = nn.Parameter(torch.zeros(inner, n))
        self.D = nn.Parameter(torch.ones(inner))

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        cfg = self.config
        fill_uniform(self.x_proj.weight, 1.0 / math.sqrt(cfg.inner), generator)  # nn.Linear's default scale
        fill_uniform(self.dt_proj.weight, 1.0 / math.sqrt(cfg.rank), generator)
        fill_uniform(self.conv_filter, 1.0 / math.sqrt(cfg.conv_kernel), generator)
        fill_uniform(self.conv_bias, 1.0 / math.sqrt(cfg.conv_kernel), generator)
        lo, hi = math.log(cfg.dt_min), math.log(cfg.dt_max)
        log_dt = torch.rand(cfg.inner, generator=generator, dtype=torch.float64) * (hi - lo) + lo
        dt = log_dt.exp()
        self.dt_bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
        self.A_log.copy_(torch.log(torch.arange(1, cfg.state_dim + 1, dtype=torch.float64)).expand_as(self.A_log))
        self.D.fill_(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        length = x.shape[1]
        taps = min(self.config.conv_kernel, length)
        k = F.pad(self.conv_filter[:, :taps], (0, length - taps))  # the conv's filter spans the sequence
        x = F.silu(kernels.causal_conv(x, k) + self.conv_bias)
        rank, n = self.config.rank, self.config.state_dim
        dt_low, B, C = self.x_proj(x).split([rank, n, n], dim=-1)
        dt = F.softplus(self.dt_proj(dt_low) + self.dt_bias)
        return selective_scan(x, dt, -torch.exp(self.A_log), B, C, self.D)


@register_mixer("mamba", MambaConfig)
class Mamba(nn.Module):
    def __init__(self, config: MambaConfig):
        super().__init__()
        self.config = config
        self.in_proj = nn.Linear(config.width, 2 * config.inner)
        self.forward_branch = SelectiveBranch(config)
        self.backward_branch = None if config.causal else SelectiveBranch(config)
        self.out_proj = nn.Linear(config.inner, config.width)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        # nn.Linear's default scale for in_proj, as Mamba: at the backbone's std 0.02 the
        # scan's output (cubic in the input through x, B and C) starts ~1e-8 of the skip path
        fill_uniform(self.in_proj.weight, 1.0 / math.sqrt(self.config.width), generator)
        for branch in (self.forward_branch, self.backward_branch):
            if branch is not None:
                branch.reset_parameters(generator)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x, z = self.in_proj(h).chunk(2, dim=-1)
        y = self.forward_branch(x)
        if self.backward_branch is not None:
            y = y + self.backward_branch(x.flip(1)).flip(1)
        return self.out_proj(y * F.silu(z))
