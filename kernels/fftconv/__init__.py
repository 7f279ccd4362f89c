"""Causal long convolution for BaseConv: torch references, Triton kernels, dispatch.

Convention (pinned by tests): y[b, t, d] = sum_{s<=t} k[d, s] * u[b, t - s, d].
One backend per module, the float64 oracle beside them (reference.py), `causal_conv` in
dispatch.py.
"""
from .direct import causal_conv_direct
from .dispatch import BACKENDS, causal_conv, select_backend
from .fft import causal_conv_fft
from .reference import causal_conv_reference

__all__ = [
    "BACKENDS",
    "causal_conv",
    "causal_conv_direct",
    "causal_conv_fft",
    "causal_conv_reference",
    "select_backend",
]
