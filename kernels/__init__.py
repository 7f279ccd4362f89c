"""Causal convolution kernels for BaseConv.

Convention (pinned by tests): y[b, t, d] = sum_{s<=t} k[d, s] * u[b, t - s, d].
"""
from .fftconv import causal_conv  # noqa: F401

__all__ = ["causal_conv"]
