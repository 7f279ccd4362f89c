"""Public entry point: validate, pick a backend, run it.

    y = causal_conv(u, k, backend="auto")     # u (B, L, D), k (D, L_k), L <= L_k -> y (B, L, D)
    y[b, t, d] = sum_{s<=t} k[d, s] * u[b, t - s, d]

Backends (one module each, all differentiable in u and k, all returning a contiguous tensor
of u's dtype):
    direct     Toeplitz bmm in torch (direct.py)              exact products, fastest on CPU at short L
    fft        rfft/irfft with n = 2L in torch (fft.py)       the paper's algorithm, fastest at long L
    triton     blocked Toeplitz tl.dot kernels (triton_toeplitz.py), CUDA, or CPU under TRITON_INTERPRET=1
    triton_fft Monarch FFT as tl.dot kernels (triton_fft.py), L <= 8192 (fp32) / 4096 (fp64), same devices
    reference  the float64 shift-and-add oracle (reference.py), cast back to u's dtype
    auto       `select_backend` below
"""
from __future__ import annotations

import functools
import json
import os
import re
from pathlib import Path
from typing import Callable

import torch

from . import fft_plan
from .direct import causal_conv_direct, causal_conv_direct_channels_first
from .fft import causal_conv_fft
from .reference import causal_conv_reference

BACKENDS = ("auto", "direct", "fft", "triton", "triton_fft", "reference")
TRITON_DTYPES = (torch.float32, torch.float64)

# On CPU the direct backend (B*L^2*D flops in one bmm) beats the FFT (B*D*L log L, but ~10
# passes over memory) up to a crossover length. `python -m bench.experiments.kernel_crossover` on the
# 2-core CI CPU (1 thread, fp32, B=64, D=64; best of 7; ms forward+backward direct / fft;
# torch 2.14):
#   L=40: 2.4 / 3.3   L=48: 3.2 / 3.8   L=64: 4.8 / 4.3   L=80: 6.7 / 6.7   L=96: 8.8 / 9.7   L=128: 15.0 / 10.6
# (B=512 moves the crossover up, B=4 down; at B=4 every case is under 5 ms). Between 64 and 96
# the two are within timing noise; up to L=64 direct is also the more precise one in fp32
# (error 1.4-2.5x below fft, error_floor_cpu.json), so the tie at 64 goes to direct.
CPU_DIRECT_MAX_LEN = 64
# On CUDA without a measured crossover file (below): the Triton Toeplitz kernel up to this
# length, torch's FFT above it. A guess, not a measurement; `python -m bench.experiments.gpu_check` measures
# the crossover on a GPU and writes the file that replaces it.
CUDA_TRITON_MAX_LEN = 256
# results/kernels/crossover_<device>.json, <device> = device_slug(torch.cuda.get_device_name()):
#   {"device_name": "NVIDIA H200", "segments": {"float32": [{"max_len": 128, "backend": "triton"},
#                                                           {"max_len": 4096, "backend": "triton_fft"}], ...}}
# auto takes the first segment whose max_len >= L, and "fft" past the last one.
CROSSOVER_DIR = Path(__file__).resolve().parents[2] / "results" / "kernels"
CUDA_CHOICES = ("triton", "triton_fft", "fft", "direct")


def _reference_backend(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    return causal_conv_reference(u, k).to(u.dtype)


def _triton_backend(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    from .triton_toeplitz import causal_conv_triton  # imported lazily: triton is optional on CPU

    return causal_conv_triton(u, k)


def _triton_fft_backend(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    from .triton_fft import causal_conv_triton_fft  # imported lazily: triton is optional on CPU

    return causal_conv_triton_fft(u, k)


_IMPLEMENTATIONS: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "direct": causal_conv_direct,
    "fft": causal_conv_fft,
    "triton": _triton_backend,
    "triton_fft": _triton_fft_backend,
    "reference": _reference_backend,
}


def triton_interpreter_enabled() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _check_inputs(u: object, k: object, backend: object) -> None:
    if not isinstance(backend, str) or backend not in BACKENDS:
        raise ValueError(f"unknown conv backend {backend!r}; known backends: {', '.join(BACKENDS)}")
    for name, value in (("u", u), ("k", k)):
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"causal_conv: {name} must be a torch.Tensor, got {type(value).__name__}")
    assert isinstance(u, torch.Tensor) and isinstance(k, torch.Tensor)
    if u.dim() != 3:
        raise ValueError(f"causal_conv: u must have shape (B, L, D), got {u.dim()} dims {tuple(u.shape)}")
    if k.dim() != 2:
        raise ValueError(f"causal_conv: k must have shape (D, L_k), got {k.dim()} dims {tuple(k.shape)}")
    batch, seq_len, channels = u.shape
    if k.shape[0] != channels:
        raise ValueError(
            f"causal_conv: k has {k.shape[0]} channels but u has D={channels} (u {tuple(u.shape)}, k {tuple(k.shape)})"
        )
    if seq_len < 1:
        raise ValueError(f"causal_conv: sequence length L must be >= 1, got u of shape {tuple(u.shape)}")
    if seq_len > k.shape[1]:
        raise ValueError(f"causal_conv: sequence length L={seq_len} exceeds the filter length L_k={k.shape[1]}")
    for name, value in (("u", u), ("k", k)):
        if not value.dtype.is_floating_point:
            raise TypeError(f"causal_conv: {name} must have a real floating dtype, got {value.dtype}")
    if u.dtype != k.dtype:
        raise TypeError(f"causal_conv: u and k must have the same dtype, got u {u.dtype} and k {k.dtype}")
    if u.device != k.device:
        raise ValueError(f"causal_conv: u and k must be on the same device, got u on {u.device} and k on {k.device}")
    if backend in ("triton", "triton_fft"):
        if u.dtype not in TRITON_DTYPES:
            raise TypeError(f"causal_conv: the {backend} backend supports float32 and float64, got {u.dtype}")
        if u.device.type != "cuda" and not triton_interpreter_enabled():
            raise ValueError(
                f"causal_conv: the {backend} backend needs CUDA tensors (got {u.device}); "
                "CPU tensors run only in the Triton interpreter (set TRITON_INTERPRET=1 before importing triton)"
            )
    if backend == "triton_fft" and u.numel():
        fft_plan.check_inputs(u, k)


def device_slug(device_name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'nvidia_h100_80gb_hbm3': the crossover file's name part."""
    return re.sub(r"[^a-z0-9]+", "_", device_name.lower()).strip("_")


@functools.lru_cache(maxsize=16)
def load_crossover(device_name: str, directory: Path = CROSSOVER_DIR) -> dict[str, list[dict]] | None:
    """The measured segments for this GPU (dtype name -> [{max_len, backend}]), or None if unmeasured."""
    path = Path(directory) / f"crossover_{device_slug(device_name)}.json"
    if not path.is_file():
        return None
    segments = json.loads(path.read_text())["segments"]
    for dtype_name, rows in segments.items():
        lengths = [row["max_len"] for row in rows]
        if lengths != sorted(lengths) or any(row["backend"] not in CUDA_CHOICES for row in rows):
            raise ValueError(f"{path}: segments for {dtype_name} must have increasing max_len and backends "
                             f"in {CUDA_CHOICES}, got {rows}")
    return segments


def cuda_backend(seq_len: int, dtype: torch.dtype, device_name: str, directory: Path = CROSSOVER_DIR) -> str:
    """auto on CUDA: the measured crossover for this device if its file exists, else today's guess."""
    segments = load_crossover(device_name, Path(directory))
    if dtype not in TRITON_DTYPES:
        return "fft"
    if segments is None or str(dtype).removeprefix("torch.") not in segments:
        return "triton" if seq_len <= CUDA_TRITON_MAX_LEN else "fft"
    for row in segments[str(dtype).removeprefix("torch.")]:
        if seq_len <= row["max_len"]:
            if row["backend"] == "triton_fft" and fft_plan.fft_size(seq_len) > fft_plan.MAX_FFT_SIZE[dtype]:
                return "fft"
            return row["backend"]
    return "fft"


def select_backend(u: torch.Tensor, k: torch.Tensor) -> str:
    """The backend "auto" runs for these inputs, u (B, L, D) (never triton on CPU)."""
    seq_len = u.shape[1]
    if u.device.type == "cuda":
        backend = cuda_backend(seq_len, u.dtype, torch.cuda.get_device_name(u.device))
        if backend == "triton_fft" and not fft_plan.layout(u):
            return "fft"  # a strided u the FFT kernels refuse
        return backend
    return "direct" if seq_len <= CPU_DIRECT_MAX_LEN else "fft"


def causal_conv(u: torch.Tensor, k: torch.Tensor, *, backend: str = "auto", channels_first: bool = False
                ) -> torch.Tensor:
    """Causal depthwise convolution y[b,t,d] = sum_{s<=t} k[d,s] u[b,t-s,d].

    u: (B, L, D) input; k: (D, L_k) filters with L <= L_k (only k[:, :L] is used).
    backend: one of BACKENDS. Returns a contiguous (B, L, D) tensor of u's dtype,
    differentiable in u and k. Raises TypeError/ValueError on malformed input.
    channels_first=True: u and y are (D, B, L) instead; the direct backend then runs without
    layout copies, the others between two.
    """
    if channels_first and not (isinstance(u, torch.Tensor) and u.dim() == 3):
        raise ValueError("causal_conv: with channels_first=True u must have shape (D, B, L), got "
                         f"{tuple(u.shape) if isinstance(u, torch.Tensor) else type(u).__name__}")
    u_bld = u.permute(1, 2, 0) if channels_first else u  # validation and dispatch read (B, L, D)
    _check_inputs(u_bld, k, backend)
    if backend == "auto":
        backend = select_backend(u_bld, k)
    if u_bld.numel() == 0:  # B = 0 or D = 0: nothing to compute; FFT libraries and empty grids reject it
        backend = "direct"
    if not channels_first:
        return _IMPLEMENTATIONS[backend](u, k)
    if backend == "direct":
        return causal_conv_direct_channels_first(u, k)
    return _IMPLEMENTATIONS[backend](u_bld, k).permute(2, 0, 1).contiguous()
