"""The causal conv: convention, every torch backend against the float64 oracle, input errors.

Tolerances: relative L2 error <= 1e-6 in fp32 and <= 1e-12 in fp64, forward and both
gradients (measured floors are ~100x below; results/kernels/error_floor_cpu.json).
The Triton backend is tested in tests/test_kernels_triton.py (interpreter, small sizes).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import kernels
from kernels.fftconv import causal_conv_reference, select_backend

TOLERANCE = {torch.float32: 1e-6, torch.float64: 1e-12}
TORCH_BACKENDS = ("direct", "fft", "reference", "auto")
# (L, D): every length at D=13, the short ones also at D=111 (a D*L*L Toeplitz stays small).
SHAPES = [(L, 13) for L in (1, 20, 21, 39, 40, 64, 257, 1024)] + [(L, 111) for L in (1, 20, 21, 39, 40, 64)]


def rel_l2(approx: torch.Tensor, exact: torch.Tensor) -> float:
    exact = exact.to(torch.float64)
    return float((approx.detach().to(torch.float64) - exact).norm() / exact.norm().clamp_min(1e-300))


def draw(batch, seq_len, channels, dtype, *, filter_len=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(batch, seq_len, channels, generator=g, dtype=torch.float64).to(dtype)
    k = torch.randn(channels, filter_len or seq_len, generator=g, dtype=torch.float64).to(dtype)
    grad_y = torch.randn(batch, seq_len, channels, generator=g, dtype=torch.float64)
    return u, k, grad_y


def oracle_with_grads(u, k, grad_y):
    u64 = u.detach().to(torch.float64).requires_grad_()
    k64 = k.detach().to(torch.float64).requires_grad_()
    y = causal_conv_reference(u64, k64)
    grad_u, grad_k = torch.autograd.grad(y, (u64, k64), grad_y)
    return y.detach(), grad_u, grad_k


def backend_with_grads(u, k, grad_y, backend):
    u = u.detach().requires_grad_()
    k = k.detach().requires_grad_()
    y = kernels.causal_conv(u, k, backend=backend)
    grad_u, grad_k = torch.autograd.grad(y, (u, k), grad_y.to(y.dtype))
    return y.detach(), grad_u, grad_k


# --- the convention -------------------------------------------------------------------------


def test_convention_hand_computed_example():
    # channel 0: u = 1, 2, 3 and k = 1, 10, 100 (, 1000 unused): y_t = sum_s k_s u_{t-s}
    #   y_0 = 1*1 = 1;  y_1 = 1*2 + 10*1 = 12;  y_2 = 1*3 + 10*2 + 100*1 = 123
    # channel 1: an impulse at t=0 returns the filter itself: y = k[1, :3] = 7, -1, 0.5
    u = torch.tensor([[[1.0, 1.0], [2.0, 0.0], [3.0, 0.0]]], dtype=torch.float64)
    k = torch.tensor([[1.0, 10.0, 100.0, 1000.0], [7.0, -1.0, 0.5, 9.0]], dtype=torch.float64)
    expected = torch.tensor([[[1.0, 7.0], [12.0, -1.0], [123.0, 0.5]]], dtype=torch.float64)
    for backend in ("direct", "fft", "reference", "auto"):
        y = kernels.causal_conv(u, k, backend=backend)
        torch.testing.assert_close(y, expected, rtol=1e-14, atol=1e-13, msg=backend)


def test_oracle_matches_numpy_convolve():
    u, k, _ = draw(2, 17, 3, torch.float64, filter_len=20, seed=5)
    y = causal_conv_reference(u, k)
    for b in range(2):
        for d in range(3):
            expected = np.convolve(u[b, :, d].numpy(), k[d, :17].numpy())[:17]
            np.testing.assert_allclose(y[b, :, d].numpy(), expected, rtol=1e-13, atol=1e-13)


# --- every backend against the oracle ---------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("seq_len,channels", SHAPES, ids=[f"L{L}-D{D}" for L, D in SHAPES])
@pytest.mark.parametrize("backend", TORCH_BACKENDS)
def test_backend_matches_oracle(backend, seq_len, channels, dtype):
    u, k, grad_y = draw(1, seq_len, channels, dtype, filter_len=seq_len + 3, seed=seq_len)
    exact = oracle_with_grads(u, k, grad_y)
    got = backend_with_grads(u, k, grad_y, backend)
    for name, approx, truth in zip(("y", "grad_u", "grad_k"), got, exact):
        assert approx.dtype == dtype and approx.shape == truth.shape, name
        err = rel_l2(approx, truth)
        assert err <= TOLERANCE[dtype], f"{backend} {name}: rel L2 error {err:.2e} > {TOLERANCE[dtype]:.0e}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("seq_len,channels", [(1, 13), (21, 13), (40, 111), (257, 13)], ids=["L1", "L21", "L40", "L257"])
@pytest.mark.parametrize("backend", TORCH_BACKENDS)
def test_channels_first_layout_matches_oracle(backend, seq_len, channels, dtype):
    """u (D, B, L) -> y (D, B, L): the same conv, forward and both gradients."""
    u, k, grad_y = draw(3, seq_len, channels, dtype, filter_len=seq_len + 2, seed=seq_len + 1)
    exact = oracle_with_grads(u, k, grad_y)
    u_first = u.permute(2, 0, 1).contiguous().requires_grad_()
    k = k.detach().requires_grad_()
    y = kernels.causal_conv(u_first, k, backend=backend, channels_first=True)
    assert y.shape == (channels, 3, seq_len) and y.is_contiguous()
    grad_u, grad_k = torch.autograd.grad(y, (u_first, k), grad_y.permute(2, 0, 1).to(dtype))
    got = (y.detach().permute(1, 2, 0), grad_u.permute(1, 2, 0), grad_k)
    for name, approx, truth in zip(("y", "grad_u", "grad_k"), got, exact):
        err = rel_l2(approx, truth)
        assert err <= TOLERANCE[dtype], f"{backend} channels-first {name}: rel L2 error {err:.2e}"


def test_channels_first_direct_is_the_layout_free_kernel():
    """The (B, L, D) direct conv is the channels-first one between layout copies: same bits."""
    u, k, _ = draw(4, 40, 64, torch.float32, seed=5)
    y_first = kernels.causal_conv(u.permute(2, 0, 1).contiguous(), k, backend="direct", channels_first=True)
    assert torch.equal(y_first.permute(1, 2, 0), kernels.causal_conv(u, k, backend="direct"))
    with pytest.raises(ValueError, match=r"channels_first=True u must have shape \(D, B, L\)"):
        kernels.causal_conv(torch.zeros(3, 5), k, channels_first=True)
    with pytest.raises(ValueError, match="k has 64 channels but u has D=3"):
        kernels.causal_conv(torch.zeros(3, 2, 5), k, channels_first=True)


@pytest.mark.parametrize("backend", ("direct", "fft"))
def test_batched_and_filter_tail_unused(backend):
    # B > 1 exercises the batch sum in grad_k; k[:, L:] must not influence y and gets zero grad.
    u, k, grad_y = draw(3, 21, 5, torch.float64, filter_len=30, seed=11)
    y, grad_u, grad_k = backend_with_grads(u, k, grad_y, backend)
    y_ref, grad_u_ref, grad_k_ref = oracle_with_grads(u, k, grad_y)
    assert rel_l2(y, y_ref) <= 1e-12 and rel_l2(grad_u, grad_u_ref) <= 1e-12 and rel_l2(grad_k, grad_k_ref) <= 1e-12
    assert torch.all(grad_k[:, 21:] == 0)
    k_other_tail = k.clone()
    k_other_tail[:, 21:] = 1e6
    assert torch.equal(kernels.causal_conv(u, k_other_tail, backend=backend), y)


@pytest.mark.parametrize("backend", ("direct", "fft", "auto"))
def test_non_contiguous_inputs(backend):
    g = torch.Generator().manual_seed(3)
    u_bdl = torch.randn(2, 7, 20, generator=g, dtype=torch.float64)  # stored (B, D, L)
    k_wide = torch.randn(7, 50, generator=g, dtype=torch.float64)
    u = u_bdl.transpose(1, 2)  # (B, L, D) view, not contiguous
    k = k_wide[:, ::2]  # (D, 25), stride 2
    assert not u.is_contiguous() and not k.is_contiguous()
    y = kernels.causal_conv(u, k, backend=backend)
    assert y.is_contiguous()
    assert rel_l2(y, causal_conv_reference(u.contiguous(), k.contiguous())) <= 1e-12


@pytest.mark.parametrize("backend", ("direct", "fft", "reference"))
def test_fixed_filter_and_empty_inputs(backend):
    # A hand-set (constant) filter: only grad_u is asked for.
    u, k, grad_y = draw(2, 9, 3, torch.float64, seed=4)
    u.requires_grad_()
    (grad_u,) = torch.autograd.grad(kernels.causal_conv(u, k, backend=backend), (u,), grad_y)
    u64 = u.detach().requires_grad_()
    (expected,) = torch.autograd.grad(causal_conv_reference(u64, k), (u64,), grad_y)
    assert rel_l2(grad_u, expected) <= 1e-12
    # An empty batch or zero channels give empty outputs and gradients, not a library error.
    for u_shape, k_shape in (((0, 5, 3), (3, 5)), ((2, 5, 0), (0, 5))):
        u = torch.zeros(u_shape, requires_grad=True)
        k = torch.zeros(k_shape, requires_grad=True)
        y = kernels.causal_conv(u, k, backend=backend)
        grads = torch.autograd.grad(y.sum(), (u, k), allow_unused=True)
        assert y.shape == u_shape and grads[0].shape == u_shape


def test_float16_and_bfloat16_run_on_torch_backends():
    u, k, _ = draw(1, 12, 3, torch.float64, seed=2)
    exact = causal_conv_reference(u, k)
    for dtype in (torch.bfloat16, torch.float16):
        for backend in ("direct", "fft"):
            y = kernels.causal_conv(u.to(dtype), k.to(dtype), backend=backend)
            assert y.dtype == dtype
            assert rel_l2(y, exact) < 3e-2


# --- dispatch -------------------------------------------------------------------------------


def test_auto_on_cpu_is_direct_for_short_and_fft_for_long():
    from kernels.fftconv.dispatch import CPU_DIRECT_MAX_LEN

    short = torch.zeros(1, CPU_DIRECT_MAX_LEN, 2)
    long = torch.zeros(1, CPU_DIRECT_MAX_LEN + 1, 2)
    k = torch.zeros(2, CPU_DIRECT_MAX_LEN + 1)
    assert select_backend(short, k) == "direct"
    assert select_backend(long, k) == "fft"
    for dtype in (torch.float32, torch.float64):
        for seq_len in (1, 40, 4096):
            assert select_backend(torch.zeros(1, seq_len, 1, dtype=dtype), torch.zeros(1, seq_len, dtype=dtype)) != "triton"


@pytest.mark.parametrize("backend", ["direct", "fft"])
def test_torch_func_jacobians_and_vmap_match_the_oracle(backend):
    # The Levenberg-Marquardt optimizer builds Jacobians with torch.func.jacrev, which needs
    # every custom autograd.Function on the path to support functorch transforms.
    from torch.func import jacrev, vmap

    u, k, _ = draw(3, 7, 5, torch.float64, filter_len=9, seed=11)
    conv = lambda a, b: kernels.causal_conv(a, b, backend=backend)  # noqa: E731
    for arg in (0, 1):
        expected = jacrev(causal_conv_reference, argnums=arg)(u, k)
        assert torch.allclose(jacrev(conv, argnums=arg)(u, k), expected, rtol=0, atol=1e-12)
    stacked = vmap(conv)(torch.stack([u, 2 * u]), torch.stack([k, k]))
    assert torch.allclose(stacked[1], 2 * causal_conv_reference(u, k), rtol=0, atol=1e-12)


@pytest.mark.parametrize("channels_first", [False, True], ids=["bld", "dbl"])
@pytest.mark.parametrize("backend", ["direct", "fft"])
def test_torch_func_jvp_and_vjp_match_the_oracle(backend, channels_first):
    # The matrix-free Levenberg-Marquardt takes Gauss-Newton products J^T (J v) by torch.func.jvp
    # and vjp: forward mode must go through every backend's autograd.Function, both layouts.
    from torch.func import jvp, vjp

    u, k, grad_y = draw(3, 7, 5, torch.float64, filter_len=9, seed=12)
    du, dk, _ = draw(3, 7, 5, torch.float64, filter_len=9, seed=13)
    if channels_first:
        conv = lambda a, b: kernels.causal_conv(a.permute(2, 0, 1), b, backend=backend,  # noqa: E731
                                                channels_first=True).permute(1, 2, 0)
    else:
        conv = lambda a, b: kernels.causal_conv(a, b, backend=backend)  # noqa: E731
    _, expected = jvp(causal_conv_reference, (u, k), (du, dk))
    _, got = jvp(conv, (u, k), (du, dk))
    assert torch.allclose(got, expected, rtol=0, atol=1e-12)
    _, only_k = jvp(lambda b: conv(u, b), (k,), (dk,))
    assert torch.allclose(only_k, causal_conv_reference(u, dk), rtol=0, atol=1e-12)
    pull_expected = vjp(causal_conv_reference, u, k)[1](grad_y)
    pull_got = vjp(conv, u, k)[1](grad_y)
    for a, b in zip(pull_got, pull_expected):
        assert torch.allclose(a, b, rtol=0, atol=1e-12)


# --- fp32 means IEEE fp32 -------------------------------------------------------------------


def test_direct_matmuls_run_at_highest_precision_even_if_caller_lowered_it(monkeypatch):
    # A caller may enable TF32/bf16 matmuls globally ("high"/"medium"). The direct backend must
    # still run every bmm, forward and backward, at "highest" and restore the caller's setting.
    seen = []
    real_bmm = torch.bmm

    def spying_bmm(*args, **kwargs):
        seen.append(torch.get_float32_matmul_precision())
        return real_bmm(*args, **kwargs)

    monkeypatch.setattr(torch, "bmm", spying_bmm)
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        u, k, grad_y = draw(2, 40, 5, torch.float32, seed=7)
        y, grad_u, grad_k = backend_with_grads(u, k, grad_y, "direct")
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision(previous)
    assert len(seen) == 3 and set(seen) == {"highest"}, seen
    exact = oracle_with_grads(u, k, grad_y)
    assert max(rel_l2(a, b) for a, b in zip((y, grad_u, grad_k), exact)) <= 1e-6


# --- bad input -> clear errors ----------------------------------------------------------------


def _ok_u():
    return torch.zeros(2, 5, 3)


def _ok_k():
    return torch.zeros(3, 8)


@pytest.mark.parametrize(
    "u,k,backend,error,match",
    [
        (_ok_u(), _ok_k(), "cufft", ValueError, "known backends: auto, direct, fft, triton, triton_fft, reference"),
        ([[1.0]], _ok_k(), "auto", TypeError, "u must be a torch.Tensor"),
        (torch.zeros(5, 3), _ok_k(), "auto", ValueError, r"u must have shape \(B, L, D\)"),
        (_ok_u(), torch.zeros(3, 8, 1), "auto", ValueError, r"k must have shape \(D, L_k\)"),
        (_ok_u(), torch.zeros(4, 8), "auto", ValueError, "k has 4 channels but u has D=3"),
        (_ok_u(), torch.zeros(3, 4), "direct", ValueError, "L=5 exceeds the filter length L_k=4"),
        (torch.zeros(2, 0, 3), _ok_k(), "auto", ValueError, "L must be >= 1"),
        (_ok_u(), _ok_k().double(), "auto", TypeError, "same dtype"),
        (_ok_u().long(), _ok_k().long(), "auto", TypeError, "real floating dtype"),
        (_ok_u().to(torch.complex64), _ok_k().to(torch.complex64), "fft", TypeError, "real floating dtype"),
        (_ok_u(), torch.zeros(3, 8, device="meta"), "auto", ValueError, "same device"),
        (_ok_u().half(), _ok_k().half(), "triton", TypeError, "triton backend supports float32 and float64"),
    ],
    ids=["backend", "u-type", "u-rank", "k-rank", "channels", "too-long", "empty", "dtypes",
         "integer", "complex", "devices", "triton-dtype"],
)
def test_bad_input_raises_clear_error(u, k, backend, error, match):
    with pytest.raises(error, match=match):
        kernels.causal_conv(u, k, backend=backend)


@pytest.mark.parametrize("backend", ["triton", "triton_fft"])
def test_triton_on_cpu_without_interpreter_is_a_clear_error(monkeypatch, backend):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match=f"the {backend} backend needs CUDA.*TRITON_INTERPRET=1"):
        kernels.causal_conv(_ok_u(), _ok_k(), backend=backend)
