"""Sequence mixers, one module each, all (B, L, width) -> (B, L, width).

Importing this package registers every mixer in architectures.registry.
"""
from . import attention, based, baseconv, hyena, linear_attention, mamba, mlp, s4d  # noqa: F401
