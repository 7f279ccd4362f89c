"""BaseConv (Arora et al. 2023; the gated-convolution model of Liu et al.).

    y = out_proj( conv(in_proj(h)) * gate_proj(h) )

in_proj, gate_proj, out_proj: nn.Linear(width, width, bias=True); conv: a depthwise
convolution along the sequence, causal unless causal=False, through
kernels.causal_conv(backend=conv_backend). Its filter is

    short     explicit parameter conv.filter (width, l_max) spanning the whole sequence,
              U(+-1/sqrt(l_max)) init (Liu et al.'s nn.Conv1d with kernel size = seq len)
    long      explicit conv.filter (width, l_max), identity init plus decaying noise
    implicit  conv.mlp(positional features) (Liu et al.'s ImplicitLongConvolution)

Options beyond the default (all off by default, so the block is exactly x + mixer(h)):
conv_bias adds the per-channel bias their nn.Conv1d had; branch_mix returns
branch_out * y + branch_skip * h with per-channel learnable vectors initialised to
(1, 0), their "learnable residual mix" (they use one scalar pair).
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn
from pydantic import model_validator

from ..config import ModelConfig
from ..registry import register_mixer
from .filters import ExplicitFilter, ImplicitFilter


class BaseConvConfig(ModelConfig):
    conv_kind: Literal["short", "long", "implicit"] = "short"
    conv_backend: Literal["auto", "direct", "fft", "triton", "triton_fft"] = "auto"
    conv_bias: bool = False
    branch_mix: bool = False
    filter_emb_dim: int = 3  # implicit only: positional features (time + cos/sin pairs)
    filter_hidden: int = 16  # implicit only: hidden width of the filter MLP

    @model_validator(mode="after")
    def _check_filter(self):
        if self.filter_emb_dim < 3 or self.filter_emb_dim % 2 == 0:
            raise ValueError(
                f"filter_emb_dim must be odd and >= 3 (time + cos/sin pairs), got {self.filter_emb_dim}"
            )
        if self.filter_hidden < 1:
            raise ValueError(f"filter_hidden must be a positive integer, got {self.filter_hidden}")
        if self.conv_bias and self.conv_kind == "implicit":
            raise ValueError("conv_bias is only available for conv_kind 'short' or 'long'")
        return self


@register_mixer("baseconv", BaseConvConfig)
class BaseConv(nn.Module):
    def __init__(self, config: BaseConvConfig):
        super().__init__()
        self.config = config
        width = config.width
        self.in_proj = nn.Linear(width, width)
        self.gate_proj = nn.Linear(width, width)
        self.out_proj = nn.Linear(width, width)
        if config.conv_kind == "implicit":
            self.conv = ImplicitFilter(
                width,
                config.l_max,
                causal=config.causal,
                emb_dim=config.filter_emb_dim,
                hidden=config.filter_hidden,
                activation="relu",
                decay=False,
                backend=config.conv_backend,
            )
        else:
            self.conv = ExplicitFilter(
                width,
                config.l_max,
                causal=config.causal,
                init=config.conv_kind,
                backend=config.conv_backend,
                bias=config.conv_bias,
            )
        if config.branch_mix:
            self.branch_out = nn.Parameter(torch.ones(width))
            self.branch_skip = nn.Parameter(torch.zeros(width))

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        # Linear maps were drawn by the backbone; here only what is not an nn.Linear.
        if isinstance(self.conv, ExplicitFilter):
            self.conv.reset_parameters(generator, self.config.init_std)
        if self.config.branch_mix:
            self.branch_out.fill_(1.0)
            self.branch_skip.zero_()

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        # out_proj(conv(in_proj(h)) * gate_proj(h)), with the conv input and the gate computed
        # channels first, (width, B*L) = W @ h^T: the conv then runs without layout copies
        # (kernels.causal_conv(channels_first=True)), and out_proj reads the product through a
        # transposed view. Tested against the plain (B, L, width) formula.
        batch, length, width = h.shape
        rows = h.reshape(batch * length, width).t()
        value = torch.addmm(self.in_proj.bias[:, None], self.in_proj.weight, rows).view(width, batch, length)
        gate = torch.addmm(self.gate_proj.bias[:, None], self.gate_proj.weight, rows).view(width, batch, length)
        product = (self.conv(value, channels_first=True) * gate).view(width, batch * length).t()
        y = torch.addmm(self.out_proj.bias, product, self.out_proj.weight.t()).view(batch, length, width)
        if self.config.branch_mix:
            y = self.branch_out * y + self.branch_skip * h
        return y
