"""The Triton causal conv against the float64 oracle, run by the Triton interpreter on CPU.

The interpreter is slow (~20 ms per program), so the default cases are small: B=1,
D=13, L in {1, 20, 21, 39, 40, 64}, fp32 and fp64, forward and both gradients. L=257 and
L=1024 (5-65 s each) run only with PB_SLOW_TESTS=1. The tiled GPU code path (several
sequence tiles, block diagonals and batch splits) is exercised here by forcing small tiles.
On a CUDA machine the same tests run the compiled kernels.
"""
from __future__ import annotations

import os

import pytest
import torch
from triton_interpreter import DEVICE, TOLERANCE, draw, rel_l2, skip_unless_runnable

pytest.importorskip("triton")

import kernels  # noqa: E402
from kernels.fftconv import triton_toeplitz  # noqa: E402
from kernels.fftconv.reference import causal_conv_reference  # noqa: E402

skip_unless_runnable(triton_toeplitz.kernels_interpreted)

SLOW = pytest.mark.skipif(not os.environ.get("PB_SLOW_TESTS"), reason="slow in the Triton interpreter; set PB_SLOW_TESTS=1")
LENGTHS = [1, 20, 21, 39, 40, 64, pytest.param(257, marks=SLOW), pytest.param(1024, marks=SLOW)]


def errors_against_oracle(u, k, grad_y, run):
    """Relative L2 errors of (y, grad_u, grad_k) from `run(u, k)` on DEVICE against the oracle."""
    u64 = u.to(torch.float64).requires_grad_()
    k64 = k.to(torch.float64).requires_grad_()
    y64 = causal_conv_reference(u64, k64)
    exact = (y64.detach(), *torch.autograd.grad(y64, (u64, k64), grad_y))
    u_dev = u.to(DEVICE).requires_grad_()
    k_dev = k.to(DEVICE).requires_grad_()
    y = run(u_dev, k_dev)
    assert y.dtype == u.dtype and y.shape == u.shape
    got = (y.detach(), *torch.autograd.grad(y, (u_dev, k_dev), grad_y.to(DEVICE, u.dtype)))
    return [rel_l2(a, b) for a, b in zip(got, exact)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("seq_len", LENGTHS)
def test_triton_matches_oracle(seq_len, dtype):
    u, k, grad_y = draw(1, seq_len, 13, dtype, filter_len=seq_len + 2, seed=seq_len)
    errors = errors_against_oracle(u, k, grad_y, lambda a, b: kernels.causal_conv(a, b, backend="triton"))
    assert max(errors) <= TOLERANCE[dtype], f"rel L2 errors (y, grad_u, grad_k) = {errors}"


def test_triton_jvp_matches_the_oracle():
    # forward mode (torch.func.jvp), which the matrix-free Levenberg-Marquardt's products need
    from torch.func import jvp

    u, k, _ = draw(2, 21, 5, torch.float64, filter_len=23, seed=3)
    du, dk, _ = draw(2, 21, 5, torch.float64, filter_len=23, seed=4)
    _, expected = jvp(causal_conv_reference, (u, k), (du, dk))
    _, got = jvp(lambda a, b: kernels.causal_conv(a, b, backend="triton"),
                 (u.to(DEVICE), k.to(DEVICE)), (du.to(DEVICE), dk.to(DEVICE)))
    assert rel_l2(got, expected) <= TOLERANCE[torch.float64]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
def test_tiled_path_with_batch_splits(monkeypatch, dtype):
    # The GPU's small tiles on CPU: L=57 spans 4 sequence tiles of 16 (the last partial), B=37
    # spans 3 batch tiles and 2 batch splits, so every loop, mask and the partial-sum fold runs.
    monkeypatch.setattr(
        triton_toeplitz, "launch_config", lambda *args: triton_toeplitz.LaunchConfig(block_l=16, block_b=16, n_splits=2)
    )
    u, k, grad_y = draw(37, 57, 3, dtype, filter_len=60, seed=1)
    errors = errors_against_oracle(u, k, grad_y, lambda a, b: kernels.causal_conv(a, b, backend="triton"))
    assert max(errors) <= TOLERANCE[dtype], f"rel L2 errors (y, grad_u, grad_k) = {errors}"


def test_non_contiguous_inputs_and_unused_filter_tail():
    g = torch.Generator().manual_seed(4)
    u = torch.randn(3, 5, 21, generator=g, dtype=torch.float64).transpose(1, 2).to(DEVICE)  # (B, L, D) view
    k = torch.randn(5, 60, generator=g, dtype=torch.float64)[:, ::2].to(DEVICE)  # (D, 30), stride 2
    assert not u.is_contiguous() and not k.is_contiguous()
    k = k.requires_grad_()
    y = kernels.causal_conv(u, k, backend="triton")
    assert rel_l2(y, causal_conv_reference(u.cpu(), k.detach().cpu())) <= 1e-12
    (grad_k,) = torch.autograd.grad(y.sum(), k)  # grad_y = ones: an expanded, stride-0 gradient
    assert torch.all(grad_k[:, 21:] == 0)


def test_fixed_filter_and_empty_batch():
    u, k, grad_y = draw(2, 9, 3, torch.float64, seed=4)
    u_dev = u.to(DEVICE).requires_grad_()
    (grad_u,) = torch.autograd.grad(kernels.causal_conv(u_dev, k.to(DEVICE), backend="triton"), (u_dev,),
                                    grad_y.to(DEVICE))
    u64 = u.detach().requires_grad_()
    (expected,) = torch.autograd.grad(causal_conv_reference(u64, k), (u64,), grad_y)
    assert rel_l2(grad_u, expected) <= 1e-12
    empty = kernels.causal_conv(torch.zeros(0, 5, 3, device=DEVICE), torch.zeros(3, 5, device=DEVICE), backend="triton")
    assert empty.shape == (0, 5, 3)


def test_unknown_precision_is_rejected():
    u, k, _ = draw(1, 4, 2, torch.float32)
    with pytest.raises(ValueError, match="known: ieee, tf32x3"):
        triton_toeplitz.causal_conv_triton(u.to(DEVICE), k.to(DEVICE), precision="tf32")


# --- fp32 means IEEE fp32 (tf32_emulating_interpreter: tests/conftest.py) -------------------


def test_default_fp32_dots_are_ieee(tf32_emulating_interpreter):
    u, k, grad_y = draw(4, 40, 3, torch.float32, seed=9)
    errors = errors_against_oracle(u, k, grad_y, lambda a, b: kernels.causal_conv(a, b, backend="triton"))
    assert set(tf32_emulating_interpreter) == {"IEEE"} and len(tf32_emulating_interpreter) >= 3
    assert max(errors) <= 1e-6, f"rel L2 errors (y, grad_u, grad_k) = {errors}"


def test_tf32_would_be_caught(tf32_emulating_interpreter):
    # The detector is live: the same forward with TF32 dots misses the 1e-6 tolerance by far.
    u, k, _ = draw(4, 40, 3, torch.float32, seed=9)
    y = triton_toeplitz.toeplitz_matmul(u, k, anti_causal=False, precision="tf32")
    error = rel_l2(y, causal_conv_reference(u, k))
    assert set(tf32_emulating_interpreter) == {"TF32"}
    assert error > 1e-5, error


def test_opt_in_tf32x3_stays_near_fp32(tf32_emulating_interpreter):
    u, k, grad_y = draw(4, 40, 3, torch.float32, seed=9)
    errors = errors_against_oracle(
        u, k, grad_y, lambda a, b: triton_toeplitz.causal_conv_triton(a, b, precision="tf32x3")
    )
    assert set(tf32_emulating_interpreter) == {"TF32x3"}
    assert max(errors) <= 1e-6, f"rel L2 errors (y, grad_u, grad_k) = {errors}"
