"""Hyena (Poli et al. 2023): gated implicit long convolutions, order N (default 2).

    x_0, ..., x_{N-1}, v = split(short_conv(in_proj(h)))      in_proj: width -> (N+1) width
    for i = 1 .. N-1:   v = long_conv_i(v * x_{N-i}) + filter_bias_i * v
    y = out_proj(v * x_0)

short_conv is a depthwise conv of `short_kernel` taps (causal, or centred if not causal);
long_conv_i is a depthwise conv whose filter (width, l_max) is a sine MLP of positional
features times an exponential decay window (filters.ImplicitFilter), applied through
kernels.causal_conv(backend=conv_backend). Order 2 has one long conv and two gates.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import model_validator

from ..config import ModelConfig
from ..initialization import fill_uniform
from ..registry import register_mixer
from .filters import ImplicitFilter, depthwise_conv


class HyenaConfig(ModelConfig):
    order: int = 2
    short_kernel: int = 3
    filter_emb_dim: int = 5
    filter_hidden: int = 32
    conv_backend: Literal["auto", "direct", "fft", "triton", "triton_fft"] = "auto"

    @model_validator(mode="after")
    def _check_hyena(self):
        if self.order < 2:
            raise ValueError(f"order must be >= 2 (2 = one long conv between two gates), got {self.order}")
        if self.short_kernel < 1:
            raise ValueError(f"short_kernel must be a positive integer, got {self.short_kernel}")
        if not self.causal and self.short_kernel % 2 == 0:
            raise ValueError(f"a non-causal short_kernel must be odd (centred), got {self.short_kernel}")
        if self.filter_emb_dim < 3 or self.filter_emb_dim % 2 == 0:
            raise ValueError(
                f"filter_emb_dim must be odd and >= 3 (time + cos/sin pairs), got {self.filter_emb_dim}"
            )
        if self.filter_hidden < 1:
            raise ValueError(f"filter_hidden must be a positive integer, got {self.filter_hidden}")
        return self


@register_mixer("hyena", HyenaConfig)
class Hyena(nn.Module):
    def __init__(self, config: HyenaConfig):
        super().__init__()
        self.config = config
        width, order = config.width, config.order
        inner = (order + 1) * width
        self.in_proj = nn.Linear(width, inner)
        self.short_filter = nn.Parameter(torch.zeros(inner, 1, config.short_kernel))
        self.short_bias = nn.Parameter(torch.zeros(inner))
        # one implicit filter network produces the (order - 1) long filters at once
        self.filter_fn = ImplicitFilter(
            (order - 1) * width,
            config.l_max,
            causal=config.causal,
            emb_dim=config.filter_emb_dim,
            hidden=config.filter_hidden,
            activation="sin",
            decay=True,
            backend=config.conv_backend,
        )
        self.filter_bias = nn.Parameter(torch.zeros(order - 1, width))
        self.out_proj = nn.Linear(width, width)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        # nn.Conv1d's default init for the short conv; the filter MLP keeps the backbone's init
        bound = 1.0 / self.config.short_kernel**0.5
        fill_uniform(self.short_filter, bound, generator)
        fill_uniform(self.short_bias, bound, generator)
        fill_uniform(self.filter_bias, 1.0, generator)  # the per-channel skip ("D") of each long conv

    def short_conv(self, z: torch.Tensor) -> torch.Tensor:
        taps = self.config.short_kernel
        left = taps - 1 if self.config.causal else taps // 2
        zt = F.pad(z.transpose(1, 2), (left, taps - 1 - left))
        return F.conv1d(zt, self.short_filter, self.short_bias, groups=z.shape[-1]).transpose(1, 2)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        width, order = self.config.width, self.config.order
        *gates, v = self.short_conv(self.in_proj(h)).split(width, dim=-1)
        k, k_rev = self.filter_fn.kernels(h.dtype, h.device)
        for i in range(order - 1):
            rows = slice(i * width, (i + 1) * width)
            rev = None if k_rev is None else k_rev[rows]
            v = v * gates[order - 1 - i]
            v = depthwise_conv(v, k[rows], rev, self.config.conv_backend) + self.filter_bias[i] * v
        return self.out_proj(v * gates[0])
