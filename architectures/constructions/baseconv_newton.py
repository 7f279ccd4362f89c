"""Single-pass BaseConv constructions that keep M = A^T A / N in the stream:
Newton-Schulz (one layer per iteration, quadratic convergence) and GD (one layer per step).

Why M: a causal model cannot apply a second GD step with per-token residuals r_i = a_i . x_1 - b_i
(position i < N cannot know x_1, which depends on later tokens; see baseconv_gd.py). Once
M = A^T A / N sits at the last position, every later step is local to it, so t steps cost
t layers in one pass, and the answer is exact at the last position.

Both use the gd_step token layout: token 0 = [x0 (D), 0], tokens 1..N = [a_i (D), b_i].
Symmetric D x D matrices are stored as their upper triangle, S = D (D + 1) / 2 channels.

Newton-Schulz (`baseconv_newton_schulz`), with the fixed start X_0 = eta I (a polynomial
network cannot divide, so the usual data-dependent scaling X_0 = M^T / (||M||_1 ||M||_inf)
is out of reach):
    X_{k+1} = X_k (2 I - M X_k)   <=>   E_{k+1} = E_k^2  with  E_k = I - M X_k = (I - eta M)^(2^k).
The answer x_K = x0 - X_K g0 (g0 = A^T (A x0 - b) / N, the gradient at x0) is carried as
d_k = X_k g0, d_{k+1} = (I + E_k) d_k. In exact arithmetic x_K is the GD iterate number 2^K
(x_{2^K} - x* = (I - eta M)^(2^K) (x0 - x*)): K layers do the work of 2^K GD steps, and the
error is squared by every layer. It converges iff the spectral radius of I - eta M is < 1,
the same condition as GD with step eta. g0 is computed from per-token residuals, as in the
GD construction (not as M x0 - c), so feeding x_K back as token 0 is Newton with iterative
refinement: the rounding of M only slows the contraction, and the fixed point is GD's.

    stream: a (D), r (1) = -b then the residual, w (D) = x0, P (S), p (D), E (S), d (D)
    1    separate x0 from token 0's a channels (as in baseconv_gd)
    2    broadcast x0 into w; r += a_t . x0; P = a_t a_t^T (upper triangle)
    3    p = a_t r_t;  E = I - (eta/N) sum_{s<=t} P   (I from the read-in bias)
    4    d = (eta/N) sum_{s<=t} p                      -> d_0 = eta g0 at the last position
    4+k  E += E (E - I) (= E^2),  d += E d            (Newton-Schulz iteration k = 1..K)
    read-out: w - d = x0 - X_K g0
Width max(stream 4D + 1 + D (D + 1), inner D^2 (D + 1) / 2 + D^2) = 100 for D = 5.

GD with M (`baseconv_gd_gram`): the stream holds E = I - eta M and eta c (c = A^T b / N):
    stream: a (D), b (1), w (D), P (S), q (D), E (S), c (D)
    1  separate x0;  2  broadcast x0, P = a a^T, q = a b;  3  prefix sums -> E, eta c
    3+t  x += (E - I) x + eta c     (= x - eta (M x - c), one GD step per layer)
Width max(stream, inner D^2 + D) = 51 for D = 5. Its fixed point solves the rounded normal
equations, so in float32 it stops a little above per-token GD (see the report).
"""
from __future__ import annotations

import torch

from .. import build_model
from .base import (
    BaseConvWriter,
    Construction,
    Layout,
    earlier_sum_filter,
    identity_filter,
    prefix_sum_filter,
    set_linear,
    shapes,
)
from .baseconv_gd import write_average, write_broadcast_and_residual, write_product, write_separate_x


def upper_pairs(D: int) -> list[tuple[int, int]]:
    return [(i, j) for i in range(D) for j in range(i, D)]


class MatrixLayout(Layout):
    """A stream with symmetric-matrix groups; `sym(name, i, j)` is the channel of entry (i, j)."""

    def __init__(self, D: int, **sizes: int):
        super().__init__(**sizes)
        self.D = D
        self._pair_index = {p: n for n, p in enumerate(upper_pairs(D))}

    def sym(self, name: str, i: int, j: int) -> int:
        return self[name][self._pair_index[(min(i, j), max(i, j))]]


def newton_layout(D: int) -> MatrixLayout:
    S = D * (D + 1) // 2
    return MatrixLayout(D, a=D, r=1, w=D, P=S, p=D, E=S, d=D)


def gram_layout(D: int) -> MatrixLayout:
    S = D * (D + 1) // 2
    return MatrixLayout(D, a=D, b=1, w=D, P=S, q=D, E=S, c=D)


def newton_schulz_width(D: int) -> int:
    return max(newton_layout(D).width, D * D * (D + 1) // 2 + D * D)


def gd_gram_width(D: int) -> int:
    return max(gram_layout(D).width, D * D + D)


def _build(D: int, N: int, width: int, depth: int):
    return build_model(
        "baseconv", shapes(N + 1, D + 1, D), width=width, depth=depth, prenorm=False, mlp=False,
        final_norm=False, pos_emb=False, residual=True, conv_kind="short", conv_backend="direct",
    ).to(torch.float64)


def _write_products(writer: BaseConvWriter, s: MatrixLayout) -> None:
    """P = a_t a_t^T (upper triangle)."""
    for i, j in upper_pairs(s.D):
        writer.channel(value={s["a"][i]: 1.0}, filter=identity_filter(writer.l_max), gate={s["a"][j]: 1.0},
                       out={s.sym("P", i, j): 1.0})


def _write_hessian_step(writer: BaseConvWriter, s: MatrixLayout, N: int, eta: float) -> None:
    """E += -(eta/N) sum_{s<=t} P, so E = I - eta M given the read-in's I."""
    for i, j in upper_pairs(s.D):
        writer.channel(value={s.sym("P", i, j): 1.0}, filter=prefix_sum_filter(writer.l_max), gate_bias=1.0,
                       out={s.sym("E", i, j): -eta / N})


def baseconv_newton_schulz(
    D: int = 5, N: int = 20, eta: float = 0.5, iterations: int = 8, *, dtype: torch.dtype = torch.float64
) -> Construction:
    """BaseConv of depth 4 + iterations; its last position outputs x0 - X_K g0 (= GD iterate 2^K)."""
    if iterations < 0:
        raise ValueError(f"iterations must be >= 0, got {iterations}")
    s = newton_layout(D)
    width = newton_schulz_width(D)
    model = _build(D, N, width, 4 + iterations)
    L = model.config.l_max
    with torch.no_grad():
        read_in = {a: {k: 1.0} for k, a in enumerate(s["a"])} | {s.index("r"): {D: -1.0}}
        set_linear(model.read_in, read_in, bias={s.sym("E", i, i): 1.0 for i in range(D)})
        write_separate_x(BaseConvWriter(model.blocks[0]), s)
        layer = BaseConvWriter(model.blocks[1])
        write_broadcast_and_residual(layer, s)
        _write_products(layer, s)
        layer = BaseConvWriter(model.blocks[2])
        write_product(layer, s)
        _write_hessian_step(layer, s, N, eta)
        write_average(BaseConvWriter(model.blocks[3]), s, N, into="d", scale=eta)
        for k in range(iterations):
            layer = BaseConvWriter(model.blocks[4 + k])
            for i, m in upper_pairs(D):  # (E^2 - E)_im = sum_j E_ij (E_jm - [j = m])
                for j in range(D):
                    layer.channel(value={s.sym("E", i, j): 1.0}, filter=identity_filter(L),
                                  gate={s.sym("E", j, m): 1.0}, gate_bias=-1.0 if j == m else 0.0,
                                  out={s.sym("E", i, m): 1.0})
            for i, d in enumerate(s["d"]):
                for j, dj in enumerate(s["d"]):
                    layer.channel(value={s.sym("E", i, j): 1.0}, filter=identity_filter(L), gate={dj: 1.0}, out={d: 1.0})
        set_linear(model.read_out, {k: {w: 1.0, d: -1.0} for k, (w, d) in enumerate(zip(s["w"], s["d"]))})
    return Construction(
        model=model.to(dtype),
        layers_per_step=1,
        setup_layers=4,
        width=width,
        description=(
            f"BaseConv, Newton-Schulz on M = A^T A / N from X_0 = eta I (eta={eta}), D={D}, N={N}: 4 setup layers "
            "(separate x0; residuals and a a^T; a r and E = I - eta M; d = eta * gradient), then one layer per "
            "iteration (E <- E^2, d <- d + E d); the last position outputs x0 - X_K g0, in exact arithmetic the "
            "GD iterate 2^K"
        ),
        extra={"eta": eta, "D": D, "N": N, "iterations": iterations, "gd_steps_equivalent": 2**iterations},
    )


def baseconv_gd_gram(
    D: int = 5, N: int = 20, eta: float = 0.5, steps: int = 10, *, dtype: torch.dtype = torch.float64
) -> Construction:
    """BaseConv of depth 3 + steps; its last position outputs the GD iterate x_steps (one layer per step)."""
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    s = gram_layout(D)
    width = gd_gram_width(D)
    model = _build(D, N, width, 3 + steps)
    L = model.config.l_max
    with torch.no_grad():
        read_in = {a: {k: 1.0} for k, a in enumerate(s["a"])} | {s.index("b"): {D: 1.0}}
        set_linear(model.read_in, read_in, bias={s.sym("E", i, i): 1.0 for i in range(D)})
        write_separate_x(BaseConvWriter(model.blocks[0]), s)
        layer = BaseConvWriter(model.blocks[1])
        for w in s["w"]:
            layer.channel(value={w: 1.0}, filter=earlier_sum_filter(L), gate_bias=1.0, out={w: 1.0})
        _write_products(layer, s)
        for a, q in zip(s["a"], s["q"]):
            layer.channel(value={s.index("b"): 1.0}, filter=identity_filter(L), gate={a: 1.0}, out={q: 1.0})
        layer = BaseConvWriter(model.blocks[2])
        _write_hessian_step(layer, s, N, eta)
        for q, c in zip(s["q"], s["c"]):
            layer.channel(value={q: 1.0}, filter=prefix_sum_filter(L), gate_bias=1.0, out={c: eta / N})
        for t in range(steps):
            layer = BaseConvWriter(model.blocks[3 + t])
            for i, w in enumerate(s["w"]):
                for j, wj in enumerate(s["w"]):  # (E - I)_ij x_j
                    layer.channel(value={s.sym("E", i, j): 1.0}, value_bias=-1.0 if i == j else 0.0,
                                  filter=identity_filter(L), gate={wj: 1.0}, out={w: 1.0})
                layer.channel(value={s["c"][i]: 1.0}, filter=identity_filter(L), gate_bias=1.0, out={w: 1.0})
        set_linear(model.read_out, {k: {w: 1.0} for k, w in enumerate(s["w"])})
    return Construction(
        model=model.to(dtype),
        layers_per_step=1,
        setup_layers=3,
        width=width,
        description=(
            f"BaseConv, GD (eta={eta}) with M = A^T A / N kept in the stream, D={D}, N={N}: 3 setup layers "
            "(separate x0; products a a^T, a b; prefix sums -> E = I - eta M, eta c), then one layer per GD step "
            "x <- E x + eta c; GD at the last position in a single causal pass"
        ),
        extra={"eta": eta, "D": D, "N": N, "steps": steps},
    )


@torch.no_grad()
def layer_outputs(model, u: torch.Tensor) -> torch.Tensor:
    """read_out applied after each block: (depth, B, L, d_out). Needs final_norm=False.

    The construction of depth 4 + K contains those of depth 4 + k, k < K, as its first
    layers, so this gives every iteration from one forward pass.
    """
    if model.config.final_norm:
        raise ValueError("layer_outputs needs a model built with final_norm=False")
    x = model.read_in(u)
    if model.pos_emb is not None:
        x = x + model.pos_emb[: u.shape[1]]
    outs = []
    for block in model.blocks:
        x = block(x)
        outs.append(model.read_out(x))
    return torch.stack(outs)
