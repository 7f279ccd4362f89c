"""`triton_fft` backend: the causal conv by FFTs written as matrix products (Monarch), in Triton.

For a length-N DFT with N = N1 * N2 (fft_plan.py), index the signal by n = N2 n1 + n2 and the
spectrum by f = k1 + N1 k2. Then (Cooley-Tukey, the decomposition FlashFFTConv runs in CUDA)

    X[k1, k2] = sum_n2 F2[n2, k2] * T[k1, n2] * (sum_n1 F1[k1, n1] x[n1, n2])

with F_m[a, b] = exp(-2 pi i a b / m) and the twiddles T[k1, n2] = exp(-2 pi i k1 n2 / N): two
dense matrix products (tl.dot) around one elementwise multiply, and the inverse runs the same
steps backwards with conjugates. Triton has no complex dtype, so every complex matrix is a pair
of real ones (real input: 2 products for the first step, 4 for the second; the inverse needs
4, then 2 for the real part only). The DFT matrices and twiddles are computed in float64 from
exact integer phases (a*b mod m), rounded once to the dtype, and cached per (N, dtype, device).

The conv: y = first L of IDFT_N(DFT_N(u padded) * DFT_N(k padded) / N), N >= 2L. Per program:
one batch row and a tile of C channels (C * N elements; the whole padded sequence stays in
registers), the filter spectrum read from memory. Three kernels, shared helpers:

    _filter_spectrum_kernel   K = DFT(k) / N, (2, D, N1, N2) in the kernel's frequency order
    _conv_kernel              y = IDFT(DFT(x) * K); CONJ=True: IDFT(DFT(x) * conj(K)), the
                              correlation grad_u[s] = sum_t k[t - s] grad_y[t] (the backward of
                              the conv is the same kernel with the filter's spectrum conjugated)
    _filter_grad_kernel       grad_k[s] = sum_b sum_t grad_y[b, t] u[b, t - s]
                              = IDFT(sum_b DFT(grad_y_b) * conj(DFT(u_b))) / N: the batch sum is
                              taken in the frequency domain, over one batch split per program;
                              torch adds the splits in a fixed order (deterministic)

The backward recomputes K (one small launch) rather than keeping (2, D, N), up to 4x the size
of k, alive between the passes. Precision: fp32 tiles go through
tl.dot(input_precision="ieee") by default (never TF32); "tf32x3" is an opt-in for speed studies.
fp64 has no tl.dot: the same kernels multiply by broadcast-reduce, tl.sum(a[:, :, None] *
b[None, :, :], 1), accumulating in fp64. BaseConv's gate is not fused: its pre- and post-gate
multiplies run in torch around the conv (the channels-first layout BaseConv uses is read and
written directly, with no layout copy). Runs on CUDA tensors, or on CPU tensors under the Triton
interpreter (TRITON_INTERPRET=1 set before triton is imported), where tl.dot is numpy's fp32
matmul, whose summation order differs from a GPU's.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import triton
import triton.language as tl

from . import fft_plan
from .direct import bilinear_jvp
from .triton_common import built_for_interpreter, padded_filter_grad

PRECISIONS = ("ieee", "tf32x3")


@triton.jit
def _mm(a, b, USE_DOT: tl.constexpr, PRECISION: tl.constexpr):
    """a @ b: tl.dot for fp32, broadcast-multiply-reduce for fp64 (no fp64 tl.dot)."""
    if USE_DOT:
        return tl.dot(a, b, input_precision=PRECISION)
    else:
        return tl.sum(a[:, :, None] * b[None, :, :], axis=1)


@triton.jit
def _signal_offsets(row, d0, seq_len, channels, stride_b, stride_l, stride_d,
                    N1: tl.constexpr, N2: tl.constexpr, C: tl.constexpr):
    """Element offsets of [row, N2 n1 + n2, d0 + c] as an (N1, N2, C) block, and the mask of the
    positions inside L and the channels inside D (one addressing for loads and stores)."""
    n1 = tl.arange(0, N1)[:, None, None]
    n2 = tl.arange(0, N2)[None, :, None]
    c = tl.arange(0, C)[None, None, :]
    pos = n1 * N2 + n2
    chan = d0 + c
    offsets = row * stride_b + pos.to(tl.int64) * stride_l + chan.to(tl.int64) * stride_d
    return offsets, (pos < seq_len) & (chan < channels)


@triton.jit
def _load_signal(x_ptr, row, d0, seq_len, channels, stride_b, stride_l, stride_d,
                 N1: tl.constexpr, N2: tl.constexpr, C: tl.constexpr):
    """x[row, N2 n1 + n2, d0 + c] as an (N1, N2 * C) tile, zero past L and past D."""
    offsets, mask = _signal_offsets(row, d0, seq_len, channels, stride_b, stride_l, stride_d, N1, N2, C)
    return tl.reshape(tl.load(x_ptr + offsets, mask=mask, other=0.0), (N1, N2 * C))


@triton.jit
def _store_signal(out_ptr, y, row, d0, seq_len, channels, stride_b, stride_l, stride_d,
                  N1: tl.constexpr, N2: tl.constexpr, C: tl.constexpr):
    """Store the first L positions of an (N1, N2 * C) tile at out[row, N2 n1 + n2, d0 + c]."""
    offsets, mask = _signal_offsets(row, d0, seq_len, channels, stride_b, stride_l, stride_d, N1, N2, C)
    tl.store(out_ptr + offsets, tl.reshape(y, (N1, N2, C)), mask=mask)


@triton.jit
def _load_matrices(f1_ptr, f2_ptr, tw_ptr, N1: tl.constexpr, N2: tl.constexpr):
    """The DFT matrices F1 (N1, N1), F2 (N2, N2) and twiddles T (N1, N2), real and imaginary parts."""
    a1 = tl.arange(0, N1)
    a2 = tl.arange(0, N2)
    f1 = a1[:, None] * N1 + a1[None, :]
    f2 = a2[:, None] * N2 + a2[None, :]
    tw = a1[:, None] * N2 + a2[None, :]
    return (tl.load(f1_ptr + f1), tl.load(f1_ptr + N1 * N1 + f1),
            tl.load(f2_ptr + f2), tl.load(f2_ptr + N2 * N2 + f2),
            tl.load(tw_ptr + tw)[:, :, None], tl.load(tw_ptr + N1 * N2 + tw)[:, :, None])


@triton.jit
def _dft(x, f1r, f1i, f2r, f2i, twr, twi,
         N1: tl.constexpr, N2: tl.constexpr, C: tl.constexpr, USE_DOT: tl.constexpr, PRECISION: tl.constexpr):
    """DFT of a real (N1, N2 * C) tile [n1, (n2, c)] -> spectrum (N1 * C, N2) [(k1, c), k2], real and imaginary."""
    ar = tl.reshape(_mm(f1r, x, USE_DOT, PRECISION), (N1, N2, C))  # [k1, n2, c]
    ai = tl.reshape(_mm(f1i, x, USE_DOT, PRECISION), (N1, N2, C))
    br = tl.reshape(tl.permute(ar * twr - ai * twi, (0, 2, 1)), (N1 * C, N2))  # [(k1, c), n2]
    bi = tl.reshape(tl.permute(ar * twi + ai * twr, (0, 2, 1)), (N1 * C, N2))
    sr = _mm(br, f2r, USE_DOT, PRECISION) - _mm(bi, f2i, USE_DOT, PRECISION)
    si = _mm(br, f2i, USE_DOT, PRECISION) + _mm(bi, f2r, USE_DOT, PRECISION)
    return sr, si


@triton.jit
def _idft_real(sr, si, f1r, f1i, f2r, f2i, twr, twi,
               N1: tl.constexpr, N2: tl.constexpr, C: tl.constexpr, USE_DOT: tl.constexpr, PRECISION: tl.constexpr):
    """Real part of N * IDFT of a spectrum (N1 * C, N2) [(k1, c), k2] -> (N1, N2 * C) [n1, (n2, c)]."""
    cr = _mm(sr, f2r, USE_DOT, PRECISION) + _mm(si, f2i, USE_DOT, PRECISION)  # times conj(F2): [(k1, c), n2]
    ci = _mm(si, f2r, USE_DOT, PRECISION) - _mm(sr, f2i, USE_DOT, PRECISION)
    cr = tl.permute(tl.reshape(cr, (N1, C, N2)), (0, 2, 1))  # [k1, n2, c]
    ci = tl.permute(tl.reshape(ci, (N1, C, N2)), (0, 2, 1))
    er = tl.reshape(cr * twr + ci * twi, (N1, N2 * C))  # times conj(T)
    ei = tl.reshape(ci * twr - cr * twi, (N1, N2 * C))
    return _mm(f1r, er, USE_DOT, PRECISION) + _mm(f1i, ei, USE_DOT, PRECISION)  # Re(conj(F1) E)


@triton.jit
def _spectrum_offsets(d0, channels, N1: tl.constexpr, N2: tl.constexpr, C: tl.constexpr):
    """Offsets of spectrum[d0 + c, k1, k2] in (N1, C, N2) order, and the channel mask."""
    k1 = tl.arange(0, N1)[:, None, None]
    c = tl.arange(0, C)[None, :, None]
    k2 = tl.arange(0, N2)[None, None, :]
    chan = d0 + c
    offs = chan.to(tl.int64) * (N1 * N2) + k1 * N2 + k2
    return offs, (chan < channels) & (k2 < N2)


@triton.jit
def _filter_spectrum_kernel(
    k_ptr, f1_ptr, f2_ptr, tw_ptr, spec_ptr,
    seq_len, channels, stride_kd, stride_kl, scale,
    N1: tl.constexpr, N2: tl.constexpr, C: tl.constexpr, USE_DOT: tl.constexpr, PRECISION: tl.constexpr,
):
    """spec[0/1, d, k1, k2] = Re/Im DFT_N(k[d, :L]) * scale for the C channels of this program."""
    d0 = tl.program_id(0) * C
    f1r, f1i, f2r, f2i, twr, twi = _load_matrices(f1_ptr, f2_ptr, tw_ptr, N1, N2)
    x = _load_signal(k_ptr, 0, d0, seq_len, channels, 0, stride_kl, stride_kd, N1, N2, C)
    sr, si = _dft(x, f1r, f1i, f2r, f2i, twr, twi, N1, N2, C, USE_DOT, PRECISION)
    offs, mask = _spectrum_offsets(d0, channels, N1, N2, C)
    plane = channels * N1 * N2
    tl.store(spec_ptr + offs, tl.reshape(sr * scale, (N1, C, N2)), mask=mask)
    tl.store(spec_ptr + plane + offs, tl.reshape(si * scale, (N1, C, N2)), mask=mask)


@triton.jit
def _conv_kernel(
    x_ptr, spec_ptr, f1_ptr, f2_ptr, tw_ptr, out_ptr,
    seq_len, channels,
    stride_xb, stride_xl, stride_xd, stride_ob, stride_ol, stride_od,
    CONJ: tl.constexpr,
    N1: tl.constexpr, N2: tl.constexpr, C: tl.constexpr, USE_DOT: tl.constexpr, PRECISION: tl.constexpr,
):
    """out[b, :, d] = first L of IDFT(DFT(x[b, :, d]) * spec[d]) (spec conjugated if CONJ)."""
    d0 = tl.program_id(0) * C  # channel tile fastest: neighbouring programs share cache lines of x
    row = tl.program_id(1).to(tl.int64)
    f1r, f1i, f2r, f2i, twr, twi = _load_matrices(f1_ptr, f2_ptr, tw_ptr, N1, N2)
    x = _load_signal(x_ptr, row, d0, seq_len, channels, stride_xb, stride_xl, stride_xd, N1, N2, C)
    sr, si = _dft(x, f1r, f1i, f2r, f2i, twr, twi, N1, N2, C, USE_DOT, PRECISION)
    offs, mask = _spectrum_offsets(d0, channels, N1, N2, C)
    kr = tl.reshape(tl.load(spec_ptr + offs, mask=mask, other=0.0), (N1 * C, N2))
    ki = tl.reshape(tl.load(spec_ptr + channels * N1 * N2 + offs, mask=mask, other=0.0), (N1 * C, N2))
    if CONJ:
        ki = -ki
    pr = sr * kr - si * ki
    pi = sr * ki + si * kr
    y = _idft_real(pr, pi, f1r, f1i, f2r, f2i, twr, twi, N1, N2, C, USE_DOT, PRECISION)
    _store_signal(out_ptr, y, row, d0, seq_len, channels, stride_ob, stride_ol, stride_od, N1, N2, C)


@triton.jit
def _filter_grad_kernel(
    g_ptr, x_ptr, f1_ptr, f2_ptr, tw_ptr, part_ptr,
    batch, seq_len, channels, batch_per_split, scale,
    stride_gb, stride_gl, stride_gd, stride_xb, stride_xl, stride_xd,
    stride_ps, stride_pd, stride_pl,
    N1: tl.constexpr, N2: tl.constexpr, C: tl.constexpr, USE_DOT: tl.constexpr, PRECISION: tl.constexpr,
):
    """part[split, d, s] = sum over this split's rows b of sum_t g[b, t, d] x[b, t - s, d], s < L."""
    d0 = tl.program_id(0) * C
    split = tl.program_id(1).to(tl.int64)  # the batch loop then runs in int64 too (row offsets)
    f1r, f1i, f2r, f2i, twr, twi = _load_matrices(f1_ptr, f2_ptr, tw_ptr, N1, N2)
    acc_r = tl.zeros((N1 * C, N2), dtype=part_ptr.dtype.element_ty)
    acc_i = tl.zeros((N1 * C, N2), dtype=part_ptr.dtype.element_ty)
    b_lo = split * batch_per_split
    b_hi = tl.minimum(b_lo + batch_per_split, batch)
    for row in range(b_lo, b_hi):
        g = _load_signal(g_ptr, row, d0, seq_len, channels, stride_gb, stride_gl, stride_gd, N1, N2, C)
        gr, gi = _dft(g, f1r, f1i, f2r, f2i, twr, twi, N1, N2, C, USE_DOT, PRECISION)
        x = _load_signal(x_ptr, row, d0, seq_len, channels, stride_xb, stride_xl, stride_xd, N1, N2, C)
        xr, xi = _dft(x, f1r, f1i, f2r, f2i, twr, twi, N1, N2, C, USE_DOT, PRECISION)
        acc_r += gr * xr + gi * xi  # G conj(X)
        acc_i += gi * xr - gr * xi
    y = _idft_real(acc_r * scale, acc_i * scale, f1r, f1i, f2r, f2i, twr, twi, N1, N2, C, USE_DOT, PRECISION)
    # part is (splits, D, L): the signal loader's (row, position, channel) strides are (split, s, d)
    _store_signal(part_ptr, y, split, d0, seq_len, channels, stride_ps, stride_pl, stride_pd,
                  N1, N2, C)


@functools.lru_cache(maxsize=64)
def dft_matrices(n: int, dtype: torch.dtype, device: torch.device) -> tuple[torch.Tensor, ...]:
    """F1 (2, N1, N1), F2 (2, N2, N2), T (2, N1, N2): real and imaginary parts, from float64 phases."""
    n1, n2 = fft_plan.factor(n)

    def phases(rows: int, cols: int, m: int) -> torch.Tensor:
        r = torch.arange(rows, dtype=torch.int64)[:, None]
        c = torch.arange(cols, dtype=torch.int64)[None, :]
        angle = (-2.0 * math.pi / m) * ((r * c) % m).to(torch.float64)  # exact integer phase, reduced mod m
        return torch.stack((torch.cos(angle), torch.sin(angle))).to(device=device, dtype=dtype).contiguous()

    return phases(n1, n1, n1), phases(n2, n2, n2), phases(n1, n2, n)


@dataclass(frozen=True)
class LaunchConfig:
    channels_per_program: int  # C: channels one program transforms together
    num_warps: int
    n_splits: int  # batch splits of the filter-gradient kernel


def launch_config(batch: int, channels: int, n: int, device: torch.device, dtype: torch.dtype) -> LaunchConfig:
    """Fixed heuristics (not autotuned): C * N elements per program, fewer and larger in the interpreter."""
    n1, n2 = fft_plan.factor(n)
    budget = 4096 if device.type == "cuda" else 65536  # the interpreter pays per program and per op
    if dtype == torch.float64:  # the broadcast-reduce tiles (N1, N1, N2 C) and (N1 C, N2, N2)
        budget = min(budget, fft_plan.MAX_TENSOR_NUMEL // n2)
    per_program = max(1, min(budget // n, triton.next_power_of_2(channels)))
    num_warps = 4 if n * per_program <= 2048 else 8
    n_splits = 1
    if device.type == "cuda":
        programs_wanted = 4 * torch.cuda.get_device_properties(device).multi_processor_count
        n_splits = max(1, min(batch, programs_wanted // triton.cdiv(channels, per_program)))
    return LaunchConfig(per_program, num_warps, n_splits)


def _meta(n: int, cfg: LaunchConfig, dtype: torch.dtype, precision: str) -> dict:
    n1, n2 = fft_plan.factor(n)
    return dict(N1=n1, N2=n2, C=cfg.channels_per_program, USE_DOT=dtype == torch.float32, PRECISION=precision,
                num_warps=cfg.num_warps)


def filter_spectrum(k: torch.Tensor, seq_len: int, *, precision: str = "ieee") -> torch.Tensor:
    """DFT_N(k[:, :L]) / N as (2, D, N1, N2), in the order the conv kernel reads it."""
    channels = k.shape[0]
    n = fft_plan.fft_size(seq_len)
    n1, n2 = fft_plan.factor(n)
    cfg = launch_config(1, channels, n, k.device, k.dtype)
    spec = torch.empty((2, channels, n1, n2), dtype=k.dtype, device=k.device)
    _filter_spectrum_kernel[(triton.cdiv(channels, cfg.channels_per_program),)](
        k, *dft_matrices(n, k.dtype, k.device), spec,
        seq_len, channels, k.stride(0), k.stride(1), 1.0 / n,
        **_meta(n, cfg, k.dtype, precision),
    )
    return spec


def conv_with_spectrum(x: torch.Tensor, spec: torch.Tensor, *, conj: bool, precision: str = "ieee") -> torch.Tensor:
    """IDFT(DFT(x) * spec) (or * conj(spec)) along L, first L positions; out has x's strides."""
    batch, seq_len, channels = x.shape
    n = fft_plan.fft_size(seq_len)
    cfg = launch_config(batch, channels, n, x.device, x.dtype)
    out = torch.empty_like(x)  # x is dense (checked), so out gets the same layout
    _conv_kernel[(triton.cdiv(channels, cfg.channels_per_program), batch)](
        x, spec, *dft_matrices(n, x.dtype, x.device), out,
        seq_len, channels, *x.stride(), *out.stride(),
        CONJ=conj, **_meta(n, cfg, x.dtype, precision),
    )
    return out


def filter_grad(grad_y: torch.Tensor, x: torch.Tensor, *, precision: str = "ieee") -> torch.Tensor:
    """grad_k[d, s] = sum_{b,t} grad_y[b, t, d] x[b, t - s, d] for s < L, shape (D, L)."""
    batch, seq_len, channels = x.shape
    n = fft_plan.fft_size(seq_len)
    cfg = launch_config(batch, channels, n, x.device, x.dtype)
    batch_per_split = triton.cdiv(batch, cfg.n_splits)
    n_splits = triton.cdiv(batch, batch_per_split)
    parts = torch.empty((n_splits, channels, seq_len), dtype=x.dtype, device=x.device)
    _filter_grad_kernel[(triton.cdiv(channels, cfg.channels_per_program), n_splits)](
        grad_y, x, *dft_matrices(n, x.dtype, x.device), parts,
        batch, seq_len, channels, batch_per_split, 1.0 / n,
        *grad_y.stride(), *x.stride(), *parts.stride(),
        **_meta(n, cfg, x.dtype, precision),
    )
    return parts.sum(0)  # splits added in a fixed order


def _dense(t: torch.Tensor) -> torch.Tensor:
    """t itself if the kernels can read it (dense (B, L, D) or (D, B, L)), else a contiguous copy."""
    return t if fft_plan.layout(t) else t.contiguous()


class _TritonFFTConv(torch.autograd.Function):
    """u (B, L, D) -> y (B, L, D). forward / setup_context split and a jvp (torch.func.jvp/vjp)."""

    @staticmethod
    def forward(u: torch.Tensor, k: torch.Tensor, precision: str) -> torch.Tensor:
        spec = filter_spectrum(k, u.shape[1], precision=precision)
        return conv_with_spectrum(u, spec, conj=False, precision=precision)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        u, k, precision = inputs
        ctx.save_for_backward(u, k)
        ctx.save_for_forward(u, k)
        ctx.precision = precision

    @staticmethod
    def jvp(ctx, u_dot, k_dot, _precision_dot):
        u_dot = None if u_dot is None else _dense(u_dot)
        return bilinear_jvp(_TritonFFTConv.apply, *ctx.saved_tensors, u_dot, k_dot, ctx.precision)

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor):
        u, k = ctx.saved_tensors
        grad_y = _dense(grad_y)  # e.g. the stride-0 ones of y.sum()
        grad_u = grad_k = None
        if ctx.needs_input_grad[0]:
            # the filter spectrum again rather than saved: (2, D, N) is up to 4x the size of k
            spec = filter_spectrum(k, u.shape[1], precision=ctx.precision)
            grad_u = conv_with_spectrum(grad_y, spec, conj=True, precision=ctx.precision)
        if ctx.needs_input_grad[1]:
            grad_k = padded_filter_grad(filter_grad, grad_y, u, k, ctx.precision)
        return grad_u, grad_k, None


def kernels_interpreted() -> bool:
    """Whether the kernels were built for the Triton interpreter (TRITON_INTERPRET=1 at import)."""
    return built_for_interpreter(_conv_kernel)


def causal_conv_triton_fft(u: torch.Tensor, k: torch.Tensor, *, precision: str = "ieee") -> torch.Tensor:
    """Causal conv by the Triton Monarch-FFT kernels, u (B, L, D), k (D, L_k) -> (B, L, D).

    precision: "ieee" (default, IEEE fp32 products) or "tf32x3" (opt-in, fp32 only). Raises before
    any launch for what fft_plan.check_inputs refuses (dtype, FFT size, layout)."""
    if precision not in PRECISIONS:
        raise ValueError(f"triton_fft causal conv: unknown precision {precision!r}; known: {', '.join(PRECISIONS)}")
    fft_plan.check_inputs(u, k)
    if u.device.type != "cuda" and not kernels_interpreted():
        raise ValueError(
            "triton_fft causal conv: CPU tensors need the Triton interpreter, but this module was imported "
            "without it; set TRITON_INTERPRET=1 before anything imports kernels.fftconv.triton_fft"
        )
    return _TritonFFTConv.apply(u, k, precision)
