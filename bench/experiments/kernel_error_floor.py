"""Measure each conv backend's error floor against the float64 oracle, over the sequence length.

    python -m bench kernel-floor [--out results/kernels] [--max-len 4096] [--triton-max-len 256]
                                       [--triton-fft-max-len 4096]

For every backend, dtype (fp32, fp64) and L, draws Gaussian u (B, L, D) and k (D, L) in the
dtype (so they are exact in float64 too), runs forward and backward with a Gaussian grad_y,
and records the relative L2 error of y, grad_u and grad_k against the float64 oracle on the
same inputs (median over seeds). "rounded oracle" is the exact result rounded once to the
dtype: the floor no backend can beat. The Triton backends run in the interpreter on CPU
(the Toeplitz one only up to --triton-max-len, it is slow there), where tl.dot is numpy's fp32
matmul: a GPU's tensor cores accumulate in another order, so the GPU's triton_fft floor may
differ (bench.experiments.gpu_check measures it there). direct stops at 2048 (its D*L*L Toeplitz). Writes
error_floor_<device>.json and .png (atomically).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
from pathlib import Path

import torch

from bench.harness.records import atomic_write, cpu_name

LENGTHS = (1, 2, 4, 8, 16, 20, 21, 32, 39, 40, 64, 128, 256, 257, 512, 1024, 2048, 4096)
DIRECT_MAX_LEN = 2048
BATCH, CHANNELS, SEEDS = 4, 8, (0, 1, 2)
QUANTITIES = ("y", "grad_u", "grad_k")


def _rel_l2(approx: torch.Tensor, exact: torch.Tensor) -> float:
    return float((approx.detach().cpu().double() - exact).norm() / exact.norm())


def measure(backend: str, dtype: torch.dtype, seq_len: int, seed: int, device: str) -> dict[str, float]:
    from kernels.fftconv.dispatch import causal_conv
    from kernels.fftconv.reference import causal_conv_reference

    g = torch.Generator().manual_seed(seed)
    u = torch.randn(BATCH, seq_len, CHANNELS, generator=g, dtype=torch.float64).to(dtype).double()
    k = torch.randn(CHANNELS, seq_len, generator=g, dtype=torch.float64).to(dtype).double()
    grad_y = torch.randn(BATCH, seq_len, CHANNELS, generator=g, dtype=torch.float64).to(dtype).double()
    u.requires_grad_()
    k.requires_grad_()
    y64 = causal_conv_reference(u, k)
    exact = (y64.detach(), *torch.autograd.grad(y64, (u, k), grad_y))
    if backend == "rounded oracle":
        got = tuple(t.to(dtype) for t in exact)
    else:
        u_d = u.detach().to(device, dtype).requires_grad_()
        k_d = k.detach().to(device, dtype).requires_grad_()
        y = causal_conv(u_d, k_d, backend=backend)
        got = (y.detach(), *torch.autograd.grad(y, (u_d, k_d), grad_y.to(device, dtype)))
    return {name: _rel_l2(a, b) for name, a, b in zip(QUANTITIES, got, exact)}


def backends_for(seq_len: int, device: str, triton_max_len: int, triton_fft_max_len: int,
                 dtype: torch.dtype = torch.float32) -> list[str]:
    from kernels.fftconv import fft_plan

    names = ["rounded oracle", "fft"]
    if seq_len <= DIRECT_MAX_LEN:
        names.append("direct")
    interpreted = os.environ.get("TRITON_INTERPRET") == "1"
    if device == "cuda" or (seq_len <= triton_max_len and interpreted):
        names.append("triton")
    if (device == "cuda" or (seq_len <= triton_fft_max_len and interpreted)) and seq_len <= fft_plan.max_len(dtype):
        names.append("triton_fft")
    return names


def run(max_len: int, triton_max_len: int, device: str, triton_fft_max_len: int = 4096) -> list[dict]:
    records = []
    for dtype in (torch.float32, torch.float64):
        for seq_len in (L for L in LENGTHS if L <= max_len):
            for backend in backends_for(seq_len, device, triton_max_len, triton_fft_max_len, dtype):
                per_seed = [measure(backend, dtype, seq_len, seed, device) for seed in SEEDS]
                row = {"backend": backend, "dtype": str(dtype).removeprefix("torch."), "L": seq_len}
                row.update({q: statistics.median(m[q] for m in per_seed) for q in QUANTITIES})
                records.append(row)
                print(f"{row['dtype']:8s} L={seq_len:5d} {backend:15s} "
                      + " ".join(f"{q}={row[q]:.2e}" for q in QUANTITIES), flush=True)
    return records


RATIOS = (("fft", "direct"), ("triton_fft", "fft"), ("triton_fft", "direct"))


def summary(records: list[dict]) -> dict[str, float]:
    """Forward error ratios (fft/direct, triton_fft/fft, triton_fft/direct; fp32 and fp64), median
    over the lengths both ran with a nonzero denominator."""
    out = {}
    for dtype in ("float32", "float64"):
        by = {(r["backend"], r["L"]): r["y"] for r in records if r["dtype"] == dtype}
        for top, bottom in RATIOS:
            ratios = [by[(top, L)] / by[(bottom, L)] for (b, L) in by
                      if b == bottom and (top, L) in by and by[(bottom, L)] > 0]
            if ratios:
                out[f"{top}_over_{bottom}_y_{dtype}_median"] = statistics.median(ratios)
    return out


def plot(records: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    styles = {"rounded oracle": "k:", "direct": "C0-o", "fft": "C1-s", "triton": "C2-^", "triton_fft": "C3-v"}
    for ax, dtype in zip(axes, ("float32", "float64")):
        for backend, style in styles.items():
            rows = [r for r in records if r["dtype"] == dtype and r["backend"] == backend and r["y"] > 0]
            if rows:
                ax.loglog([r["L"] for r in rows], [r["y"] for r in rows], style, ms=4, label=f"{backend} (y)")
                ax.loglog([r["L"] for r in rows], [r["grad_k"] for r in rows], style, ms=2, alpha=0.4,
                          label=f"{backend} (grad_k)")
        ax.set_title(f"{dtype}: causal conv vs float64 oracle (B={BATCH}, D={CHANNELS})")
        ax.set_xlabel("sequence length L")
        ax.set_ylabel("relative L2 error (median of 3 seeds)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    atomic_write(path, lambda f: fig.savefig(f, dpi=120, format="png"), binary=True)
    plt.close(fig)


def floor_table(records: list[dict], lengths: tuple[int, ...] = (20, 40, 512)) -> list[dict]:
    """Rows per backend: the forward (y) relative L2 error at the given lengths, float32, and at
    L = 40 in float64 (the paper's lengths are 20-40); lengths a run did not reach are left out."""
    columns = [("float32", L) for L in lengths] + [("float64", 40)]
    by = {(r["backend"], r["dtype"], r["L"]): r["y"] for r in records}
    present = [c for c in columns if any((b, *c) in by for b, _, _ in by)]
    rows = []
    for backend in dict.fromkeys(r["backend"] for r in records):
        row = {"backend": backend}
        for dtype, L in present:
            value = by.get((backend, dtype, L))
            row[f"{dtype}, L={L}"] = "—" if value is None else f"{value:.2e}"
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m bench kernel-floor",
                                     description="Measure each conv backend's error floor against the float64 oracle.")
    parser.add_argument("--out", type=Path, default=Path("results/kernels"),
                        help="folder for error_floor_<device>.json and .png")
    parser.add_argument("--max-len", type=int, default=4096)
    parser.add_argument("--triton-max-len", type=int, default=256,
                        help="longest L for the Triton Toeplitz kernel in the interpreter")
    parser.add_argument("--triton-fft-max-len", type=int, default=4096,
                        help="longest L for the Triton FFT kernel in the interpreter")
    args = parser.parse_args(argv)
    if args.out.suffix or args.out.is_file():
        parser.error(f"--out is the folder the files go in (they are named error_floor_<device>.json/.png), "
                     f"got {args.out}")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")  # before the Triton module is first imported
    records = run(args.max_len, args.triton_max_len, device, args.triton_fft_max_len)
    command = "python -m bench kernel-floor" + "".join(
        f" {flag} {value}" for flag, value, default in (("--max-len", args.max_len, 4096),
                                                        ("--triton-max-len", args.triton_max_len, 256),
                                                        ("--triton-fft-max-len", args.triton_fft_max_len, 4096))
        if value != default)
    result = {
        "device": device,
        "device_name": torch.cuda.get_device_name() if device == "cuda" else cpu_name(),
        "machine": platform.processor() or platform.machine(),
        "triton_interpreter": os.environ.get("TRITON_INTERPRET") == "1",
        "torch": torch.__version__,
        "shape": {"B": BATCH, "D": CHANNELS, "seeds": list(SEEDS), "statistic": "median"},
        "command": command,
        "summary": summary(records),
        "records": records,
    }
    json_path = args.out / f"error_floor_{device}.json"
    atomic_write(json_path, lambda f: json.dump(result, f, indent=1))
    plot(records, args.out / f"error_floor_{device}.png")
    print(json.dumps(result["summary"], indent=1))
    print(f"wrote {json_path} and {json_path.with_suffix('.png')}")
    return result
