"""`triton` backend: the causal conv as blocked Toeplitz matrix products, forward and backward.

Per channel d the conv is y_d = T_d u_d with T_d[t, s] = k[d, t - s] (t >= s). The kernels
never materialise T: each program builds its (BLOCK_L, BLOCK_L) tiles of T_d in registers
from k and multiplies them with (BLOCK_L, BLOCK_B) tiles of u, skipping the tiles above the
diagonal. Three launches cover forward and backward:

    forward   y      = T u          `_toeplitz_matmul_kernel`, ANTI_CAUSAL=False
    backward  grad_u = T^T grad_y   the same kernel, ANTI_CAUSAL=True (anti-causal correlation)
    backward  grad_k[d, s] = sum_{b,t} grad_y[b,t,d] u[b,t-s,d]
                                    `_filter_grad_kernel`: the products M = G_i U_j^T of the tile
                                    pairs on one block diagonal i - j = delta are summed first
                                    (one tl.dot accumulation, batch as the inner dimension), then
                                    the lag diagonals of that one (BLOCK_L, BLOCK_L) sum are
                                    reduced in registers (tl.gather) and written per program;
                                    torch adds the two half-tiles that meet at each lag and the
                                    batch splits: fixed order, so the result is deterministic.

Precision: fp32 tiles go through tl.dot(..., input_precision="ieee") (never TF32; the opt-in
"tf32x3" is the 3-pass TF32 emulation, ~fp32 accuracy, for speed studies). fp64 does not use
tl.dot (older Triton releases have no fp64 dot, and where one exists it is not tensor-core
work anyway): it takes a broadcast-multiply-reduce (`tl.sum(a[:, :, None] * b[None, :, :], 1)`)
in the same kernels with 16x16x16 tiles, accumulating in fp64. Both dtypes run fully in
Triton, forward and backward; nothing falls back to torch.

Runs on CUDA tensors, or on CPU tensors under the Triton interpreter (TRITON_INTERPRET=1
set before triton is imported); in the interpreter each program takes up to 64 positions
and 64 batch rows, because the interpreter's cost is per program and per op.
Tile sizes are fixed heuristics, not autotuned (bench/benchmarks/test_bench_kernels.py times them).
The loads index u as (B, L, D) with its own strides; with the channel as the fastest
program axis, neighbouring programs read the same cache lines (no transposed copy).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from .direct import bilinear_jvp
from .triton_common import built_for_interpreter, padded_filter_grad

PRECISIONS = ("ieee", "tf32x3")


@triton.jit
def _toeplitz_matmul_kernel(
    x_ptr, k_ptr, out_ptr,
    batch, seq_len,
    stride_xb, stride_xl, stride_xd,
    stride_kd, stride_kl,
    stride_ob, stride_ol, stride_od,
    ANTI_CAUSAL: tl.constexpr,
    USE_DOT: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_L: tl.constexpr,
    BLOCK_B: tl.constexpr,
):
    """out[b, i, d] = sum_j k[d, i - j] x[b, j, d] (j <= i), or with ANTI_CAUSAL sum_j k[d, j - i] x[b, j, d] (j >= i)."""
    d = tl.program_id(0).to(tl.int64)  # channel fastest: neighbouring programs share cache lines of x
    b_start = tl.program_id(1) * BLOCK_B
    i_start = tl.program_id(2) * BLOCK_L
    offs_i = i_start + tl.arange(0, BLOCK_L)
    offs_b = b_start + tl.arange(0, BLOCK_B)
    rows_b = offs_b.to(tl.int64)
    acc_dtype = out_ptr.dtype.element_ty
    acc = tl.zeros((BLOCK_L, BLOCK_B), dtype=acc_dtype)
    if ANTI_CAUSAL:
        j_lo = i_start
        j_hi = seq_len
    else:
        j_lo = 0
        j_hi = tl.minimum(i_start + BLOCK_L, seq_len)
    for j_start in range(j_lo, j_hi, BLOCK_L):
        offs_j = j_start + tl.arange(0, BLOCK_L)
        if ANTI_CAUSAL:
            lag = offs_j[None, :] - offs_i[:, None]
        else:
            lag = offs_i[:, None] - offs_j[None, :]
        tile_mask = (lag >= 0) & (offs_i[:, None] < seq_len) & (offs_j[None, :] < seq_len)
        toeplitz = tl.load(k_ptr + d * stride_kd + lag * stride_kl, mask=tile_mask, other=0.0)
        x = tl.load(
            x_ptr + rows_b[None, :] * stride_xb + offs_j[:, None] * stride_xl + d * stride_xd,
            mask=(offs_j[:, None] < seq_len) & (offs_b[None, :] < batch),
            other=0.0,
        )
        if USE_DOT:
            acc += tl.dot(toeplitz, x, input_precision=INPUT_PRECISION)
        else:
            acc += tl.sum(toeplitz[:, :, None] * x[None, :, :], axis=1)
    tl.store(
        out_ptr + rows_b[None, :] * stride_ob + offs_i[:, None] * stride_ol + d * stride_od,
        acc,
        mask=(offs_i[:, None] < seq_len) & (offs_b[None, :] < batch),
    )


@triton.jit
def _filter_grad_kernel(
    g_ptr, x_ptr, part_ptr,
    batch, seq_len, batch_per_split,
    stride_gb, stride_gl, stride_gd,
    stride_xb, stride_xl, stride_xd,
    stride_ps, stride_pd, stride_pq, stride_ph, stride_pc,
    USE_DOT: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_L: tl.constexpr,
    BLOCK_B: tl.constexpr,
):
    """Lag-diagonal sums of sum_{i - j = delta} G_i X_j^T over one batch split.

    part[split, d, delta, 0, c] = sum over tile entries with t - s = delta*BLOCK_L + c          (c >= 0)
    part[split, d, delta, 1, c] = sum over tile entries with t - s = (delta-1)*BLOCK_L + c      (c >= 1)
    """
    d = tl.program_id(0).to(tl.int64)
    delta = tl.program_id(1)
    split = tl.program_id(2)
    n_blocks = tl.cdiv(seq_len, BLOCK_L)
    b_lo = split * batch_per_split
    b_hi = tl.minimum(b_lo + batch_per_split, batch)
    offs_r = tl.arange(0, BLOCK_L)
    acc_dtype = part_ptr.dtype.element_ty
    acc = tl.zeros((BLOCK_L, BLOCK_L), dtype=acc_dtype)  # acc[tt, ss]: t = i*BLOCK_L + tt, s = j*BLOCK_L + ss
    for i in range(delta, n_blocks):
        offs_t = i * BLOCK_L + offs_r
        offs_s = (i - delta) * BLOCK_L + offs_r
        for b_start in range(b_lo, b_hi, BLOCK_B):
            offs_b = b_start + tl.arange(0, BLOCK_B)
            rows_b = offs_b.to(tl.int64)
            in_batch = offs_b < b_hi
            g = tl.load(  # (BLOCK_L, BLOCK_B): g[tt, b]
                g_ptr + rows_b[None, :] * stride_gb + offs_t[:, None] * stride_gl + d * stride_gd,
                mask=(offs_t[:, None] < seq_len) & in_batch[None, :],
                other=0.0,
            )
            x = tl.load(  # (BLOCK_B, BLOCK_L): x[b, ss]
                x_ptr + rows_b[:, None] * stride_xb + offs_s[None, :] * stride_xl + d * stride_xd,
                mask=in_batch[:, None] & (offs_s[None, :] < seq_len),
                other=0.0,
            )
            if USE_DOT:
                acc += tl.dot(g, x, input_precision=INPUT_PRECISION)
            else:
                acc += tl.sum(g[:, :, None] * x[None, :, :], axis=1)
    # Skew: skewed[tt, c] = acc[tt, (tt - c) mod BLOCK_L]; its column c holds local lag c
    # (rows tt >= c) and local lag c - BLOCK_L (rows tt < c).
    tt = offs_r[:, None]
    cc = offs_r[None, :]
    column = (tt - cc + BLOCK_L) % BLOCK_L
    skewed = tl.gather(acc, column, 1)
    zero = tl.zeros((BLOCK_L, BLOCK_L), dtype=acc_dtype)
    lag_here = tl.sum(tl.where(tt >= cc, skewed, zero), axis=0)
    lag_below = tl.sum(tl.where(tt < cc, skewed, zero), axis=0)
    base = part_ptr + split * stride_ps + d * stride_pd + delta * stride_pq + offs_r * stride_pc
    tl.store(base, lag_here)
    tl.store(base + stride_ph, lag_below)


def _next_pow2(n: int) -> int:
    return 1 << max(0, (int(n) - 1).bit_length())


@dataclass(frozen=True)
class LaunchConfig:
    block_l: int  # tile side along the sequence (tl.dot needs >= 16)
    block_b: int  # tile side along the batch
    n_splits: int  # batch splits of the filter-gradient kernel (partial sums added in torch)


def launch_config(batch: int, seq_len: int, channels: int, device: torch.device, dtype: torch.dtype) -> LaunchConfig:
    """Tile sizes and batch splits: fixed heuristics (not autotuned)."""
    if device.type != "cuda":  # interpreter: few, large programs, since it pays per program and per op
        # (capped at 64 so the fp64 broadcast tile, BLOCK_L * BLOCK_L * BLOCK_B, stays within Triton's numel limit)
        return LaunchConfig(min(64, max(16, _next_pow2(seq_len))), min(64, max(16, _next_pow2(batch))), 1)
    if dtype == torch.float64:  # the broadcast tile BLOCK_L^2 * BLOCK_B must fit in registers
        block_l, block_b = 16, 16
    else:
        block_l, block_b = (16 if seq_len <= 16 else (32 if seq_len <= 64 else 64)), 32
    n_blocks = triton.cdiv(seq_len, block_l)
    programs_wanted = 4 * torch.cuda.get_device_properties(device).multi_processor_count
    n_splits = min(triton.cdiv(batch, block_b), max(1, programs_wanted // (channels * n_blocks)))
    return LaunchConfig(block_l, block_b, n_splits)


def toeplitz_matmul(
    x: torch.Tensor, k: torch.Tensor, *, anti_causal: bool, precision: str = "ieee"
) -> torch.Tensor:
    """Launch `_toeplitz_matmul_kernel`: causal conv of x with k (or its anti-causal transpose)."""
    batch, seq_len, channels = x.shape
    out = torch.empty((batch, seq_len, channels), dtype=x.dtype, device=x.device)
    cfg = launch_config(batch, seq_len, channels, x.device, x.dtype)
    block_l, block_b = cfg.block_l, cfg.block_b
    grid = (channels, triton.cdiv(batch, block_b), triton.cdiv(seq_len, block_l))
    _toeplitz_matmul_kernel[grid](
        x, k, out,
        batch, seq_len,
        *x.stride(), *k.stride(), *out.stride(),
        ANTI_CAUSAL=anti_causal,
        USE_DOT=x.dtype == torch.float32,
        INPUT_PRECISION=precision,
        BLOCK_L=block_l,
        BLOCK_B=block_b,
    )
    return out


def filter_grad(grad_y: torch.Tensor, x: torch.Tensor, *, precision: str = "ieee") -> torch.Tensor:
    """grad_k[d, s] = sum_{b,t} grad_y[b, t, d] x[b, t - s, d] for s < L, shape (D, L)."""
    batch, seq_len, channels = x.shape
    cfg = launch_config(batch, seq_len, channels, x.device, x.dtype)
    block_l, block_b = cfg.block_l, cfg.block_b
    n_blocks = triton.cdiv(seq_len, block_l)
    batch_per_split = triton.cdiv(triton.cdiv(batch, cfg.n_splits), block_b) * block_b
    n_splits = triton.cdiv(batch, batch_per_split)
    parts = torch.empty((n_splits, channels, n_blocks, 2, block_l), dtype=x.dtype, device=x.device)
    _filter_grad_kernel[(channels, n_blocks, n_splits)](
        grad_y, x, parts,
        batch, seq_len, batch_per_split,
        *grad_y.stride(), *x.stride(), *parts.stride(),
        USE_DOT=x.dtype == torch.float32,
        INPUT_PRECISION=precision,
        BLOCK_L=block_l,
        BLOCK_B=block_b,
    )
    parts = parts.sum(0)  # (D, n_blocks, 2, BLOCK_L), splits added in a fixed order
    # lag delta*BLOCK_L + c gets the c >= 0 half of block diagonal delta and the negative half of delta + 1
    grad_k = parts[:, :, 0, :].clone()
    grad_k[:, :-1, :] += parts[:, 1:, 1, :]
    return grad_k.reshape(channels, n_blocks * block_l)[:, :seq_len]


class _TritonCausalConv(torch.autograd.Function):
    """u (B, L, D) -> y (B, L, D). forward / setup_context split and a jvp, so torch.func.jvp
    and vjp (the matrix-free Levenberg-Marquardt's Gauss-Newton products) can run through it.
    No vmap rule: a Triton launch cannot be batched by vmap."""

    @staticmethod
    def forward(u: torch.Tensor, k: torch.Tensor, precision: str) -> torch.Tensor:
        return toeplitz_matmul(u, k, anti_causal=False, precision=precision)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        u, k, precision = inputs
        ctx.save_for_backward(u, k)
        ctx.save_for_forward(u, k)
        ctx.precision = precision

    @staticmethod
    def jvp(ctx, u_dot, k_dot, _precision_dot):
        return bilinear_jvp(_TritonCausalConv.apply, *ctx.saved_tensors, u_dot, k_dot, ctx.precision)

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        u, k = ctx.saved_tensors
        grad_u = grad_k = None
        if ctx.needs_input_grad[0]:
            grad_u = toeplitz_matmul(grad_y, k, anti_causal=True, precision=ctx.precision)
        if ctx.needs_input_grad[1]:
            grad_k = padded_filter_grad(filter_grad, grad_y, u, k, ctx.precision)
        return grad_u, grad_k, None


def kernels_interpreted() -> bool:
    """Whether the kernels were built for the Triton interpreter (TRITON_INTERPRET=1 at import)."""
    return built_for_interpreter(_toeplitz_matmul_kernel)


def causal_conv_triton(u: torch.Tensor, k: torch.Tensor, *, precision: str = "ieee") -> torch.Tensor:
    """Causal conv by the Triton kernels. Inputs are assumed validated (see `causal_conv`).

    precision: "ieee" (default, exact fp32 products) or "tf32x3" (opt-in, fp32 only).
    """
    if u.device.type != "cuda" and not kernels_interpreted():
        raise ValueError(
            "triton causal conv: CPU tensors need the Triton interpreter, but this module was imported "
            "without it; set TRITON_INTERPRET=1 before anything imports kernels.fftconv.triton_toeplitz"
        )
    if precision not in PRECISIONS:
        raise ValueError(f"triton causal conv: unknown precision {precision!r}; known: {', '.join(PRECISIONS)}")
    return _TritonCausalConv.apply(u, k, precision)
