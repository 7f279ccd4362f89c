"""Shared pieces of the hand-set constructions: the result record, channel layouts, filters,
and a writer that sets one BaseConv block channel by channel.

A BaseConv block computes (architectures/mixers/baseconv.py)

    x <- x + out_proj( conv(in_proj(x)) * gate_proj(x) )        (residual=True)
    x <- out_proj( conv(in_proj(x)) * gate_proj(x) )            (residual=False)

Read per inner channel c, that is: a value v_c = w_c . x + beta_c, convolved along the
sequence with the filter k_c, multiplied by a gate g_c = u_c . x + gamma_c, and the product
added into the stream through the column c of out_proj. `BaseConvWriter.channel` sets exactly
these four things for one inner channel, so a construction reads as a list of
"this channel computes this product and writes it there".

Exactness: every weight a construction sets is a small integer, 1/N, eta or a task constant,
and every sum a layer forms has at most the terms the algorithm itself has, so in float64
the constructions agree with the reference algorithms to rounding, and copies
(1 * x + 0 * y + ...) are bit-exact in every dtype. The conv must be a direct (non-FFT)
convolution for that, so constructions build their models with conv_backend="direct".
"""
from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Callable, Mapping

import torch
import torch.nn as nn


@dataclass
class Construction:
    """A model with hand-set weights and what it costs.

    model: the configured model (architectures.build_model output), in `model`'s dtype.
    layers_per_step: mixer layers one algorithm step costs (see `description` for what a step is).
    width: the model width (residual stream = inner width of every block).
    setup_layers: layers spent once before the first step (0 if none).
    description: what the construction computes, its token layout and where the answer is read.
    tokens: for one-step least-squares constructions, (A, b, x) -> the input sequence it
        expects (None: the gd_step layout, primitives.least_squares.gd_tokens).
    """

    model: nn.Module
    layers_per_step: int
    width: int
    description: str
    setup_layers: int = 0
    extra: dict = field(default_factory=dict)
    tokens: Callable | None = None

    @property
    def depth(self) -> int:
        return self.model.config.depth

    def summary(self) -> dict:
        return {
            "model": self.model.config.name,
            "layers_per_step": self.layers_per_step,
            "setup_layers": self.setup_layers,
            "depth": self.depth,
            "width": self.width,
            "description": self.description,
            **self.extra,
        }


class Layout:
    """Named, consecutive channel groups of the residual stream.

    >>> s = Layout(a=3, r=1); s["a"], s["r"], s.width
    ([0, 1, 2], [3], 4)
    """

    def __init__(self, **sizes: int):
        self._groups: dict[str, list[int]] = {}
        start = 0
        for name, size in sizes.items():
            self._groups[name] = list(range(start, start + size))
            start += size
        self.width = start

    def __getitem__(self, name: str) -> list[int]:
        return self._groups[name]

    def index(self, name: str, i: int = 0) -> int:
        return self._groups[name][i]


def shapes(seq_len: int, d_in: int, d_out: int) -> SimpleNamespace:
    """The three shape attributes build_model reads from a task."""
    return SimpleNamespace(seq_len=seq_len, d_in=d_in, d_out=d_out)


# ---- filters (length l_max; y[t] = sum_{s<=t} k[s] u[t-s]) ----------------------------------

def identity_filter(length: int) -> torch.Tensor:
    """k = [1, 0, 0, ...]: y[t] = u[t]."""
    k = torch.zeros(length, dtype=torch.float64)
    k[0] = 1.0
    return k


def shift_filter(length: int, lag: int) -> torch.Tensor:
    """k = e_lag: y[t] = u[t - lag] (0 for t < lag)."""
    k = torch.zeros(length, dtype=torch.float64)
    k[lag] = 1.0
    return k


def prefix_sum_filter(length: int) -> torch.Tensor:
    """k = [1, 1, ...]: y[t] = sum_{s<=t} u[s]."""
    return torch.ones(length, dtype=torch.float64)


def earlier_sum_filter(length: int) -> torch.Tensor:
    """k = [0, 1, 1, ...]: y[t] = sum_{s<t} u[s] (the current token excluded)."""
    k = torch.ones(length, dtype=torch.float64)
    k[0] = 0.0
    return k


def first_position_filter(length: int) -> torch.Tensor:
    """k = [1, -1, 0, ...]: applied to a constant 1 it gives the indicator of position 0."""
    k = torch.zeros(length, dtype=torch.float64)
    k[0] = 1.0
    if length > 1:
        k[1] = -1.0
    return k


# ---- writing weights -----------------------------------------------------------------------

@torch.no_grad()
def zero_parameters(module: nn.Module) -> None:
    for p in module.parameters():
        p.zero_()


@torch.no_grad()
def set_linear(linear: nn.Linear, rows: Mapping[int, Mapping[int, float]], bias: Mapping[int, float] | None = None) -> None:
    """Zero `linear`, then weight[o, i] = rows[o][i] and bias[o] = bias[o]."""
    linear.weight.zero_()
    if linear.bias is not None:
        linear.bias.zero_()
    for o, row in rows.items():
        for i, w in row.items():
            linear.weight[o, i] = w
    for o, b in (bias or {}).items():
        linear.bias[o] = b


def write_gd_read_out(read_out: nn.Linear, layout: Layout, eta: float, output: str) -> None:
    """Read out the gradient channels g, or the next iterate w - eta * g (`output`: gradient | iterate)."""
    if output == "gradient":
        set_linear(read_out, {d: {g: 1.0} for d, g in enumerate(layout["g"])})
    else:
        set_linear(read_out, {d: {w: 1.0, g: -eta} for d, (w, g) in enumerate(zip(layout["w"], layout["g"]))})


class BaseConvWriter:
    """Sets one BaseConv block inner channel by inner channel (all else zero).

    channel(value, filter, gate, out): inner channel c gets
        in_proj row c   = value  ({stream channel: weight}),  in_proj bias c  = value_bias
        conv filter c   = filter (float64 tensor of length <= l_max; zero padded)
        gate_proj row c = gate,                               gate_proj bias c = gate_bias
        out_proj column c = out ({stream channel: weight})
    """

    def __init__(self, block: nn.Module):
        self.mixer = block.mixer
        self.width = self.mixer.in_proj.in_features
        self.l_max = self.mixer.conv.filter.shape[1]
        zero_parameters(self.mixer)
        self.used = 0

    @torch.no_grad()
    def channel(
        self,
        *,
        value: Mapping[int, float],
        filter: torch.Tensor,
        gate: Mapping[int, float] | None = None,
        out: Mapping[int, float],
        value_bias: float = 0.0,
        gate_bias: float = 0.0,
        filter_rev: torch.Tensor | None = None,
    ) -> int:
        c = self.used
        if c >= self.width:
            raise ValueError(f"construction needs more than width={self.width} inner channels")
        m = self.mixer
        for i, w in value.items():
            m.in_proj.weight[c, i] = w
        m.in_proj.bias[c] = value_bias
        m.conv.filter[c, : filter.shape[0]] = filter.to(m.conv.filter.dtype)
        if filter_rev is not None:
            m.conv.filter_rev[c, : filter_rev.shape[0]] = filter_rev.to(m.conv.filter_rev.dtype)
        for i, w in (gate or {}).items():
            m.gate_proj.weight[c, i] = w
        m.gate_proj.bias[c] = gate_bias
        for o, w in out.items():
            m.out_proj.weight[o, c] = w
        self.used += 1
        return c
