"""Speed of the causal conv backends (and nn.Conv1d) at the paper's shapes and over L.

    pytest bench/benchmarks/test_bench_kernels.py --profile ci --benchmark-json results/kernels/bench_cpu.json
    python -m bench kernel-plot results/kernels/bench_cpu.json

Groups: `conv-fwd` (forward) and `conv-fwdbwd` (forward + grad_u + grad_k), fp32, TF32 off.
Each case times one call including a device synchronise (wall time, pytest-benchmark) and
on CUDA also device time (triton.testing.do_bench, median ms). extra_info carries the shape,
the achieved GB/s (minimal traffic: read u, k (and grad_y), write y (and grad_u, grad_k)
once, over the median time) and the relative L2 errors against the float64 oracle (on a
2 x L x 16 slice of the same inputs).

Shapes:
  paper    B=1024 (64 on CPU in the ci profile, 8 in smoke), L in {20, 21, 39, 40}, D in {64, 256}
  scaling  L in {256, 1024, 4096}, B x D = 64 x 768: GPU only (skips on CPU)
  small    L in {64, 256, 1024}, B x D = 4 x 64: the CPU view of the direct/fft crossover
Triton skips on CPU (the interpreter is a correctness tool, not a timing). On CPU the cases
run on one thread (the CI machine's 2 cores are shared; one thread gives stable medians), and
each case takes as many rounds (5 to 50) as fit in about half a second.
"""
from __future__ import annotations

import pytest
import torch

from bench.benchmarks.kernel_cases import draw, relative_errors, run_backend, traffic_bytes
from bench.harness.train import synchronize

BACKENDS = ("direct", "fft", "triton", "triton_fft", "conv1d")
PAPER = [("paper", L, D) for D in (64, 256) for L in (20, 21, 39, 40)]
SCALING = [("scaling", L, 768) for L in (256, 1024, 4096)]
SMALL = [("small", L, 64) for L in (64, 256, 1024)]
SHAPES = PAPER + SCALING + SMALL


def batch_for(suite: str, profile: str, device: str) -> int:
    if suite == "scaling":
        return 64
    if suite == "small":
        return 4
    if profile == "smoke":
        return 8
    return 64 if (device == "cpu" and profile == "ci") else 1024


def skip_reason(backend: str, suite: str, seq_len: int, channels: int, profile: str, device: str) -> str | None:
    if backend in ("triton", "triton_fft") and device != "cuda":
        return "triton is timed on a CUDA GPU only (on CPU it runs in the interpreter, for correctness tests)"
    if suite == "scaling" and device != "cuda":
        return "GPU-only shape: B x D = 64 x 768 at L up to 4096 takes minutes per round on CPU"
    if profile == "smoke" and (suite != "paper" or seq_len not in (20, 40) or channels != 64):
        return "not in the smoke profile"
    if backend == "direct" and device == "cuda":
        toeplitz_bytes = 2 * channels * seq_len * seq_len * 4  # T forward, G U^T backward
        if toeplitz_bytes > 0.4 * torch.cuda.get_device_properties(0).total_memory:
            return f"direct needs D*L*L Toeplitz matrices ({toeplitz_bytes / 2**30:.0f} GiB) at L={seq_len}"
    return None


def rounds_for(step, profile: str, device: str) -> int:
    """Rounds to time: fixed on GPU; on CPU as many as fit in ~0.5 s (5..50), after one timed call."""
    if profile == "smoke":
        return 1
    if device == "cuda":
        return {"ci": 20, "paper": 50}[profile]
    import time

    start = time.perf_counter()
    step()
    once = time.perf_counter() - start
    return int(min(50, max(5, 0.5 / max(once, 1e-6))))


def bench_case(benchmark, backend, suite, seq_len, channels, profile, device, with_grads: bool):
    reason = skip_reason(backend, suite, seq_len, channels, profile, device)
    if reason:
        pytest.skip(reason)
    batch = batch_for(suite, profile, device)
    fn = run_backend(backend)
    u, k, grad_y = draw(batch, seq_len, channels, device)
    if with_grads:
        u.requires_grad_()
        k.requires_grad_()

        def step():
            torch.autograd.grad(fn(u, k), (u, k), grad_y)
            synchronize(device)
    else:

        def step():
            with torch.no_grad():
                fn(u, k)
            synchronize(device)

    step()  # warm-up: compilation, allocator, caches
    benchmark.pedantic(step, rounds=rounds_for(step, profile, device), iterations=1)

    traffic = traffic_bytes(batch, seq_len, channels, u.element_size(), with_grads)
    seconds = benchmark.stats.stats.median
    info = {"suite": suite, "backend": backend, "B": batch, "L": seq_len, "D": channels, "dtype": "float32",
            "device": device, "threads": torch.get_num_threads(), "wall_ms_median": seconds * 1e3}
    if device == "cuda":
        import triton.testing

        seconds = triton.testing.do_bench(step, warmup=10, rep=50, return_mode="median") / 1e3
        info["device_ms_median"] = seconds * 1e3
    info["gb_per_s"] = traffic / seconds / 1e9
    info.update(relative_errors(fn, u, k, grad_y, with_grads))
    benchmark.extra_info.update(info)


def _ids(shape):
    suite, seq_len, channels = shape
    return f"{suite}-L{seq_len}-D{channels}"


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES, ids=_ids)
def test_conv_fwd(benchmark, shape, backend, profile, device, one_cpu_thread):
    benchmark.group = "conv-fwd"
    bench_case(benchmark, backend, *shape, profile, device, with_grads=False)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("shape", SHAPES, ids=_ids)
def test_conv_fwdbwd(benchmark, shape, backend, profile, device, one_cpu_thread):
    benchmark.group = "conv-fwdbwd"
    bench_case(benchmark, backend, *shape, profile, device, with_grads=True)
