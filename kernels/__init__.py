"""Causal convolution kernels for BaseConv.

Convention (pinned by tests): y[b, t, d] = sum_{s<=t} k[d, s] * u[b, t - s, d].
`causal_conv(u, k, backend="auto")` with backends direct, fft, triton, triton_fft, reference (see
kernels/fftconv/dispatch.py).
"""
from .fftconv import BACKENDS, causal_conv, causal_conv_reference, select_backend

__all__ = ["BACKENDS", "causal_conv", "causal_conv_reference", "select_backend"]
