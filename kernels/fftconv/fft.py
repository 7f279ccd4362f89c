"""`fft` backend: the causal conv by real FFTs of length n = 2L, as in the paper's code.

Zero-padding both signals to 2L turns the circular convolution of the FFT into the linear
one, and the first L outputs are the causal conv. Following HazyResearch's `fftconv`
(H3/Hyena/BaseConv), the filter spectrum is divided by n and the inverse uses
norm="forward". Cost O(B*D*L log L), so it wins at long L; its fp32 error grows slowly with
L (see results/kernels/error_floor_cpu.json) and is several times the direct backend's.
Gradients come from autograd through torch.fft (FFTs have no TF32 mode).
"""
from __future__ import annotations

import torch


def causal_conv_fft(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Causal conv by rfft/irfft with n = 2L. Inputs are assumed validated (see `causal_conv`)."""
    seq_len = u.shape[1]
    fft_size = 2 * seq_len
    compute_dtype = u.dtype if u.dtype in (torch.float32, torch.float64) else torch.float32
    u_t = u.transpose(1, 2).to(compute_dtype)  # (B, D, L): FFT along the contiguous-ish last dim
    k_f = torch.fft.rfft(k[:, :seq_len].to(compute_dtype), n=fft_size) / fft_size
    u_f = torch.fft.rfft(u_t, n=fft_size)
    y = torch.fft.irfft(u_f * k_f, n=fft_size, norm="forward")[..., :seq_len]
    return y.transpose(1, 2).to(u.dtype).contiguous()
