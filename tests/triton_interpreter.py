"""Set-up the Triton kernel tests share. Imported first by them: without CUDA the kernels run in the
Triton interpreter, and TRITON_INTERPRET must be set before anything imports their modules."""
from __future__ import annotations

import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# measured in the interpreter (triton_fft): fp32 ~1.4e-7 at L=64 to ~2.4e-7 at L=1024, fp64 ~4e-16 to ~1e-15
TOLERANCE = {torch.float32: 1e-6, torch.float64: 1e-12}


def skip_unless_runnable(kernels_interpreted) -> None:
    """Skip the calling test module where its kernels can run neither compiled nor interpreted."""
    if DEVICE == "cpu" and not kernels_interpreted():
        pytest.skip("triton kernels were imported without TRITON_INTERPRET=1 and there is no GPU",
                    allow_module_level=True)


def rel_l2(approx: torch.Tensor, exact: torch.Tensor) -> float:
    exact = exact.to(torch.float64).cpu()
    return float((approx.detach().to(torch.float64).cpu() - exact).norm() / exact.norm().clamp_min(1e-300))


def draw(batch, seq_len, channels, dtype, *, filter_len=None, seed=0):
    """u (B, L, D), k (D, L_k) in `dtype` and grad_y (B, L, D) in float64, from one seeded stream."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(batch, seq_len, channels, generator=g, dtype=torch.float64)
    k = torch.randn(channels, filter_len or seq_len, generator=g, dtype=torch.float64)
    grad_y = torch.randn(batch, seq_len, channels, generator=g, dtype=torch.float64)
    return u.to(dtype), k.to(dtype), grad_y
