"""BaseConv computing one gradient-descent step on least squares, exactly.

Token layout (primitives' gd_step / gd_k): token 0 = [x (D), 0], tokens i = 1..N = [a_i (D), b_i];
the answer is read at the last position N.

Residual stream, width 4D + 1 (the width of Liu et al.'s construction):

    a (D)   a_i; at token 0 it first holds x (token 0 shares its channels with the a_i)
    r (1)   starts as -b_i (read-in weight -1), becomes the residual r_i = a_i . x - b_i
    w (D)   the iterate x, at every position once broadcast
    p (D)   a_i r_i
    g (D)   (1/N) sum_{j<=t} a_j r_j: at the last position the gradient A^T (A x - b) / N

Layers (causal convs; a filter k acts as y[t] = sum_{s<=t} k[s] u[t-s]):

    1  separate x from the a channels: the constant 1 convolved with k = [1, -1] is the
       indicator of position 0; gated by a it is x at position 0 and 0 elsewhere, which is
       moved from a into w.                               (w = x at t = 0, a_0 = 0)
    2  broadcast and residual: w convolved with k = [0, 1, 1, ...] adds x at every t >= 1;
       w convolved with k = [1, 1, ...] (= x everywhere) gated by a_t gives a_t * x,
       whose sum over channels is added to r.            (r_t = a_t . x - b_t; r_0 = 0)
    3  product: r (identity filter) gated by a.          (p_t = a_t r_t)
    4  average: p convolved with the prefix-sum filter, times 1/N.
       (g_t = (1/N) sum_{j<=t} a_j r_j)

The read-out gives the gradient g (output="gradient", the gd_step target) or the next
iterate w - eta g (output="iterate", the gd_k target with k = 1). At positions t < N the
same channels hold the partial gradient (t/N times the gradient of the first t rows'
problem); only the last position is scored.

Layers 2-4 are Liu et al.'s three layers per GD step (residual, product, averaged update).
Their construction has x in every token; here x arrives as token 0, so one more layer (1)
separates it. Iterating a step means feeding x_{t+1} back as token 0 (`gd_iterate`), so
t steps cost 4 t layers. No causal model can apply several steps in one pass with the
residual computed per token: r_i at position i < N would need x_1, which depends on the
later tokens; see baseconv_newton.py for a single-pass construction that keeps
M = A^T A / N in the stream instead.

Two 3-layer variants (`baseconv_gd_step_broadcast`, `baseconv_gd_step_3layer`):

    broadcast  Liu et al.'s layout and construction: every token is [a_i, b_i, x] (N tokens,
               d_in 2D + 1); width 4D + 1; layers residual / product / averaged update.
    3layer     the gd_step layout in 3 layers, at width D^2 + 4D + 1: the gradient is
               formed as (sum_j a_j a_j^T) x - sum_j b_j a_j, so the product layer no longer
               waits for the residual:
                   1  separate x (as above)
                   2  w = x everywhere; P_de = a_d a_e and q_d = b a_d per token
                   3  g_d = (1/N) (sum_e [sum_{j<=t} P_de] w_e - sum_{j<=t} q_d)

With a non-causal conv (causal=False: the filter also has taps on later tokens) the full
gradient reaches every position, and t steps unroll into one model of depth 1 + 3t
(`baseconv_gd_unrolled`): exactly Liu et al.'s three layers per step. It uses residual=False
(each layer rewrites the stream, copying what it keeps through a gate of 1), because the
residual r and product p must be recomputed, not accumulated, at every step:

    stream (width 3D + 2): a (D), b (1), w (D), r (1), p (D)
    0      separate x0 into w (a_0 = 0)
    3s+1   r = a . w - b          (step 1: w summed over all positions = x0 broadcast)
    3s+2   p = a r
    3s+3   w = w - (eta/N) sum over all positions of p
"""
from __future__ import annotations

import torch

# the gd_step layouts (token 0 = [x, 0]; x in every token), re-exported
from primitives.least_squares import broadcast_tokens, gd_tokens

from .. import build_model
from .base import (
    BaseConvWriter,
    write_gd_read_out,
    Construction,
    Layout,
    earlier_sum_filter,
    first_position_filter,
    identity_filter,
    prefix_sum_filter,
    zero_parameters,
    set_linear,
    shapes,
)

OUTPUTS = ("iterate", "gradient")


def check_output(output: str) -> None:
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")


def gd_layout(D: int) -> Layout:
    return Layout(a=D, r=1, w=D, p=D, g=D)


def write_separate_x(writer: BaseConvWriter, s: Layout) -> None:
    """Layer 1: move x out of token 0's a channels into w (w = x at t = 0, a_0 = 0)."""
    for a, w in zip(s["a"], s["w"]):
        writer.channel(value={}, value_bias=1.0, filter=first_position_filter(writer.l_max),
                       gate={a: 1.0}, out={w: 1.0, a: -1.0})


def write_broadcast_and_residual(writer: BaseConvWriter, s: Layout) -> None:
    """Layer 2: w = x at every position; r += a_t . x (so r = a_t . x - b_t)."""
    L = writer.l_max
    for w in s["w"]:
        writer.channel(value={w: 1.0}, filter=earlier_sum_filter(L), gate_bias=1.0, out={w: 1.0})
    r = s.index("r")
    for a, w in zip(s["a"], s["w"]):
        writer.channel(value={w: 1.0}, filter=prefix_sum_filter(L), gate={a: 1.0}, out={r: 1.0})


def write_product(writer: BaseConvWriter, s: Layout) -> None:
    """Layer 3: p = a_t r_t."""
    r = s.index("r")
    for a, p in zip(s["a"], s["p"]):
        writer.channel(value={r: 1.0}, filter=identity_filter(writer.l_max), gate={a: 1.0}, out={p: 1.0})


def write_average(writer: BaseConvWriter, s: Layout, N: int, *, into: str = "g", scale: float = 1.0) -> None:
    """Layer 4: into += (scale/N) sum_{j<=t} p_j (the gradient, times `scale`)."""
    for p, g in zip(s["p"], s[into]):
        writer.channel(value={p: 1.0}, filter=prefix_sum_filter(writer.l_max), gate_bias=1.0, out={g: scale / N})


def baseconv_gd_step(
    D: int = 5, N: int = 20, eta: float = 0.5, *, output: str = "iterate", dtype: torch.dtype = torch.float64
) -> Construction:
    """A 4-layer BaseConv (width 4D + 1) whose last position outputs one GD step.

    output="iterate": x - eta A^T (A x - b) / N (gd_k, k=1); output="gradient": A^T (A x - b) / N (gd_step).
    Inputs: the gd_step token layout, (B, N + 1, D + 1).
    """
    check_output(output)
    s = gd_layout(D)
    model = causal_gd_model(N + 1, D + 1, D, s.width, depth=4)
    with torch.no_grad():
        set_linear(model.read_in, {a: {d: 1.0} for d, a in enumerate(s["a"])} | {s.index("r"): {D: -1.0}})
        write_separate_x(BaseConvWriter(model.blocks[0]), s)
        write_broadcast_and_residual(BaseConvWriter(model.blocks[1]), s)
        write_product(BaseConvWriter(model.blocks[2]), s)
        write_average(BaseConvWriter(model.blocks[3]), s, N)
        write_gd_read_out(model.read_out, s, eta, output)
    return one_step_construction(
        model, s,
        f"BaseConv, one GD step (eta={eta}) on least squares D={D}, N={N}: layer 1 separates x from "
        "token 0, layers 2-4 are Liu et al.'s residual / product / averaged-update layers; "
        f"last position outputs the {'next iterate' if output == 'iterate' else 'gradient'}; "
        "iterate by feeding x_{t+1} back as token 0",
        eta=eta, D=D, N=N, output=output, dtype=dtype,
    )


def one_step_construction(model, layout: Layout, description: str, *, eta: float, D: int, N: int, output: str,
                          dtype: torch.dtype, layout_name: str = "gd_step", tokens=None) -> Construction:
    """A one-GD-step construction record: every layer of `model` is one step's."""
    return Construction(
        model=model.to(dtype),
        layers_per_step=model.config.depth,
        width=layout.width,
        description=description,
        extra={"eta": eta, "D": D, "N": N, "output": output, "layout": layout_name},
        tokens=tokens,
    )


def causal_gd_model(seq_len: int, d_in: int, D: int, width: int, depth: int) -> torch.nn.Module:
    """A bare causal BaseConv (no norms, no MLP, residual on, direct conv) in float64, to be hand-set."""
    return build_model(
        "baseconv", shapes(seq_len, d_in, D), width=width, depth=depth, prenorm=False, mlp=False,
        final_norm=False, pos_emb=False, residual=True, conv_kind="short", conv_backend="direct",
    ).to(torch.float64)


def baseconv_gd_step_broadcast(
    D: int = 5, N: int = 20, eta: float = 0.5, *, output: str = "iterate", dtype: torch.dtype = torch.float64
) -> Construction:
    """Liu et al.'s 3-layer BaseConv GD step (width 4D + 1), with x in every token.

    Inputs: `broadcast_tokens`, (B, N, 2D + 1): token i = [a_i, b_i, x]; the last position
    outputs the next iterate (output="iterate") or the gradient (output="gradient").
    """
    check_output(output)
    s = gd_layout(D)
    model = causal_gd_model(N, 2 * D + 1, D, s.width, depth=3)
    with torch.no_grad():
        set_linear(model.read_in, {a: {d: 1.0} for d, a in enumerate(s["a"])} | {s.index("r"): {D: -1.0}}
                   | {w: {D + 1 + d: 1.0} for d, w in enumerate(s["w"])})
        residual = BaseConvWriter(model.blocks[0])
        for a, w in zip(s["a"], s["w"]):  # r += a_t . x
            residual.channel(value={w: 1.0}, filter=identity_filter(residual.l_max), gate={a: 1.0},
                             out={s.index("r"): 1.0})
        write_product(BaseConvWriter(model.blocks[1]), s)
        write_average(BaseConvWriter(model.blocks[2]), s, N)
        write_gd_read_out(model.read_out, s, eta, output)
    return one_step_construction(
        model, s,
        f"BaseConv, one GD step (eta={eta}) on least squares D={D}, N={N}, Liu et al.'s layout (every "
        "token [a_i, b_i, x]): residual / product / averaged-update layers; iterate by writing x_{t+1} "
        "into every token",
        eta=eta, D=D, N=N, output=output, dtype=dtype, layout_name="broadcast", tokens=broadcast_tokens,
    )


def baseconv_gd_step_3layer(
    D: int = 5, N: int = 20, eta: float = 0.5, *, output: str = "iterate", dtype: torch.dtype = torch.float64
) -> Construction:
    """A 3-layer BaseConv (width D^2 + 4D + 1) whose last position outputs one GD step, gd_step layout.

    The gradient is (1/N)(sum_j a_j a_j^T x - sum_j b_j a_j) (module docstring).
    """
    check_output(output)
    s = Layout(a=D, b=1, w=D, P=D * D, q=D, g=D)
    model = causal_gd_model(N + 1, D + 1, D, s.width, depth=3)
    L = model.config.l_max
    b = s.index("b")
    with torch.no_grad():
        set_linear(model.read_in, {a: {d: 1.0} for d, a in enumerate(s["a"])} | {b: {D: 1.0}})
        write_separate_x(BaseConvWriter(model.blocks[0]), s)
        products = BaseConvWriter(model.blocks[1])
        for w in s["w"]:
            products.channel(value={w: 1.0}, filter=earlier_sum_filter(L), gate_bias=1.0, out={w: 1.0})
        for d, a_d in enumerate(s["a"]):
            for e, a_e in enumerate(s["a"]):
                products.channel(value={a_e: 1.0}, filter=identity_filter(L), gate={a_d: 1.0},
                                 out={s.index("P", d * D + e): 1.0})
            products.channel(value={b: 1.0}, filter=identity_filter(L), gate={a_d: 1.0}, out={s.index("q", d): 1.0})
        update = BaseConvWriter(model.blocks[2])
        for d, g in enumerate(s["g"]):
            for e, w in enumerate(s["w"]):
                update.channel(value={s.index("P", d * D + e): 1.0}, filter=prefix_sum_filter(L), gate={w: 1.0},
                               out={g: 1.0 / N})
            update.channel(value={s.index("q", d): 1.0}, filter=prefix_sum_filter(L), gate_bias=1.0,
                           out={g: -1.0 / N})
        write_gd_read_out(model.read_out, s, eta, output)
    return one_step_construction(
        model, s,
        f"BaseConv, one GD step (eta={eta}) on least squares D={D}, N={N}, gd_step layout in 3 layers: "
        "separate x; broadcast x and form a_j a_j^T, b_j a_j per token; sum them against x; "
        "iterate by feeding x_{t+1} back as token 0",
        eta=eta, D=D, N=N, output=output, dtype=dtype,
    )


@torch.no_grad()
def gd_iterate(construction: Construction, A: torch.Tensor, b: torch.Tensor, x0: torch.Tensor, steps: int) -> torch.Tensor:
    """Apply a one-step construction `steps` times, feeding each output back as its x
    (token 0 of the gd_step layout, or every token of `broadcast_tokens`).

    A, b, x0 are cast to the model's dtype. Returns the iterates x_0..x_steps, (steps + 1, B, D),
    in the model's dtype.
    """
    model = construction.model
    dtype = next(model.parameters()).dtype
    tokens = construction.tokens or gd_tokens
    A, b, x = A.to(dtype), b.to(dtype), x0.to(dtype)
    xs = [x]
    for _ in range(steps):
        x = model(tokens(A, b, x))[:, -1]
        xs.append(x)
    return torch.stack(xs)


def baseconv_gd_unrolled(
    D: int = 5, N: int = 20, eta: float = 0.5, steps: int = 10, *, dtype: torch.dtype = torch.float64
) -> Construction:
    """Non-causal BaseConv of depth 1 + 3 steps whose every position outputs the GD iterate x_steps.

    Iterate t is read after layer 1 + 3t (`layer_outputs`). Inputs: the gd_step token layout.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    s = Layout(a=D, b=1, w=D, r=1, p=D)
    model = build_model(
        "baseconv", shapes(N + 1, D + 1, D), width=s.width, depth=1 + 3 * steps, prenorm=False, mlp=False,
        final_norm=False, pos_emb=False, residual=False, causal=False, conv_kind="short", conv_backend="direct",
    ).to(torch.float64)
    L = model.config.l_max
    everywhere = prefix_sum_filter(L), torch.ones(L - 1, dtype=torch.float64)  # taps on t' <= t and t' > t
    b, r = s.index("b"), s.index("r")

    def carry(writer: BaseConvWriter, *groups: str) -> None:
        for name in groups:
            for c in s[name]:
                writer.channel(value={c: 1.0}, filter=identity_filter(L), gate_bias=1.0, out={c: 1.0})

    with torch.no_grad():
        zero_parameters(model)
        set_linear(model.read_in, {a: {d: 1.0} for d, a in enumerate(s["a"])} | {b: {D: 1.0}})
        first = BaseConvWriter(model.blocks[0])
        carry(first, "a", "b")
        for a, w in zip(s["a"], s["w"]):  # [t = 0] a_t: x0 at position 0, moved from a to w
            first.channel(value={}, value_bias=1.0, filter=first_position_filter(L), gate={a: 1.0}, out={w: 1.0, a: -1.0})
        for t in range(steps):
            residual = BaseConvWriter(model.blocks[1 + 3 * t])
            carry(residual, "a", "b")
            w_filter, w_filter_rev = everywhere if t == 0 else (identity_filter(L), None)
            for a, w in zip(s["a"], s["w"]):
                residual.channel(value={w: 1.0}, filter=w_filter, filter_rev=w_filter_rev, gate_bias=1.0, out={w: 1.0})
                residual.channel(value={w: 1.0}, filter=w_filter, filter_rev=w_filter_rev, gate={a: 1.0}, out={r: 1.0})
            residual.channel(value={b: 1.0}, filter=identity_filter(L), gate_bias=1.0, out={r: -1.0})
            product = BaseConvWriter(model.blocks[2 + 3 * t])
            carry(product, "a", "b", "w")
            for a, p in zip(s["a"], s["p"]):
                product.channel(value={r: 1.0}, filter=identity_filter(L), gate={a: 1.0}, out={p: 1.0})
            update = BaseConvWriter(model.blocks[3 + 3 * t])
            carry(update, "a", "b", "w")
            for p, w in zip(s["p"], s["w"]):
                update.channel(value={p: 1.0}, filter=everywhere[0], filter_rev=everywhere[1], gate_bias=1.0,
                               out={w: -eta / N})
        set_linear(model.read_out, {d: {w: 1.0} for d, w in enumerate(s["w"])})
    return Construction(
        model=model.to(dtype),
        layers_per_step=3,
        setup_layers=1,
        width=s.width,
        description=(
            f"non-causal BaseConv, {steps} GD steps (eta={eta}) unrolled, D={D}, N={N}: 1 layer separates x0, "
            "then Liu et al.'s 3 layers per step (residual, product, update with the gradient summed over all "
            "positions); residual=False; every position holds x_t after layer 1 + 3t"
        ),
        extra={"eta": eta, "D": D, "N": N, "steps": steps, "causal": False},
    )
