"""S4D: a diagonal state-space model (Gu et al. 2022), computed as a long convolution.

Per channel d, a diagonal complex SSM with N/2 modes (conjugate pairs give N real states)

    x'(t) = A x(t) + B u(t),   y(t) = 2 Re(C x(t)) + D u(t)

discretised by zero-order hold with step dt_d, is the convolution y = K * u + D u with

    K[d, l] = 2 Re( sum_n C[d,n] (exp(dt_d A[d,n]) - 1) / A[d,n] * exp(dt_d A[d,n] l) )

(B is folded into C). The mixer is  out_proj( gelu( S4D(in_proj(h)) ) ). K goes through
kernels.causal_conv(backend=conv_backend); non-causal models add an anti-causal kernel
with its own C (C_rev), like S4's bidirectional mode.

Init (S4D-Lin): A = -1/2 + i pi n, log dt ~ U(log dt_min, log dt_max), C ~ CN(0, 1), D ~ N(0, 1).
Parameters: log_dt (width,), log_A_real, A_imag (width, N/2), C (width, N/2, 2) as
(real, imag), D (width,). Plain torch (complex arithmetic in the parameters' dtype).
"""
from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F
from pydantic import model_validator

from ..config import ModelConfig
from ..initialization import fill_normal, fill_uniform
from ..registry import register_mixer
from .filters import depthwise_conv


class S4DConfig(ModelConfig):
    state_dim: int = 64  # N real states = N/2 complex conjugate modes
    dt_min: float = 1e-3
    dt_max: float = 1e-1
    conv_backend: Literal["auto", "direct", "fft", "triton", "triton_fft"] = "auto"

    @model_validator(mode="after")
    def _check_ssm(self):
        if self.state_dim < 2 or self.state_dim % 2:
            raise ValueError(f"state_dim must be even, >= 2 (conjugate pairs), got {self.state_dim}")
        if not 0 < self.dt_min <= self.dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max, got dt_min={self.dt_min}, dt_max={self.dt_max}")
        return self


def ssm_kernel(log_dt, log_A_real, A_imag, C, length: int) -> torch.Tensor:
    """The ZOH convolution kernel (width, length) of a diagonal SSM, in the params' dtype."""
    dt = log_dt.exp()[:, None]  # (D, 1)
    A = torch.complex(-log_A_real.exp(), A_imag)  # (D, N/2)
    dtA = dt * A
    coef = torch.view_as_complex(C.contiguous()) * (dtA.exp() - 1.0) / A  # (D, N/2)
    steps = torch.arange(length, dtype=log_dt.dtype, device=log_dt.device)
    powers = torch.exp(dtA[:, :, None] * steps)  # (D, N/2, L)
    return 2.0 * torch.einsum("dn,dnl->dl", coef, powers).real


@register_mixer("s4d", S4DConfig)
class S4D(nn.Module):
    def __init__(self, config: S4DConfig):
        super().__init__()
        self.config = config
        width, modes = config.width, config.state_dim // 2
        self.in_proj = nn.Linear(width, width)
        self.log_dt = nn.Parameter(torch.zeros(width))
        self.log_A_real = nn.Parameter(torch.zeros(width, modes))
        self.A_imag = nn.Parameter(torch.zeros(width, modes))
        self.C = nn.Parameter(torch.zeros(width, modes, 2))
        self.C_rev = None if config.causal else nn.Parameter(torch.zeros(width, modes, 2))
        self.D = nn.Parameter(torch.zeros(width))
        self.out_proj = nn.Linear(width, width)

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator) -> None:
        cfg = self.config
        lo, hi = math.log(cfg.dt_min), math.log(cfg.dt_max)
        fill_uniform(self.log_dt, (hi - lo) / 2, generator)
        self.log_dt.add_((hi + lo) / 2)
        self.log_A_real.fill_(math.log(0.5))
        self.A_imag.copy_(math.pi * torch.arange(cfg.state_dim // 2).expand_as(self.A_imag))
        fill_normal(self.C, 0.5**0.5, generator)  # complex normal: each part variance 1/2
        if self.C_rev is not None:
            fill_normal(self.C_rev, 0.5**0.5, generator)
        fill_normal(self.D, 1.0, generator)

    def kernels(self, length: int):
        k = ssm_kernel(self.log_dt, self.log_A_real, self.A_imag, self.C, length)
        if self.C_rev is None:
            return k, None
        # anti-causal taps 1..length-1 (tap 0 is the causal kernel's and D's)
        return k, ssm_kernel(self.log_dt, self.log_A_real, self.A_imag, self.C_rev, length)[:, 1:]

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        z = self.in_proj(h)
        k, k_rev = self.kernels(h.shape[1])
        y = depthwise_conv(z, k, k_rev, self.config.conv_backend) + self.D * z
        return self.out_proj(F.gelu(y))
