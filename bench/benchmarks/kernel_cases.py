"""What the conv-kernel benchmarks share: the backends by name, inputs, traffic and errors.

Used by bench/benchmarks/test_bench_kernels.py (pytest-benchmark) and bench/experiments/gpu_check.py (the prepared GPU
check), so both time the same functions on the same inputs and count bytes the same way.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

import kernels
from kernels.fftconv.reference import causal_conv_reference

ERROR_SLICE = (2, 16)  # batch rows and channels the error is measured on


def conv1d_causal(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """The same causal conv through cuDNN/oneDNN: depthwise nn.Conv1d with a sequence-long kernel."""
    seq_len, channels = u.shape[1], u.shape[2]
    weight = k[:, :seq_len].flip(-1).unsqueeze(1)  # conv1d correlates, so the filter is reversed
    y = F.conv1d(u.transpose(1, 2), weight, padding=seq_len - 1, groups=channels)[..., :seq_len]
    return y.transpose(1, 2)


def run_backend(backend: str):
    """backend: a kernels.causal_conv backend, "conv1d", or "triton_fft:tf32x3" (the opt-in precision)."""
    if backend == "conv1d":
        return conv1d_causal
    if backend == "triton_fft:tf32x3":
        from kernels.fftconv.triton_fft import causal_conv_triton_fft

        return lambda u, k: causal_conv_triton_fft(u, k, precision="tf32x3")
    return lambda u, k: kernels.causal_conv(u, k, backend=backend)


def draw(batch: int, seq_len: int, channels: int, device: str, dtype: torch.dtype = torch.float32):
    g = torch.Generator().manual_seed(seq_len * 1000 + channels)
    u = torch.randn(batch, seq_len, channels, generator=g).to(device, dtype)
    k = torch.randn(channels, seq_len, generator=g).to(device, dtype)
    grad_y = torch.randn(batch, seq_len, channels, generator=g).to(device, dtype)
    return u, k, grad_y


def traffic_bytes(batch: int, seq_len: int, channels: int, itemsize: int, with_grads: bool) -> int:
    """Minimal traffic: read u, k (and grad_y), write y (and grad_u, grad_k) once."""
    n_seq, n_filter = batch * seq_len * channels, channels * seq_len
    return itemsize * ((2 * n_seq + n_filter) + ((3 * n_seq + 2 * n_filter) if with_grads else 0))


def oracle_on_slice(u, k, grad_y) -> tuple:
    """(slice inputs, float64 exact y, grad_u, grad_k) on the ERROR_SLICE of the inputs."""
    rows, chans = ERROR_SLICE
    u_s, k_s, g_s = u[:rows, :, :chans].detach(), k[:chans].detach(), grad_y[:rows, :, :chans]
    u64 = u_s.double().requires_grad_()
    k64 = k_s.double().requires_grad_()
    y64 = causal_conv_reference(u64, k64)
    return (u_s, k_s, g_s), (y64.detach(), *torch.autograd.grad(y64, (u64, k64), g_s.double()))


def relative_errors(fn, u, k, grad_y, with_grads: bool, oracle: tuple | None = None) -> dict[str, float]:
    """Relative L2 errors of fn against the float64 oracle on a slice (oracle: a cached oracle_on_slice)."""
    (u_s, k_s, g_s), exact = oracle or oracle_on_slice(u, k, grad_y)
    u_s = u_s.clone().requires_grad_()
    k_s = k_s.clone().requires_grad_()
    y = fn(u_s, k_s)

    def rel(a, b):
        return float((a.detach().double() - b).norm() / b.norm())

    out = {"rel_l2_y": rel(y, exact[0])}
    if with_grads:
        got = torch.autograd.grad(y, (u_s, k_s), g_s)
        out["rel_l2_grad_u"] = rel(got[0], exact[1])
        out["rel_l2_grad_k"] = rel(got[1], exact[2])
    return out
