"""`direct` backend: the causal conv as one batched Toeplitz matmul per channel.

For each channel d the conv is y_d = T_d u_d with the lower-triangular Toeplitz matrix
T_d[t, s] = k[d, t - s] (t >= s). We build T (D, L, L) once and multiply u laid out
channels first, (D, B, L), by T^T: one `bmm` with D batches of (B, L) x (L, L). Cost B*L^2*D multiply-adds,
exact fp32 products with fp32 accumulation (no FFT rounding), so it is the most precise
fast backend and the fastest on CPU at short L.

The backward is written out (not left to autograd) so that its matmuls also run under
`ieee_fp32()` and so that nothing of size D*L*L is kept alive between forward and backward:
    grad_u = grad_y T                          (anti-causal correlation with k)
    grad_k[d, s] = sum_t M_d[t, t - s],  M_d = grad_y_d^T u_d  (sum over the batch inside bmm)
A model that keeps its conv activations channels first (BaseConv does) skips the two
layout copies around the conv in each direction.
Measured on the CI CPU (1 thread, fp32, B=64, L=40, D=64, torch 2.14; results/kernels/bench_cpu.json):
forward 0.85 ms and forward+backward 2.5 ms, against 8.9 / 15.6 ms for the same conv through
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


def bilinear_jvp(conv, u, k, u_dot, k_dot, *args):
    """The jvp of every conv Function here: conv is bilinear in (u, k), so
    d conv = conv(du, k) + conv(u, dk) (a tangent that is None contributes nothing)."""
    out = None
    if u_dot is not None:
        out = conv(u_dot, k, *args)
    if k_dot is not None:
        term = conv(u, k_dot, *args)
        out = term if out is None else out + term
    return out


class _DirectCausalConv(torch.autograd.Function):
    """Channels-first direct conv: v (D, B, L) -> y (D, B, L), y[d, b] = T_d v[d, b]."""

    # forward / setup_context split, a generated vmap rule and a jvp: torch.func (jacrev, vmap,
    # jvp) can then transform the conv, which the Levenberg-Marquardt optimizers need (the dense
    # one builds J by vmap(jacrev), the matrix-free one takes Gauss-Newton products by jvp/vjp).
    generate_vmap_rule = True

    @staticmethod
    def forward(v: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        with ieee_fp32():
            return torch.bmm(v, toeplitz(k, v.shape[2]).transpose(1, 2))

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(*inputs)
        ctx.save_for_forward(*inputs)

    @staticmethod
    def jvp(ctx, v_dot, k_dot):
        return bilinear_jvp(_DirectCausalConv.apply, *ctx.saved_tensors, v_dot, k_dot)

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        v, k = ctx.saved_tensors
        seq_len = v.shape[2]
        grad_v = grad_k = None
        with ieee_fp32():
            if ctx.needs_input_grad[0]:
                grad_v = torch.bmm(grad_y, toeplitz(k, seq_len))
            if ctx.needs_input_grad[1]:
                m = torch.bmm(grad_y.transpose(1, 2), v)  # (D, L, L): m[d, t, s'] = sum_b g[d,b,t] v[d,b,s']
                grad_k = F.pad(sum_diagonals(m), (0, k.shape[1] - seq_len))
        return grad_v, grad_k


def causal_conv_direct_channels_first(v: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Causal conv by Toeplitz bmm in the channels-first layout v (D, B, L) -> (D, B, L).

    No layout copies: the bmm batches over channels with (B, L) rows per channel, and its
    backward multiplies transposed views. Inputs are assumed validated (see `causal_conv`)."""
    return _DirectCausalConv.apply(v.contiguous(), k)


def causal_conv_direct(u: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Causal conv by Toeplitz bmm, u (B, L, D) -> (B, L, D): the channels-first conv between
    two layout copies. Inputs are assumed validated (see `causal_conv`)."""
    return causal_conv_direct_channels_first(u.permute(2, 0, 1), k).permute(1, 2, 0).contiguous()
