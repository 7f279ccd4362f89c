"""Causal long convolution: public entry point and backends."""
from __future__ import annotations

import torch


def causal_conv(u: torch.Tensor, k: torch.Tensor, *, backend: str = "auto") -> torch.Tensor:
    """y[b, t, d] = sum_{s<=t} k[d, s] u[b, t-s, d]; u (B, L, D), k (D, L_k), L <= L_k."""
    L = u.shape[1]
    kk = k[:, :L]
    idx = torch.arange(L)
    lag = idx.view(-1, 1) - idx.view(1, -1)  # t - s
    toeplitz = kk[:, lag.clamp_min(0)] * (lag >= 0).to(kk.dtype)  # (D, L, L)
    return torch.einsum("dts,bsd->btd", toeplitz, u)
