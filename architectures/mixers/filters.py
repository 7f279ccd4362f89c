"""Depthwise long-convolution filters shared by the conv mixers (baseconv, hyena).

A filter module holds or produces a kernel `k` (D, l_max) and applies it as

    causal:      y[t] = sum_{s<=t} k[s] u[t-s]                        (kernels.causal_conv)
    non-causal:  y[t] = sum_{s<=t} k[s] u[t-s] + sum_{s>=1} k_rev[s-1] u[t+s]

the anti-causal half being a causal conv of the time-reversed input. k_rev has
l_max - 1 taps because tap 0 (the current token) belongs to `k`.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

import kernels

from ..initialization import fill_normal, fill_uniform

CONV_BACKENDS = ("auto", "direct", "fft", "triton", "triton_fft")


def depthwise_conv(
    u: torch.Tensor, k: torch.Tensor, k_rev: torch.Tensor | None, backend: str, channels_first: bool = False
) -> torch.Tensor:
    """u (B, L, D), k (D, >=L), k_rev (D, >=L-1) or None -> (B, L, D); (D, B, L) if channels_first."""
    y = kernels.causal_conv(u, k, backend=backend, channels_first=channels_first)
    time_dim = 2 if channels_first else 1
    if k_rev is not None and u.shape[time_dim] > 1:
        # shift by one tap: the reversed conv must not see the current token again
        k_rev = torch.cat([k_rev.new_zeros(k_rev.shape[0], 1), k_rev], dim=1)
        reversed_y = kernels.causal_conv(u.flip(time_dim), k_rev, backend=backend, channels_first=channels_first)
        y = y + reversed_y.flip(time_dim)
    return y


class ExplicitFilter(nn.Module):
    """A learned filter stored as a parameter `filter` (D, l_max) (+ `filter_rev` if non-causal).

    init "short": U(+-1/sqrt(l_max)) for every tap, the default of the nn.Conv1d with
        kernel size = seq len that Liu et al. train.
    init "long": the identity (tap 0 = 1, as in their LongConvolution) plus a small
        Gaussian perturbation decaying along the filter, exp(-4 s / l_max), so that far
        taps start near zero.
    """

    def __init__(self, width: int, l_max: int, *, causal: bool, init: str, backend: str, bias: bool = False):
        super().__init__()
        self.init, self.backend, self.l_max = init, backend, l_max
        self.filter = nn.Parameter(torch.zeros(width, l_max))
        self.filter_rev = None if causal else nn.Parameter(torch.zeros(width, l_max - 1))
        self.bias = nn.Parameter(torch.zeros(width)) if bias else None

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator, std: float) -> None:
        bound = 1.0 / math.sqrt(self.l_max)
        for p in (self.filter, self.filter_rev):
            if p is None:
                continue
            if self.init == "short":
                fill_uniform(p, bound, generator)
            else:
                fill_normal(p, std, generator)
                p.mul_(torch.exp(-4.0 * torch.arange(p.shape[1], dtype=p.dtype) / self.l_max))
        if self.init == "long":
            self.filter[:, 0] += 1.0
        if self.bias is not None:
            fill_uniform(self.bias, bound, generator)

    def forward(self, u: torch.Tensor, channels_first: bool = False) -> torch.Tensor:
        y = depthwise_conv(u, self.filter, self.filter_rev, self.backend, channels_first)
        if self.bias is None:
            return y
        return y + (self.bias[:, None, None] if channels_first else self.bias)


def positional_features(l_max: int, emb_dim: int, *, dtype, device) -> torch.Tensor:
    """(l_max, emb_dim) features of position t: [t / (l_max-1), cos(f w_t), -sin(f w_t) ...].

    The Hyena / Liu et al. construction: time in [0, 1] plus `bands = (emb_dim-1)//2`
    complex exponentials with frequencies linspace(1e-4, bands-1, bands) and
    w_t = 2 pi t / l_max. Computed on the fly in the model's dtype (no buffers).
    """
    bands = (emb_dim - 1) // 2
    t = torch.arange(l_max, dtype=dtype, device=device)
    t01 = t / max(l_max - 1, 1)
    w = 2 * math.pi * t / l_max
    f = torch.linspace(1e-4, max(bands - 1, 1e-4), bands, dtype=dtype, device=device)
    phase = w[:, None] * f[None, :]
    return torch.cat([t01[:, None], torch.cos(phase), -torch.sin(phase)], dim=1)


class Sin(nn.Module):
    def forward(self, x):
        return torch.sin(x)


class ImplicitFilter(nn.Module):
    """A filter produced by an MLP of positional features: k = mlp(z_t)^T (channels, l_max).

    activation "relu", no decay: the implicit conv of Liu et al. (emb 3, hidden 16).
    activation "sin" with decay: the Hyena filter (sine MLP times an exponential
    window exp(-|alpha_d| t), alpha_d spread between fast and slow decay per channel).
    Non-causal filters get a second set of `channels` outputs for the anti-causal taps.
    """

    def __init__(
        self,
        channels: int,
        l_max: int,
        *,
        causal: bool,
        emb_dim: int,
        hidden: int,
        activation: str,
        decay: bool,
        backend: str,
    ):
        super().__init__()
        self.channels, self.l_max, self.emb_dim, self.causal = channels, l_max, emb_dim, causal
        self.decay, self.backend = decay, backend
        outputs = channels if causal else 2 * channels
        act = nn.ReLU() if activation == "relu" else Sin()
        self.mlp = nn.Sequential(nn.Linear(emb_dim, hidden), act, nn.Linear(hidden, outputs))

    def kernels(self, dtype, device) -> tuple[torch.Tensor, torch.Tensor | None]:
        z = positional_features(self.l_max, self.emb_dim, dtype=dtype, device=device)
        h = self.mlp(z).transpose(0, 1)  # (outputs, l_max)
        if self.decay:
            # Hyena's ExponentialModulation: 1e-2 of the peak reached between 30% and 150% of l_max
            fast, slow = math.log(1e-2) / 0.3, math.log(1e-2) / 1.5
            rates = torch.linspace(fast, slow, self.channels, dtype=dtype, device=device)
            window = torch.exp(rates.abs().neg()[:, None] * z[None, :, 0])  # (channels, l_max)
            h = h * window.repeat(h.shape[0] // self.channels, 1)
        if self.causal:
            return h, None
        return h[: self.channels], h[self.channels :, 1:]

    def forward(self, u: torch.Tensor, channels_first: bool = False) -> torch.Tensor:
        k, k_rev = self.kernels(u.dtype, u.device)
        return depthwise_conv(u, k, k_rev, self.backend, channels_first)
