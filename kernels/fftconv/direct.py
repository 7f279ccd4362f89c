"""`direct` backend: the causal conv as one batched Toeplitz matmul per channel.

For each channel d the conv is y_d = T_d u_d with the lower-triangular Toeplitz matrix
T_d[t, s] = k[d, t - s] (t >= s). We build T (D, L, L) once and multiply it with u laid
out as (D, L, B): one `bmm` with D batches of (L, L) x (L, B). Cost B*L^2*D multiply-adds,
exact fp32 products with fp32 accumulation (no FFT rounding), so it is the most precise
fast backend and the fastest on CPU at short L.

The backward is written out (not left to autograd) so that its matmuls also run under
`ieee_fp32()` and so that nothing of size D*L*L is kept alive between forward and backward:
    grad_u = T^T grad_y                        (anti-causal correlation with k)
    grad_k[d, s] = sum_t M_d[t, t - s],  M_d = grad_y_d u_d^T  (sum over the batch inside bmm)
Measured on the CI CPU (1 thread, fp32, B=64, L=40, D=64; results/kernels/bench_cpu.json):
forward 1.7 ms and forward+backward 7.8 ms, against 23 / 71 ms for the same conv through
nn.Conv1d(groups=D, kernel_size=L, padding=L-1). It needs D*L*L memory for T (and for
grad_y u^T in the backward), so at long L with a small batch it loses to `fft`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .precision import ieee_fp32


def toeplitz(k: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Lower-triangular Toeplitz matrices T (D, L, L), T[d, t, s] = k[d, t - s] for t >= s, else 0."""
    # padded[j] = k[j - (L - 1)] (zero for j < L - 1); unfold gives H[t, j] = padded[t + j],
    # and T[t, s] = padded[L - 1 + t - s] = H[t, L - 1 - s], i.e. H with its columns reversed.
    padded = F.pad(k[:, :seq_len], (seq_len - 1, 0))
    return padded.unfold(-1, seq_len, 1).flip(-1)


def sum_diagonals(m: torch.Tensor) -> torch.Tensor:
    """out[d, s] = sum_{t >= s} m[d, t, t - s] for m (D, L, L): the lag-s diagonal sums."""
    n_ch, seq_len, _ = m.shape
    # Transposed and kept upper-triangular, m[t, t - s] sits at flat index i*(L+1) + s of a
    # row-major (L, L) array (i = t - s). Padding L zeros lets us view it as (L, L + 1):
    # column s then holds exactly the lag-s diagonal (the wrapped entries are the zeros of triu).
    upper = m.transpose(1, 2).triu()
    flat = F.pad(upper.reshape(n_ch, seq_len * seq_len), (0, seq_len))
    return flat.view(n_ch, seq_len, seq_len + 1).sum(1)[:, :seq_len]


class _DirectCausalConv(torch.autograd.Function):
    # forward / setup_context split and a generated vmap rule: torch.func (jacrev, vmap)
    # can then transform the conv, which the Levenberg-Marquardt optimizer's Jacobian needs.
    generate_vmap_rule = True

    @staticmethod
    def forward(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        seq_len = u.shape[1]
        with ieee_fp32():
            y = torch.bmm(toeplitz(k, seq_len), u.permute(2, 1, 0).contiguous())  # (D, L, B)
        return y.permute(2, 1, 0).contiguous()

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        u, k = ctx.saved_tensors
        seq_len = u.shape[1]
        grad_u = grad_k = None
        g = grad_y.permute(2, 1, 0).contiguous()  # (D, L, B)
        with ieee_fp32():
            if ctx.needs_input_grad[0]:
                grad_u = torch.bmm(toeplitz(k, seq_len).transpose(1, 2), g).permute(2, 1, 0).contiguous()
            if ctx.needs_input_grad[1]:
                m = torch.bmm(g, u.permute(2, 0, 1))  # (D, L, L): m[d, t, s'] = sum_b g[b,t,d] u[b,s',d]
                grad_k = F.pad(sum_diagonals(m), (0, k.shape[1] - seq_len))
        return grad_u, grad_k


def causal_conv_direct(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Causal conv by Toeplitz bmm. Inputs are assumed validated (see `causal_conv`)."""
    return _DirectCausalConv.apply(u, k)
