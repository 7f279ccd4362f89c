"""The Triton Monarch-FFT conv (backend triton_fft) against the float64 oracle, in the Triton interpreter.

L in {64, 257, 1024} (FFT sizes 256, 1024, 2048: a square and a 1:2 factorisation), odd D,
B >= 1, fp32 and fp64, forward and both gradients; the channels-first layout BaseConv hands
over; the tiled path (several channel tiles, a partial one, batch splits); the inputs refused
before any launch; IEEE fp32 dots by default; `auto`'s measured crossover on CUDA, from a fake
file. On a CUDA machine the same tests run the compiled kernels.
"""
from __future__ import annotations

import json

import pytest
import torch
from triton_interpreter import DEVICE, TOLERANCE, draw, rel_l2, skip_unless_runnable

pytest.importorskip("triton")

import kernels  # noqa: E402
from kernels.fftconv import dispatch, fft_plan, triton_fft  # noqa: E402
from kernels.fftconv.reference import causal_conv_reference  # noqa: E402

skip_unless_runnable(triton_fft.kernels_interpreted)


def errors_against_oracle(u, k, grad_y, run, *, channels_first=False):
    """Relative L2 errors of (y, grad_u, grad_k) from `run(u, k)` on DEVICE against the oracle."""
    u64 = u.to(torch.float64).requires_grad_()
    k64 = k.to(torch.float64).requires_grad_()
    y64 = causal_conv_reference(u64, k64)
    exact = (y64.detach(), *torch.autograd.grad(y64, (u64, k64), grad_y))
    u_dev = (u.permute(2, 0, 1).contiguous() if channels_first else u).to(DEVICE).requires_grad_()
    k_dev = k.to(DEVICE).requires_grad_()
    y = run(u_dev, k_dev)
    g_dev = grad_y.to(DEVICE, u.dtype)
    if channels_first:
        assert y.shape == u_dev.shape and y.is_contiguous()
        g_dev = g_dev.permute(2, 0, 1).contiguous()
    assert y.dtype == u.dtype
    got = list(torch.autograd.grad(y, (u_dev, k_dev), g_dev))
    y = y.detach()
    if channels_first:
        y, got[0] = y.permute(1, 2, 0), got[0].permute(1, 2, 0)
    return [rel_l2(a, b) for a, b in zip((y, *got), exact)]


def conv(a, b):
    return kernels.causal_conv(a, b, backend="triton_fft")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
@pytest.mark.parametrize("batch,seq_len,channels", [(1, 64, 5), (2, 257, 3), (2, 1024, 3), (3, 1, 1), (1, 129, 7)])
def test_triton_fft_matches_oracle(batch, seq_len, channels, dtype):
    u, k, grad_y = draw(batch, seq_len, channels, dtype, filter_len=seq_len + 3, seed=seq_len)
    errors = errors_against_oracle(u, k, grad_y, conv)
    assert max(errors) <= TOLERANCE[dtype], f"rel L2 errors (y, grad_u, grad_k) = {errors}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
def test_channels_first_layout_is_read_in_place(dtype):
    # BaseConv's (D, B, L) activations: read and written with their own strides, no copies
    u, k, grad_y = draw(3, 100, 5, dtype, seed=2)
    run = lambda a, b: kernels.causal_conv(a, b, backend="triton_fft", channels_first=True)  # noqa: E731
    errors = errors_against_oracle(u, k, grad_y, run, channels_first=True)
    assert max(errors) <= TOLERANCE[dtype], f"rel L2 errors (y, grad_u, grad_k) = {errors}"


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["fp32", "fp64"])
def test_tiled_path_with_batch_splits(monkeypatch, dtype):
    # GPU-like tiles on CPU: D=5 in tiles of 2 (the last one partial), B=5 in 3 batch splits of
    # the filter gradient (the last one short), so every channel mask and the split sum run.
    monkeypatch.setattr(triton_fft, "launch_config", lambda *args: triton_fft.LaunchConfig(2, 4, 3))
    u, k, grad_y = draw(5, 200, 5, dtype, filter_len=210, seed=1)
    errors = errors_against_oracle(u, k, grad_y, conv)
    assert max(errors) <= TOLERANCE[dtype], f"rel L2 errors (y, grad_u, grad_k) = {errors}"


def test_dft_matrices_are_the_dft():
    # the Monarch factors reproduce torch.fft.fft of a length-N signal, in the kernels' frequency order
    n = 512
    (f1r, f1i), (f2r, f2i), (twr, twi) = triton_fft.dft_matrices(n, torch.float64, torch.device("cpu"))
    n1, n2 = fft_plan.factor(n)
    assert (n1, n2) == (16, 32)
    f1, f2, tw = torch.complex(f1r, f1i), torch.complex(f2r, f2i), torch.complex(twr, twi)
    x = torch.randn(n, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    spectrum = ((f1 @ x.reshape(n1, n2).to(f1.dtype)) * tw) @ f2  # [k1, k2] = X[k1 + N1 k2]
    assert torch.allclose(spectrum.t().reshape(n), torch.fft.fft(x), rtol=0, atol=1e-11)


def test_jvp_and_stride_zero_gradient():
    from torch.func import jvp

    u, k, _ = draw(2, 21, 5, torch.float64, filter_len=23, seed=3)
    du, dk, _ = draw(2, 21, 5, torch.float64, filter_len=23, seed=4)
    _, expected = jvp(causal_conv_reference, (u, k), (du, dk))
    _, got = jvp(conv, (u.to(DEVICE), k.to(DEVICE)), (du.to(DEVICE), dk.to(DEVICE)))
    assert rel_l2(got, expected) <= TOLERANCE[torch.float64]
    k_dev = k.to(DEVICE).requires_grad_()
    (grad_k,) = torch.autograd.grad(conv(u.to(DEVICE), k_dev).sum(), k_dev)  # grad_y: expanded ones
    k64 = k.clone().requires_grad_()
    (expected_k,) = torch.autograd.grad(causal_conv_reference(u, k64).sum(), k64)
    assert rel_l2(grad_k, expected_k) <= TOLERANCE[torch.float64] and torch.all(grad_k[:, 21:] == 0)


def test_baseconv_with_triton_fft_matches_direct():
    from bench.harness.config import make_run_config

    models = []
    for backend in ("direct", "triton_fft"):
        cfg = make_run_config(task={"name": "multiply"}, dtype="float64",
                              model={"name": "baseconv", "params": {"width": 16, "depth": 1, "conv_backend": backend}})
        torch.manual_seed(0)
        models.append(cfg.build_model().double())
    models[1].load_state_dict(models[0].state_dict())
    x = torch.randn(2, 40, 20, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(models[1](x), models[0](x), rtol=0, atol=1e-12)


# --- inputs refused before any launch ---------------------------------------------------------


@pytest.fixture
def no_launch(monkeypatch):
    """Fail the test if anything reaches a kernel launch."""
    def refuse(*args, **kwargs):
        raise AssertionError("a kernel was launched")

    for name in ("filter_spectrum", "conv_with_spectrum", "filter_grad"):
        monkeypatch.setattr(triton_fft, name, refuse)


@pytest.mark.parametrize("dtype,max_len", [(torch.float32, 8192), (torch.float64, 4096)])
def test_too_long_is_refused(no_launch, dtype, max_len):
    assert fft_plan.max_len(dtype) == max_len
    u, k = torch.zeros(1, max_len + 1, 1, dtype=dtype), torch.zeros(1, max_len + 1, dtype=dtype)
    with pytest.raises(ValueError, match=f"takes L <= {max_len} in {dtype}.*FFT size {2 * max_len}"):
        conv(u.to(DEVICE), k.to(DEVICE))
    with pytest.raises(ValueError, match="takes L <="):
        triton_fft.causal_conv_triton_fft(u.to(DEVICE), k.to(DEVICE))


def test_non_contiguous_u_is_refused(no_launch):
    u = torch.zeros(2, 8, 6, device=DEVICE)[:, ::2, :]  # (2, 4, 6) with a stride-2 sequence axis
    with pytest.raises(ValueError, match=r"dense in \(B, L, D\) or channels-first.*u.contiguous\(\)"):
        conv(u, torch.zeros(6, 4, device=DEVICE))
    swapped = torch.zeros(2, 6, 4, device=DEVICE).transpose(1, 2)  # (B, L, D) with L fastest: neither dense layout
    with pytest.raises(ValueError, match="pass u.contiguous"):
        triton_fft.causal_conv_triton_fft(swapped, torch.zeros(6, 4, device=DEVICE))


@pytest.mark.parametrize("dtype", [torch.complex64, torch.int32, torch.float16])
def test_complex_integer_and_half_dtypes_are_refused(no_launch, dtype):
    u, k = torch.zeros(1, 4, 2, dtype=dtype, device=DEVICE), torch.zeros(2, 4, dtype=dtype, device=DEVICE)
    with pytest.raises(TypeError, match="floating dtype|supports float32 and float64"):
        conv(u, k)
    with pytest.raises(TypeError, match="supports float32 and float64"):
        triton_fft.causal_conv_triton_fft(u, k)


def test_mixed_dtypes_are_refused(no_launch):
    u, k = torch.zeros(1, 4, 2, device=DEVICE), torch.zeros(2, 4, dtype=torch.float64, device=DEVICE)
    with pytest.raises(TypeError, match="same dtype"):
        triton_fft.causal_conv_triton_fft(u, k)


def test_unknown_precision_is_refused(no_launch):
    u, k, _ = draw(1, 4, 2, torch.float32)
    with pytest.raises(ValueError, match="known: ieee, tf32x3"):
        triton_fft.causal_conv_triton_fft(u.to(DEVICE), k.to(DEVICE), precision="tf32")


# --- fp32 means IEEE fp32 (tf32_emulating_interpreter: tests/conftest.py) -------------------


def test_default_fp32_dots_are_ieee(tf32_emulating_interpreter):
    u, k, grad_y = draw(2, 100, 3, torch.float32, seed=9)
    errors = errors_against_oracle(u, k, grad_y, conv)
    assert set(tf32_emulating_interpreter) == {"IEEE"} and len(tf32_emulating_interpreter) >= 12
    assert max(errors) <= 1e-6, f"rel L2 errors (y, grad_u, grad_k) = {errors}"


def test_tf32_would_be_caught(tf32_emulating_interpreter):
    u, k, _ = draw(2, 100, 3, torch.float32, seed=9)
    spec = triton_fft.filter_spectrum(k, 100, precision="tf32")
    y = triton_fft.conv_with_spectrum(u, spec, conj=False, precision="tf32")
    assert set(tf32_emulating_interpreter) == {"TF32"}
    assert rel_l2(y, causal_conv_reference(u, k)) > 1e-5


def test_opt_in_tf32x3_stays_near_fp32(tf32_emulating_interpreter):
    u, k, grad_y = draw(2, 100, 3, torch.float32, seed=9)
    errors = errors_against_oracle(u, k, grad_y, lambda a, b: triton_fft.causal_conv_triton_fft(a, b, precision="tf32x3"))
    assert set(tf32_emulating_interpreter) == {"TF32x3"}
    assert max(errors) <= 1e-6, f"rel L2 errors (y, grad_u, grad_k) = {errors}"


# --- auto on CUDA: the measured crossover ----------------------------------------------------


def test_auto_without_a_crossover_file_keeps_the_default(tmp_path):
    dispatch.load_crossover.cache_clear()
    for seq_len, expected in ((40, "triton"), (256, "triton"), (257, "fft"), (4096, "fft")):
        assert dispatch.cuda_backend(seq_len, torch.float32, "NVIDIA H200", tmp_path) == expected
    assert dispatch.cuda_backend(40, torch.float16, "NVIDIA H200", tmp_path) == "fft"


def test_auto_follows_a_measured_crossover_file(tmp_path):
    dispatch.load_crossover.cache_clear()
    segments = {"float32": [{"max_len": 128, "backend": "triton"}, {"max_len": 8192, "backend": "triton_fft"}],
                "float64": [{"max_len": 512, "backend": "triton"}, {"max_len": 8192, "backend": "triton_fft"}]}
    assert dispatch.device_slug("NVIDIA H100 80GB HBM3") == "nvidia_h100_80gb_hbm3"
    (tmp_path / "crossover_nvidia_h100_80gb_hbm3.json").write_text(json.dumps({"segments": segments}))
    choose = lambda L, dtype=torch.float32: dispatch.cuda_backend(L, dtype, "NVIDIA H100 80GB HBM3", tmp_path)  # noqa: E731
    assert [choose(L) for L in (40, 128, 129, 1024, 8192, 8193)] == [
        "triton", "triton", "triton_fft", "triton_fft", "triton_fft", "fft"]
    # fp64: triton_fft only up to its own limit (L = 4096), fft past it even inside the segment
    assert [choose(L, torch.float64) for L in (512, 513, 4096, 4097)] == ["triton", "triton_fft", "triton_fft", "fft"]
    assert dispatch.cuda_backend(40, torch.float32, "NVIDIA H200", tmp_path) == "triton"  # another GPU: no file
    (tmp_path / "crossover_bad.json").write_text(json.dumps({"segments": {"float32": [{"max_len": 9, "backend": "cuFFT"}]}}))
    with pytest.raises(ValueError, match="backends in"):
        dispatch.cuda_backend(40, torch.float32, "bad", tmp_path)
    dispatch.load_crossover.cache_clear()


def test_auto_on_cpu_never_picks_triton_fft():
    for seq_len in (1, 64, 65, 4096):
        u = torch.zeros(1, seq_len, 1)
        assert kernels.select_backend(u, torch.zeros(1, seq_len)) in ("direct", "fft")
