"""Sequence mixers, one module each, all (B, L, width) -> (B, L, width).

Importing this package registers every mixer in architectures.registry.
"""
from . import attention, baseconv, linear_attention  # noqa: F401
