"""ODE_OPERATOR: a linear ODE operator learned in context (Liu et al.'s application).

The equation, on t in [-1, 1], with one operator (a1, a2, a3, a4) per prompt:

    u'(t) = a1 c(t) + a2 c(t) u(t) + a3 u(t) + a4,        u(0) = u0

eqn_class 0 keeps every term, 1 drops a2 (u is then linear in (c, u0, 1)), 2 drops a1.

Draws (s = operator_scale), one prompt at a time, in this order through the generator:
    a1, a2 ~ U(1 - s/2, 1 + s/2), a3, a4 ~ U(-s, s)   (all four drawn, then a2 = 0 for class 1
                                                       and a1 = 0 for class 2)
    t_q ~ U(-1, 1)                                    the query time (or `query_time` if set)
    c_i = GP draw at the D points t_j = -1 + 2j / (D - 1), one per example i
    u0_i ~ U(-u0_scale, u0_scale)

The forcing c. c of example i is *defined* by its D values: c(t) is their piecewise-linear
interpolant on the grid t_j. The values are a draw of N(0, K), K_jk = exp(-(t_j - t_k)^2 /
(2 gp_length)) (the paper's code passes gp_length as the kernel's variance: its length scale is
sqrt(gp_length), 0.32 at the default 0.1), drawn as z (V sqrt(Lambda))^T with K = V Lambda V^T
in float64 (K is numerically singular for smooth kernels, so no Cholesky). Why this choice: the
model sees exactly the D values, and they are all there is of c, so for eqn_class 1 the answer
u(t_q) is exactly a linear function of the token (c (D), u0, 1) (the prompt's in-context
least-squares problem is consistent: least squares recovers the target to rounding); and on each
piece c is linear, so the solution is analytic there and the solvers below reach float64 rounding.
A GP drawn on a finer grid (the paper's 41 Chebyshev nodes) would make the D values a partial
observation of the forcing, an error no in-context method could remove.

Token layout (n = n_examples tokens, D = n_points), the paper's `ODEOperatorICLFinal`:
    token i = [c_i(t_1..t_D) (D), u0_i, 1, y_i],  y_i = u_i(t_q) for i < n - 1, y_{n-1} = 0
Shapes: inputs (B, n, D + 3); targets (B, n, 1), scored only at the last position n - 1, where
the target is u_{n-1}(t_q). The n - 1 solved examples before it are the n - 1 equations of a
least-squares problem in D + 2 unknowns (bench.experiments.ode_application). c and u0 are rounded once to the training
dtype and the solutions computed from the rounded values; the y_i tokens hold u_i(t_q) rounded.

Exact targets (float64), all stepping piece by piece from t = 0 to t_q (knots and 0 are the
breakpoints), so every step sees a linear c:
    eqn_class 1: the closed form of the integrating factor on each piece,
        u(s + h) = e^{a3 h} u(s) + h phi1(a3 h) f(s) + h^2 phi2(a3 h) f',  f = a1 c + a4,
        phi1(z) = (e^z - 1) / z, phi2(z) = (e^z - 1 - z) / z^2 (series near 0: exact at a3 = 0);
    eqn_class 0, 2: u' = p u + q with p = a2 c + a3, q = a1 c + a4 linear on a piece: a Taylor
        series of the (entire) solution, coefficients by recurrence, 24 terms on substeps with
        |h| max|p| <= 0.2 (truncation below 1e-17 relative).
The independent reference `solve_collocation` (8-stage Gauss-Legendre collocation, order 16)
measures their error: `ODEOperator.solver_error()`, the task's solver floor next to its dtype
floor `floor(dtype)`.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from pydantic import model_validator

from .base import Task, TaskConfigError, round_to, stream_generator
from .registry import register

TAYLOR_TERMS = 24
TAYLOR_RHO = 0.2  # |h| max|p| per substep: the series' terms shrink at least 5x each
GL_STAGES = 8


# ---- the forcing: a GP at D grid points, interpolated piecewise linearly ----------------------


def grid(D: int) -> torch.Tensor:
    """The D points c is given at: linspace(-1, 1, D), float64."""
    return torch.linspace(-1.0, 1.0, D, dtype=torch.float64)


def rbf_covariance(t: torch.Tensor, gp_length: float) -> torch.Tensor:
    """K_jk = exp(-(t_j - t_k)^2 / (2 gp_length)) (gp_length as the paper's code uses it: a variance)."""
    return torch.exp(-(t[:, None] - t[None, :]) ** 2 / (2 * gp_length))


@functools.lru_cache(maxsize=64)
def _gp_factor(D: int, gp_length: float) -> torch.Tensor:
    K = rbf_covariance(grid(D), gp_length)
    lam, V = torch.linalg.eigh(K)
    return V * lam.clamp_min(0).sqrt()  # negative eigenvalues are rounding of a PSD matrix


def gp_factor(D: int, gp_length: float) -> torch.Tensor:
    """F (D, D) with F F^T = K (to rounding): a draw is z F^T, z standard normal."""
    return _gp_factor(D, float(gp_length)).clone()


def sample_gp(shape: tuple[int, ...], D: int, gp_length: float, generator: torch.Generator) -> torch.Tensor:
    """(*shape, D) draws of the GP at the grid, float64."""
    z = torch.randn(*shape, D, generator=generator, dtype=torch.float64)
    return z @ gp_factor(D, gp_length).T


def interpolate(c: torch.Tensor, t) -> torch.Tensor:
    """The forcing at times t: c (..., D) values at the grid, t broadcastable to c[..., 0]; piecewise
    linear, c(t) = c_j + (c_{j+1} - c_j) (t - t_j) / spacing on [t_j, t_{j+1}] (as the solvers use it)."""
    D = c.shape[-1]
    spacing = 2.0 / (D - 1)
    t = torch.as_tensor(t, dtype=torch.float64).expand(c.shape[:-1])
    j = ((t + 1) / spacing).floor().clamp(0, D - 2).long()
    left = c.gather(-1, j.unsqueeze(-1)).squeeze(-1)
    right = c.gather(-1, (j + 1).unsqueeze(-1)).squeeze(-1)
    return left + (right - left) * (t - grid(D)[j]) / spacing


# ---- stepping from 0 to t_q, piece by piece --------------------------------------------------


@dataclass(frozen=True)
class Piece:
    """A stretch of [-1, 1] from `start` towards `end` (either direction) inside knot interval j."""

    start: float
    end: float
    j: int


def pieces(D: int) -> list[Piece]:
    """The pieces from 0 outwards: right of 0 ascending, then left of 0 descending."""
    knots = grid(D).tolist()
    spacing = 2.0 / (D - 1)
    right = [0.0] + [k for k in knots if k > 0]
    left = [0.0] + [k for k in reversed(knots) if k < 0]
    # the knot interval of a piece: the one holding its midpoint
    return [Piece(a, b, min(int(math.floor(((a + b) / 2 + 1) / spacing)), D - 2))
            for ends in (right, left) for a, b in zip(ends, ends[1:])]


def _piece_data(c: torch.Tensor, piece: Piece, t_q: torch.Tensor):
    """Step length h (B, 1) (0 where t_q is not beyond piece.start), and c at the start and its slope (B, n)."""
    D = c.shape[-1]
    spacing = 2.0 / (D - 1)
    knots = grid(D)
    if piece.end > piece.start:
        h = (t_q - piece.start).clamp(0.0, piece.end - piece.start)
    else:
        h = (t_q - piece.start).clamp(piece.end - piece.start, 0.0)
    slope = (c[..., piece.j + 1] - c[..., piece.j]) / spacing
    offset = piece.start - knots[piece.j].item()
    c_start = c[..., piece.j] + slope * offset if offset != 0.0 else c[..., piece.j]
    return h.unsqueeze(-1), c_start, slope


def phi1(z: torch.Tensor) -> torch.Tensor:
    """(e^z - 1) / z, 1 at z = 0, accurate to rounding everywhere (expm1)."""
    safe = torch.where(z == 0, torch.ones_like(z), z)
    return torch.where(z == 0, torch.ones_like(z), torch.expm1(safe) / safe)


def phi2(z: torch.Tensor) -> torch.Tensor:
    """(e^z - 1 - z) / z^2, 1/2 at z = 0: a 20-term series for |z| < 1/2 (the formula cancels there)."""
    series = torch.zeros_like(z)
    for k in range(19, -1, -1):  # sum_k z^k / (k + 2)!
        series = series * z + 1.0 / math.factorial(k + 2)
    small = z.abs() < 0.5
    safe = torch.where(small, torch.ones_like(z), z)
    return torch.where(small, series, (torch.expm1(safe) - safe) / (safe * safe))


def _coefficients(*a):
    """Per-prompt coefficients (B,) as (B, 1) float64 columns, to broadcast over the examples."""
    return [torch.as_tensor(x, dtype=torch.float64).reshape(-1, 1) for x in a]


def solve_closed_form(a1, a3, a4, c: torch.Tensor, u0: torch.Tensor, t_q: torch.Tensor) -> torch.Tensor:
    """u(t_q) of u' = a1 c + a3 u + a4, u(0) = u0 (eqn_class 1) by the integrating factor, piece by piece.

    a1, a3, a4, t_q (B,); c (B, n, D); u0 (B, n); returns (B, n), float64.
    """
    a1, a3, a4 = _coefficients(a1, a3, a4)
    u = u0.to(torch.float64).clone()
    for piece in pieces(c.shape[-1]):
        h, c_s, slope = _piece_data(c, piece, t_q)
        z = a3 * h
        u = torch.exp(z) * u + h * phi1(z) * (a1 * c_s + a4) + h * h * phi2(z) * (a1 * slope)
    return u


def _substeps(a2, a3, c: torch.Tensor, rho: float) -> int:
    """Substeps per piece so that |h_sub| max|p| <= rho for every prompt (|c| <= max of its values)."""
    spacing = 2.0 / (c.shape[-1] - 1)
    p_max = (a2.abs() * c.abs().amax(dim=(-1, -2), keepdim=False).reshape(-1, 1) + a3.abs()).max().item()
    return max(1, math.ceil(spacing * p_max / rho))


def solve_taylor(a1, a2, a3, a4, c: torch.Tensor, u0: torch.Tensor, t_q: torch.Tensor,
                 terms: int = TAYLOR_TERMS, rho: float = TAYLOR_RHO) -> torch.Tensor:
    """u(t_q) of u' = (a2 c + a3) u + a1 c + a4, u(0) = u0, any eqn_class: Taylor series on substeps.

    On a substep of length h from s, with p = p0 + p1 tau and q = q0 + q1 tau, the scaled
    coefficients v_k = u_k h^k of the solution's series obey
        v_1 = h (p0 v_0 + q0),  v_2 = (h p0 v_1 + h^2 (p1 v_0 + q1)) / 2,
        v_k = (h p0 v_{k-1} + h^2 p1 v_{k-2}) / k  (k >= 3),
    and u(s + h) = sum_k v_k, summed smallest first. Shapes as solve_closed_form.
    """
    a1, a2, a3, a4 = _coefficients(a1, a2, a3, a4)
    m = _substeps(a2, a3, c, rho)
    u = u0.to(torch.float64).clone()
    for piece in pieces(c.shape[-1]):
        h_piece, c_s, slope = _piece_data(c, piece, t_q)
        h = h_piece / m
        for i in range(m):
            c0 = c_s + slope * (i * h)
            p0, p1 = a2 * c0 + a3, a2 * slope
            q0, q1 = a1 * c0 + a4, a1 * slope
            v = [u, h * (p0 * u + q0)]
            v.append((h * p0 * v[1] + h * h * (p1 * u + q1)) / 2)
            for k in range(3, terms):
                v.append((h * p0 * v[-1] + h * h * p1 * v[-2]) / k)
            total = torch.zeros_like(u)
            for term in reversed(v):
                total = total + term
            u = total
    return u


@functools.lru_cache(maxsize=4)
def _gauss_legendre(stages: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Nodes c (s,), weights b (s,) on [0, 1] and the collocation matrix A_ij = int_0^{c_i} l_j."""
    x, w = np.polynomial.legendre.leggauss(stages)
    nodes, weights = (x + 1) / 2, w / 2

    def lagrange(j, t):
        others = np.delete(nodes, j)
        return np.prod((t[..., None] - others) / (nodes[j] - others), axis=-1)

    # int_0^{c_i} l_j by the same Gauss rule scaled to [0, c_i] (exact: l_j has degree s - 1)
    A = np.array([[nodes[i] * np.sum(weights * lagrange(j, nodes[i] * nodes)) for j in range(stages)]
                  for i in range(stages)])
    as_t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    return as_t(nodes), as_t(weights), as_t(A)


def solve_collocation(a1, a2, a3, a4, c: torch.Tensor, u0: torch.Tensor, t_q: torch.Tensor,
                      stages: int = GL_STAGES, rho: float = 0.1) -> torch.Tensor:
    """The independent reference: Gauss-Legendre collocation (order 2 * stages) on substeps of each
    piece (|h| max|p| <= rho, at least 4 per piece). For the linear ODE each step is one linear solve:
        (I - h A diag(p_k)) U = u 1 + h A q,   u <- u + h sum_k b_k (p_k U_k + q_k).
    Shapes as solve_closed_form."""
    a1, a2, a3, a4 = _coefficients(a1, a2, a3, a4)
    nodes, weights, A = _gauss_legendre(stages)
    m = max(4, _substeps(a2, a3, c, rho))
    u = u0.to(torch.float64).clone()
    eye = torch.eye(stages, dtype=torch.float64)
    for piece in pieces(c.shape[-1]):
        h_piece, c_s, slope = _piece_data(c, piece, t_q)
        h = (h_piece / m).unsqueeze(-1)  # (B, 1, 1)
        for i in range(m):
            tau = (i + nodes) * h  # (B, 1, s) offsets from the piece's start
            c_k = c_s.unsqueeze(-1) + slope.unsqueeze(-1) * tau  # (B, n, s)
            p = a2.unsqueeze(-1) * c_k + a3.unsqueeze(-1)
            q = a1.unsqueeze(-1) * c_k + a4.unsqueeze(-1)
            lhs = eye - h.unsqueeze(-1) * A * p.unsqueeze(-2)  # (B, n, s, s): A_ij p_j
            rhs = u.unsqueeze(-1) + h * (q @ A.T)
            U = torch.linalg.solve(lhs, rhs)
            u = u + h.squeeze(-1) * ((p * U + q) * weights).sum(-1)
    return u


def solve(eqn_class: int, a1, a2, a3, a4, c, u0, t_q) -> torch.Tensor:
    """The task's target solver: the closed form for eqn_class 1, the Taylor integrator otherwise."""
    if eqn_class == 1:
        return solve_closed_form(a1, a3, a4, c, u0, t_q)
    return solve_taylor(a1, a2, a3, a4, c, u0, t_q)


# ---- the task ---------------------------------------------------------------------------------


@dataclass
class ODEPrompts:
    """A batch of prompts, float64: a1..a4, t_q (B,); c (B, n, D) and u0 (B, n) exactly representable
    in the sampling dtype; u (B, n) the exact solutions at t_q."""

    a1: torch.Tensor
    a2: torch.Tensor
    a3: torch.Tensor
    a4: torch.Tensor
    t_q: torch.Tensor
    c: torch.Tensor
    u0: torch.Tensor
    u: torch.Tensor


def _finite_at_least_zero(name: str, value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise TaskConfigError(f"{name} must be a finite number >= 0, got {value}")


@register
class ODEOperator(Task):
    """ODE_OPERATOR: predict u(t_q) of the prompt's ODE for the last example (see the module docstring).

    Layout: token i = [c_i at the D grid points (D), u0_i, 1, u_i(t_q)] (0 instead of u for the last).
    Shapes: inputs (B, n_examples, n_points + 3); targets (B, n_examples, 1), scored only at the last
    position. Defaults: the paper's config (eqn_class 1, operator_scale 1, u0_scale 1, gp_length 0.1,
    25 examples, 21 points).
    """

    name: ClassVar[str] = "ode_operator"
    eqn_class: int = 1
    operator_scale: float = 1.0
    u0_scale: float = 1.0
    gp_length: float = 0.1
    n_examples: int = 25
    n_points: int = 21
    query_time: float | None = None

    @model_validator(mode="after")
    def _check_ode(self):
        if self.eqn_class not in (0, 1, 2):
            raise TaskConfigError(f"eqn_class must be 0 (every term), 1 (no a2 term) or 2 (no a1 term), "
                                  f"got {self.eqn_class}")
        _finite_at_least_zero("operator_scale", self.operator_scale)
        _finite_at_least_zero("u0_scale", self.u0_scale)
        if not (math.isfinite(self.gp_length) and self.gp_length > 0):
            raise TaskConfigError(f"gp_length must be a finite number > 0, got {self.gp_length}")
        if self.n_points < 2:
            raise TaskConfigError(f"n_points (D, the points c is given at) must be an integer >= 2, "
                                  f"got {self.n_points}")
        if self.n_examples < 2:
            raise TaskConfigError(f"n_examples must be an integer >= 2 (solved examples, then the query), "
                                  f"got {self.n_examples}")
        if self.query_time is not None and not (-1 <= self.query_time <= 1):
            raise TaskConfigError(f"query_time must be in [-1, 1] (or None: drawn per prompt), got {self.query_time}")
        return self

    @property
    def seq_len(self) -> int:
        return self.n_examples

    @property
    def d_in(self) -> int:
        return self.n_points + 3

    @property
    def d_out(self) -> int:
        return 1

    def prompts(self, batch_size: int, generator: torch.Generator, dtype: torch.dtype) -> ODEPrompts:
        """Draw `batch_size` prompts (draw order in the module docstring); c and u0 rounded to `dtype`."""
        B, n, D, s = batch_size, self.n_examples, self.n_points, self.operator_scale
        f64 = dict(generator=generator, dtype=torch.float64)
        a1 = 1 + s * (torch.rand(B, **f64) - 0.5)
        a2 = 1 + s * (torch.rand(B, **f64) - 0.5)
        a3 = s * (2 * torch.rand(B, **f64) - 1)
        a4 = s * (2 * torch.rand(B, **f64) - 1)
        if self.eqn_class == 1:
            a2 = torch.zeros_like(a2)
        if self.eqn_class == 2:
            a1 = torch.zeros_like(a1)
        t_q = 2 * torch.rand(B, **f64) - 1
        if self.query_time is not None:
            t_q = torch.full_like(t_q, self.query_time)
        c = round_to(sample_gp((B, n), D, self.gp_length, generator), dtype)
        u0 = round_to(self.u0_scale * (2 * torch.rand(B, n, **f64) - 1), dtype)
        u = solve(self.eqn_class, a1, a2, a3, a4, c, u0, t_q)
        return ODEPrompts(a1, a2, a3, a4, t_q, c, u0, u)

    def _sample_exact(self, batch_size, generator, dtype):
        p = self.prompts(batch_size, generator, dtype)
        B, n = batch_size, self.n_examples
        y = round_to(p.u, dtype).clone()  # round_to returns its argument itself for float64
        y[:, -1] = 0.0
        inputs = torch.cat([p.c, p.u0.unsqueeze(-1), torch.ones(B, n, 1, dtype=torch.float64), y.unsqueeze(-1)],
                           dim=-1)
        targets = torch.zeros(B, n, 1, dtype=torch.float64)
        targets[:, -1, 0] = p.u[:, -1]
        mask = torch.zeros(n, dtype=torch.bool)
        mask[-1] = True
        return inputs, targets, mask

    @torch.no_grad()
    def solver_error(self, *, n: int = 1024, seed: int = 0) -> dict:
        """The target solver against the independent Gauss-Legendre reference on `n` prompts of the eval
        stream (every example's solution, float64): MSE, ||err|| / ||u|| and max |err|. The task's solver floor."""
        p = self.prompts(n, stream_generator(seed, "eval"), torch.float64)
        ref = solve_collocation(p.a1, p.a2, p.a3, p.a4, p.c, p.u0, p.t_q)
        err = p.u - ref
        return {"mse": err.pow(2).mean().item(),
                "rel_l2": (err.norm() / ref.norm().clamp_min(1e-300)).item(),
                "max_abs": err.abs().max().item(),
                "target_mean_square": ref.pow(2).mean().item(),
                "solver": "closed form (integrating factor)" if self.eqn_class == 1 else "Taylor series, 24 terms",
                "reference": f"Gauss-Legendre collocation, {GL_STAGES} stages (order {2 * GL_STAGES})"}
