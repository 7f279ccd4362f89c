"""fp32 means IEEE fp32: a guard for the torch backends' matmuls.

torch decides globally whether an fp32 matmul may use TF32 (CUDA) or bf16 (oneDNN on CPUs
with AMX): `torch.set_float32_matmul_precision("high"|"medium")`. A caller that enables it
elsewhere must not silently change this package's numbers, so every matmul in a backend runs
inside `ieee_fp32()`, forward and backward alike.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def ieee_fp32() -> Iterator[None]:
    """Force full-precision fp32 matmuls for the duration of the block, then restore."""
    previous = torch.get_float32_matmul_precision()
    if previous == "highest":
        yield
        return
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)
