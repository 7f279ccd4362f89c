"""One-layer BaseConv constructions for the primitives READ, LINEAR and MULTIPLY.

Each takes the task (primitives' read / linear / multiply, any sizes) and returns a
one-layer BaseConv whose output is the task's target. Stream: x (the input, copied in by
the read-in), y (the answer, read out), plus what the primitive needs.

MULTIPLY  y = x[a:a+n] * x[b:b+n]: channel k = x_{a+k} (identity filter) gated by x_{b+k}.
          One rounding (the product itself), so in any dtype the output is the correctly
          rounded target and the MSE equals the dtype floor. Width w + n.
READ      y_t = x_t[a:b] for t != j, y_j = x_i[a:b]. Needs to know where position j is:
          a positional embedding holds its indicator e_j (pos_emb=True). Per column,
          one channel shifts x by j - i (filter e_{j-i}) gated by e_j, another passes x_t
          gated by 1 - e_j; exactly one of the two is nonzero at every position, so the
          copy is bit-exact (MSE 0). Width w + (b - a) + 1. Without a positional embedding
          the indicator costs one more layer (the constant 1 convolved with e_j - e_{j+1}).
LINEAR    y = x H: channel o = x . H[:, o] (identity filter, gate 1), with H split into
          H_hi = H rounded to float32 plus H_lo = H - H_hi in a second channel, so the
          weights carry H to float64 accuracy even in a float32 model. What remains in
          float32 is the rounding of the products and of the fp32 sums inside the matmul:
          about 7x the floor for the default 20-term dot product (measured; it cannot reach
          the floor with fp32 accumulation). Width w + d_out.
"""
from __future__ import annotations

import torch

from .. import build_model
from .base import BaseConvWriter, Construction, Layout, identity_filter, set_linear, shift_filter


def _one_layer_baseconv(task, width: int, *, pos_emb: bool = False):
    return build_model(
        "baseconv", task, width=width, depth=1, prenorm=False, mlp=False, final_norm=False,
        pos_emb=pos_emb, residual=True, conv_kind="short", conv_backend="direct",
    ).to(torch.float64)


def _copy_in_out(model, s: Layout, d_in: int) -> None:
    set_linear(model.read_in, {x: {k: 1.0} for k, x in enumerate(s["x"][:d_in])})
    set_linear(model.read_out, {k: {y: 1.0} for k, y in enumerate(s["y"])})


def baseconv_multiply(task, *, dtype: torch.dtype = torch.float64) -> Construction:
    a, b, n = task.slices
    s = Layout(x=task.d_in, y=n)
    model = _one_layer_baseconv(task, s.width)
    with torch.no_grad():
        _copy_in_out(model, s, task.d_in)
        layer = BaseConvWriter(model.blocks[0])
        for k, y in enumerate(s["y"]):
            layer.channel(value={s["x"][a + k]: 1.0}, filter=identity_filter(layer.l_max),
                          gate={s["x"][b + k]: 1.0}, out={y: 1.0})
    return Construction(model.to(dtype), layers_per_step=1, width=s.width,
                        description=f"BaseConv, MULTIPLY x[{a}:{a + n}] * x[{b}:{b + n}] in one gating layer")


def baseconv_read(task, *, dtype: torch.dtype = torch.float64) -> Construction:
    (i, j), (a, b) = task.positions, task.columns
    s = Layout(x=task.d_in, y=b - a, e=1)
    e = s.index("e")
    model = _one_layer_baseconv(task, s.width, pos_emb=True)
    with torch.no_grad():
        _copy_in_out(model, s, task.d_in)
        model.pos_emb.zero_()
        model.pos_emb[j, e] = 1.0
        layer = BaseConvWriter(model.blocks[0])
        for k, y in enumerate(s["y"]):
            x = s["x"][a + k]
            layer.channel(value={x: 1.0}, filter=shift_filter(layer.l_max, j - i), gate={e: 1.0}, out={y: 1.0})
            layer.channel(value={x: 1.0}, filter=identity_filter(layer.l_max), gate={e: -1.0}, gate_bias=1.0,
                          out={y: 1.0})
    return Construction(model.to(dtype), layers_per_step=1, width=s.width,
                        description=f"BaseConv, READ token {i} to position {j} (columns {a}:{b}) in one layer "
                                    "with a positional indicator of position j")


def baseconv_linear(task, *, dtype: torch.dtype = torch.float64) -> Construction:
    H = task.H  # (d_in, d_out) float64
    H_hi = H.to(torch.float32).to(torch.float64)
    H_lo = H - H_hi
    s = Layout(x=task.d_in, y=task.d_out)
    model = _one_layer_baseconv(task, s.width)
    with torch.no_grad():
        _copy_in_out(model, s, task.d_in)
        layer = BaseConvWriter(model.blocks[0])
        for o, y in enumerate(s["y"]):
            for part in (H_hi, H_lo):
                layer.channel(value={x: float(part[k, o]) for k, x in enumerate(s["x"])},
                              filter=identity_filter(layer.l_max), gate_bias=1.0, out={y: 1.0})
    return Construction(model.to(dtype), layers_per_step=1, width=s.width,
                        description="BaseConv, LINEAR y = x H in one layer (H split into float32 high and low parts)")
