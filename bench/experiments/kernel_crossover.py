"""Measure where the FFT backend overtakes the direct one on this machine's CPU.

    python -m bench kernel-crossover [--batch 64] [--channels 64] [--threads 1]

Prints forward and forward+backward times (best of a few repeats, ms) of `direct` and `fft`
over L; the length where fft first wins forward+backward is what `CPU_DIRECT_MAX_LEN` in
dispatch.py is set from.
"""
from __future__ import annotations

import argparse
import time

import torch

from kernels.fftconv.direct import causal_conv_direct
from kernels.fftconv.fft import causal_conv_fft

LENGTHS = (16, 24, 32, 40, 48, 64, 80, 96, 128, 192, 256)


def best_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times) * 1e3


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench kernel-crossover", description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--channels", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(0)
    print(f"B={args.batch} D={args.channels} fp32, threads={torch.get_num_threads()}  (ms, best of {args.repeats})")
    print(f"{'L':>5} {'direct fwd':>11} {'fft fwd':>9} {'direct f+b':>11} {'fft f+b':>9}")
    for seq_len in LENGTHS:
        u = torch.randn(args.batch, seq_len, args.channels, generator=g).requires_grad_()
        k = torch.randn(args.channels, seq_len, generator=g).requires_grad_()
        grad_y = torch.randn(args.batch, seq_len, args.channels, generator=g)
        row = []
        for fn in (causal_conv_direct, causal_conv_fft):
            with torch.no_grad():
                row.append(best_ms(lambda: fn(u, k), args.repeats))
        for fn in (causal_conv_direct, causal_conv_fft):
            row.append(best_ms(lambda: torch.autograd.grad(fn(u, k), (u, k), grad_y), args.repeats))
        print(f"{seq_len:>5} {row[0]:>11.3f} {row[1]:>9.3f} {row[2]:>11.3f} {row[3]:>9.3f}")
