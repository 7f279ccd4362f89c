"""The shape plan of the `triton_fft` backend, and what it refuses (plain Python: no triton import).

A causal conv of length L is a circular one of length N >= 2L (zero padding keeps the wrap-around
out of the first L outputs). N is the next power of two >= max(2L, 256), factored as N = N1 * N2
with N1 <= N2 <= 2 N1, both >= 16 because tl.dot needs every tile side >= 16.

Limits, checked before any launch:
    float32   N <= 16384 (L <= 8192): the largest two-factor tile (128 x 128) one program holds
    float64   N <= 8192  (L <= 4096): fp64 multiplies by broadcast-reduce, whose (N1, N2, N2)
              product tile must stay within Triton's 2**20-element tensor limit
u must be dense in the (B, L, D) layout or in the channels-first (D, B, L) layout that
`causal_conv(channels_first=True)` hands over; any other strides are refused (call .contiguous()).
"""
from __future__ import annotations

import torch

MIN_FFT_SIZE = 256  # N1 = N2 = 16, the smallest tl.dot tile
MAX_FFT_SIZE = {torch.float32: 16384, torch.float64: 8192}
FFT_DTYPES = tuple(MAX_FFT_SIZE)
MAX_TENSOR_NUMEL = 2**20  # Triton's limit on the elements of one block


def fft_size(seq_len: int) -> int:
    """N: the power of two >= max(2L, MIN_FFT_SIZE)."""
    return max(MIN_FFT_SIZE, 1 << (2 * int(seq_len) - 1).bit_length())


def factor(n: int) -> tuple[int, int]:
    """N = N1 * N2 with N1 <= N2 <= 2 N1, both powers of two."""
    log = n.bit_length() - 1
    return 1 << (log // 2), 1 << (log - log // 2)


def max_len(dtype: torch.dtype) -> int:
    return MAX_FFT_SIZE[dtype] // 2


def layout(u: torch.Tensor) -> str:
    """'bld' if u (B, L, D) is contiguous, 'dbl' if its (D, B, L) permutation is, else ''."""
    if u.is_contiguous():
        return "bld"
    if u.permute(2, 0, 1).is_contiguous():
        return "dbl"
    return ""


def check_inputs(u: torch.Tensor, k: torch.Tensor) -> None:
    """Raise TypeError/ValueError for what the kernels cannot take (shapes assumed (B, L, D), (D, L_k))."""
    for name, value in (("u", u), ("k", k)):
        if value.dtype not in FFT_DTYPES:
            raise TypeError(f"causal_conv: the triton_fft backend supports float32 and float64, got {name} {value.dtype}")
    if u.dtype != k.dtype:
        raise TypeError(f"causal_conv: u and k must have the same dtype, got u {u.dtype} and k {k.dtype}")
    seq_len = u.shape[1]
    n = fft_size(seq_len)
    if n > MAX_FFT_SIZE[u.dtype]:
        raise ValueError(
            f"causal_conv: the triton_fft backend takes L <= {max_len(u.dtype)} in {u.dtype} (FFT size "
            f"{MAX_FFT_SIZE[u.dtype]}); L={seq_len} needs FFT size {n}: use backend='fft'"
        )
    if not layout(u):
        raise ValueError(
            f"causal_conv: the triton_fft backend needs u dense in (B, L, D) or channels-first (D, B, L) order, "
            f"got shape {tuple(u.shape)} with strides {u.stride()}: pass u.contiguous()"
        )
