"""What the two Triton conv modules (triton_toeplitz, triton_fft) share."""
from __future__ import annotations

from typing import Callable

import torch


def built_for_interpreter(kernel) -> bool:
    """Whether a @triton.jit kernel was built for the Triton interpreter (TRITON_INTERPRET=1 at import)."""
    from triton.runtime.interpreter import InterpretedFunction

    return isinstance(kernel, InterpretedFunction)


def padded_filter_grad(filter_grad: Callable[..., torch.Tensor], grad_y: torch.Tensor, u: torch.Tensor,
                       k: torch.Tensor, precision: str) -> torch.Tensor:
    """grad_k of a causal conv whose filter k (D, L_k) may be longer than the sequence (L_k >= L):
    filter_grad gives the first L taps; the taps past the sequence never reach the output, so 0."""
    grad_k = torch.zeros_like(k)
    grad_k[:, : u.shape[1]] = filter_grad(grad_y, u, precision=precision)
    return grad_k
