"""Linear attention computing one gradient-descent step on least squares, exactly.

The construction of von Oswald et al. (2023, "Transformers learn in-context by gradient
descent"): one linear self-attention layer whose query is the current iterate and whose
keys and values are the data,

    y_t = sum_{s<=t} (q_t . k_s) v_s   with  q_t = [x, 1], k_s = [a_s, -b_s], v_s = a_s
        = sum_{s<=t} (a_s . x - b_s) a_s = A^T (A x - b)   at the last position,

so out_proj's 1/N makes it the gradient. Token layout of gd_step: token 0 = [x, 0],
tokens 1..N = [a_i, b_i]. Here x arrives only in token 0 (in the channels of the a_i),
so a first layer puts x into every position's query channels; with a positional
embedding holding the indicator e0 of position 0 it is one attention layer of two heads:

    head 0: q = 1, k = e0, v = a  ->  y_t = a_0 = x            (added to w: broadcast)
    head 1: q = e0, k = e0, v = a ->  y_t = [t = 0] x          (subtracted from a: a_0 = 0)

Residual stream (width 3D + 2, rounded up to even for the two heads):
    a (D), nb (1) = -b, e0 (1), w (D) = x, g (D) = gradient.
Layers: 2 per step (1 broadcast + 1 GD layer); iterate by feeding x_{t+1} back as token 0.
attn_scale = 1 (plain q k^T v).
"""
from __future__ import annotations

import torch

from .. import build_model
from .base import Construction, Layout, set_linear, shapes, write_gd_read_out, zero_parameters
from .baseconv_gd import OUTPUTS


def linear_attention_gd_step(
    D: int = 5, N: int = 20, eta: float = 0.5, *, output: str = "iterate", dtype: torch.dtype = torch.float64
) -> Construction:
    """A 2-layer, 2-head linear attention model whose last position outputs one GD step."""
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
    s = Layout(a=D, nb=1, e0=1, w=D, g=D)
    width = s.width + s.width % 2
    head = width // 2  # head 1's q/k/v channels start here
    model = build_model(
        "linear_attention", shapes(N + 1, D + 1, D), width=width, depth=2, heads=2, attn_scale=1.0,
        prenorm=False, mlp=False, final_norm=False, pos_emb=True, residual=True,
    ).to(torch.float64)
    nb, e0 = s.index("nb"), s.index("e0")
    with torch.no_grad():
        zero_parameters(model)
        set_linear(model.read_in, {a: {d: 1.0} for d, a in enumerate(s["a"])} | {nb: {D: -1.0}})
        model.pos_emb[0, e0] = 1.0

        setup = model.blocks[0].mixer
        set_linear(setup.q_proj, {head: {e0: 1.0}}, bias={0: 1.0})
        set_linear(setup.k_proj, {0: {e0: 1.0}, head: {e0: 1.0}})
        set_linear(setup.v_proj, {d: {a: 1.0} for d, a in enumerate(s["a"])}
                   | {head + d: {a: 1.0} for d, a in enumerate(s["a"])})
        set_linear(setup.out_proj, {w: {d: 1.0} for d, w in enumerate(s["w"])}
                   | {a: {head + d: -1.0} for d, a in enumerate(s["a"])})

        step = model.blocks[1].mixer
        set_linear(step.q_proj, {d: {w: 1.0} for d, w in enumerate(s["w"])}, bias={D: 1.0})
        set_linear(step.k_proj, {d: {a: 1.0} for d, a in enumerate(s["a"])} | {D: {nb: 1.0}})
        set_linear(step.v_proj, {d: {a: 1.0} for d, a in enumerate(s["a"])})
        set_linear(step.out_proj, {g: {d: 1.0 / N} for d, g in enumerate(s["g"])})

        write_gd_read_out(model.read_out, s, eta, output)
    return Construction(
        model=model.to(dtype),
        layers_per_step=2,
        width=width,
        description=(
            f"linear attention (2 heads), one GD step (eta={eta}) on least squares D={D}, N={N}: layer 1 "
            "broadcasts x from token 0 (positional indicator of position 0), layer 2 is von Oswald et al.'s "
            "GD layer (q=[x,1], k=[a,-b], v=a); iterate by feeding x_{t+1} back as token 0"
        ),
        extra={"eta": eta, "D": D, "N": N, "output": output, "heads": 2},
    )
