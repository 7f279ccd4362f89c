"""Keep freed memory in the process instead of handing it back to the kernel.

glibc's malloc serves large blocks (above its mmap threshold, at most 32 MiB) with fresh
mmap'd pages and unmaps them on free, so every large tensor a training step allocates is
zero-filled page by page by the kernel on first touch. At the paper's primitive config
(batch 1024, 40 tokens, MLP width 256: 42 MB activations) that costs more than the
arithmetic of an elementwise op: a ReLU over such a tensor runs several times slower into
fresh pages than into reused ones. With mmap off and trimming off, freed blocks stay in the heap
and the next step reuses them; the process keeps its peak footprint instead.

Process-wide; applied once by the harness on CPU runs, skipped where the C library is not glibc,
and off when PB_KEEP_FREED_MEMORY=0. `give_back_freed_memory` sets glibc's defaults again, for a
process whose live memory is a large part of the machine's: a heap that keeps every freed block
grows past the live peak as it fragments (measured: the matrix-free LM's 16,384-problem curvature,
~14 GB live, was killed for memory at 24 GB RSS on a 23 GB machine in its second step).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

# mallopt parameters (glibc malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD, M_MMAP_MAX = -1, -2, -3, -4
# glibc's defaults (malloc.c: DEFAULT_MMAP_MAX, DEFAULT_TRIM_THRESHOLD, DEFAULT_TOP_PAD,
# DEFAULT_MMAP_THRESHOLD); setting the threshold fixes it where glibc would have let it grow to 32 MiB
GLIBC_DEFAULTS = ((M_MMAP_MAX, 65536), (M_TRIM_THRESHOLD, 128 * 1024), (M_TOP_PAD, 0), (M_MMAP_THRESHOLD, 128 * 1024))
_applied: bool | None = None


def _glibc():
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    # glibc only: musl and others have no mallopt or gnu_get_libc_version
    if not (hasattr(libc, "mallopt") and hasattr(libc, "gnu_get_libc_version")):
        return None
    return libc


def keep_freed_memory() -> bool:
    """Turn off mmap'd allocations and heap trimming (once per process); True if in effect."""
    global _applied
    if _applied is None:
        libc = None if os.environ.get("PB_KEEP_FREED_MEMORY", "1") == "0" else _glibc()
        _applied = bool(libc) and all(
            libc.mallopt(param, value) == 1
            for param, value in ((M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, 2**31 - 1), (M_TOP_PAD, 64 << 20))
        )
    return _applied


def give_back_freed_memory() -> bool:
    """Undo keep_freed_memory: large blocks mmap'd again, free memory at the heap's top trimmed, and
    what is free now handed back (malloc_trim). True if this process had kept freed memory."""
    global _applied
    if not _applied:
        return False
    libc = _glibc()
    for param, value in GLIBC_DEFAULTS:
        libc.mallopt(param, value)
    libc.malloc_trim(0)
    _applied = False
    return True


def applied() -> bool:
    """Whether keep_freed_memory is in effect in this process (recorded with every result)."""
    return bool(_applied)
