"""The float64 oracle every backend is tested against.

Shift-and-add, written as directly as the definition allows:

    y[b, t, d] = sum_{s<=t} k[d, s] * u[b, t - s, d]

It loops over the lag s in Python (L iterations of one fused multiply-add over the whole
batch), so it shares no code and no algorithm with the fast backends: a bug in a Toeplitz
index or an FFT length cannot hide in both. Always computes in float64 and returns float64;
differentiable through autograd.
"""
from __future__ import annotations

import torch


def causal_conv_reference(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Oracle causal conv in float64. u (B, L, D), k (D, L_k) with L <= L_k -> y (B, L, D) float64."""
    u64 = u.to(torch.float64)
    k64 = k.to(torch.float64)
    seq_len = u64.shape[1]
    y = torch.zeros_like(u64)
    for lag in range(seq_len):
        # every output position t >= lag receives k[:, lag] * u[:, t - lag]
        y[:, lag:, :] = y[:, lag:, :] + k64[:, lag] * u64[:, : seq_len - lag, :]
    return y
