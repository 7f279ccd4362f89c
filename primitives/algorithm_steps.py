"""Least-squares tasks: the solution itself and single steps of the algorithms that reach it.

All draw their problems from `least_squares.sample_least_squares` (parameters D, N,
kappa, sigma, a_scale, x_scale; see `LeastSquaresTask`) and score only the positions
named below. Targets come from `primitives.algorithms`, in float64, from the rounded inputs.
"""
from __future__ import annotations

import math
from typing import ClassVar, Literal

import torch
from pydantic import model_validator

from . import algorithms as alg
from .base import TaskConfigError, positive, positive_finite, round_to
from .least_squares import GD_LAYOUTS, LeastSquaresTask
from .registry import register


@register
class LeastSquares(LeastSquaresTask):
    """LEAST_SQUARES: read the rows of A and b, output the least-squares solution.

    Layout: token i = [a_i (D), b_i] for i = 0..N-1.
    Shapes: inputs (B, N, D + 1); targets (B, N, D), scored only at the last position
    N - 1, where the target is argmin_x ||A x - b|| of the rounded inputs (= x* when sigma = 0,
    up to input rounding). Needs N >= D.
    """

    name: ClassVar[str] = "least_squares"
    needs_full_rank: ClassVar[bool] = True

    @property
    def seq_len(self) -> int:
        return self.N

    @property
    def d_in(self) -> int:
        return self.D + 1

    @property
    def d_out(self) -> int:
        return self.D

    def _sample_exact(self, batch_size, generator, dtype):
        p = self._problem(batch_size, generator, dtype)
        inputs = torch.cat([p.A, p.b.unsqueeze(-1)], dim=-1)
        return inputs, *self._last_position(batch_size, p.x_ls)


class _GDLayout(LeastSquaresTask):
    """The GD-step layouts (`layout`, least_squares.GD_LAYOUTS):

        first_token  token 0 = [x0 (D), 0], tokens 1..N = [a_i (D), b_i]: inputs (B, N + 1, D + 1)
        broadcast    token i = [a_i (D), b_i, x0 (D)], i = 1..N (Liu et al.'s): inputs (B, N, 2D + 1)
    """

    layout: Literal["first_token", "broadcast"] = "first_token"

    def tokens(self, A: torch.Tensor, b: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The input sequence of problems (A, b) at the point x, in this task's layout."""
        return GD_LAYOUTS[self.layout](A, b, x)

    @property
    def seq_len(self) -> int:
        return self.N + 1 if self.layout == "first_token" else self.N

    @property
    def d_in(self) -> int:
        return self.D + 1 if self.layout == "first_token" else 2 * self.D + 1

    @property
    def d_out(self) -> int:
        return self.D


@register
class GDStep(_GDLayout):
    """GD_STEP: the explicit gradient A^T (A x0 - b) / N (the paper's least-squares primitive).

    Layout (`layout`, see _GDLayout): token 0 = [x0 (D), 0], tokens 1..N = [a_i (D), b_i]; or
    broadcast, token i = [a_i (D), b_i, x0 (D)].
    Shapes: inputs (B, N + 1, D + 1) (broadcast: (B, N, 2D + 1)); targets (B, L, D), scored only at
    the last position, where the target is the gradient at x0.
    """

    name: ClassVar[str] = "gd_step"

    def _sample_exact(self, batch_size, generator, dtype):
        p = self._problem(batch_size, generator, dtype)
        return self.tokens(p.A, p.b, p.x0), *self._last_position(batch_size, alg.gradient(p.A, p.b, p.x0))


@register
class GDK(_GDLayout):
    """GD_K: the iterate x_k after k >= 1 GD steps x_{t+1} = x_t - eta A^T (A x_t - b) / N.

    Layout as gd_step (`layout`): token 0 = [x0 (D), 0], tokens 1..N = [a_i (D), b_i], or broadcast.
    Shapes: inputs (B, N + 1, D + 1) (broadcast: (B, N, 2D + 1)); targets (B, L, D), scored only at
    the last position.
    Default eta = 0.5: stable for the default D = 5, N = 20 (largest eigenvalue of
    A^T A / N is about (1 + sqrt(D / N))^2 = 2.25 < 2 / eta).
    """

    name: ClassVar[str] = "gd_k"
    k: int = 1
    eta: float = 0.5

    @model_validator(mode="after")
    def _check_steps(self):
        positive("k", self.k)
        positive_finite("eta", self.eta)
        return self

    def _sample_exact(self, batch_size, generator, dtype):
        p = self._problem(batch_size, generator, dtype)
        x_k = alg.gd_iterates(p.A, p.b, p.x0, self.eta, self.k)[:, -1]
        return self.tokens(p.A, p.b, p.x0), *self._last_position(batch_size, x_k)


@register
class NewtonStep(_GDLayout):
    """NEWTON_STEP: x1 = x0 - M^{-1} A^T (A x0 - b) / N with M = A^T A / N.

    Layout: token 0 = [x0 (D), 0], tokens 1..N = [a_i (D), b_i], and with
    `with_inverse=True` D more tokens N+1..N+D = [row r of M^{-1} (D), 0] (M^{-1} rounded
    to the training dtype like every input).
    Shapes: inputs (B, N + 1 (+ D), D + 1); targets (B, L, D), scored only at the last position.
    Target: without the inverse, the Newton step, which is the least-squares solution from
    any x0; with it, x0 - Minv_in A^T (A x0 - b) / N using the given (rounded) inverse, so
    the target is an exact function of what the model sees. Needs N >= D.
    """

    name: ClassVar[str] = "newton_step"
    needs_full_rank: ClassVar[bool] = True
    with_inverse: bool = False

    @model_validator(mode="after")
    def _check_inverse_layout(self):
        if self.with_inverse and self.layout != "first_token":
            raise TaskConfigError("newton_step: with_inverse=True appends the rows of M^-1 to the first_token layout; "
                                  f"set layout='first_token' or with_inverse=False, got layout={self.layout!r}")
        return self

    @property
    def seq_len(self) -> int:
        return super().seq_len + (self.D if self.with_inverse else 0)

    def _sample_exact(self, batch_size, generator, dtype):
        p = self._problem(batch_size, generator, dtype)
        tokens = self.tokens(p.A, p.b, p.x0)
        if not self.with_inverse:
            return tokens, *self._last_position(batch_size, alg.newton_step(p.A, p.b, p.x0))
        M_inv = round_to(torch.linalg.inv(alg.hessian(p.A)), dtype)
        inv_tokens = torch.cat([M_inv, torch.zeros_like(M_inv[..., :1])], dim=-1)
        x1 = p.x0 - (M_inv @ alg.gradient(p.A, p.b, p.x0).unsqueeze(-1)).squeeze(-1)
        return torch.cat([tokens, inv_tokens], dim=1), *self._last_position(batch_size, x1)


@register
class NewtonSchulz(LeastSquaresTask):
    """NEWTON_SCHULZ: one step X_{k+1} = X_k (2 I - M X_k) towards M^{-1}, M = A^T A / N.

    Layout (token width 2D, two channel groups so operand and iterate never share channels):
      operand="A" (default): tokens 0..N-1 = [a_i (D), 0 (D)], then tokens N..N+D-1 = [0 (D), row r of X_k (D)]
      operand="M":           tokens 0..D-1 = [row r of M (D), 0 (D)], then tokens D..2D-1 = [0 (D), row r of X_k (D)]
    Shapes: inputs (B, L, 2D) with L = N + D ("A") or 2D ("M"); targets (B, L, D), scored at
    the last D positions, where position (L - D + r) holds row r of X_{k+1}.
    The iterate X_k given as input:
      init="scaled_transpose": X_0 = M^T / (||M||_1 ||M||_inf), then `start_iteration`
        Newton-Schulz steps in float64 (so later, faster-converging stages can be trained);
      init="perturbed": X = M^{-1} (I + perturbation * E), E Gaussian scaled to spectral
        norm 1, so ||I - M X||_2 = perturbation exactly (< 1: the iteration converges).
    M is formed in float64 from the rounded A (or rounded itself with operand="M"); X_k is
    rounded to the training dtype; the target is computed from those. Needs N >= D.
    """

    name: ClassVar[str] = "newton_schulz"
    needs_full_rank: ClassVar[bool] = True
    operand: Literal["A", "M"] = "A"
    init: Literal["scaled_transpose", "perturbed"] = "scaled_transpose"
    start_iteration: int = 0
    perturbation: float = 0.1

    @model_validator(mode="after")
    def _check_iterate(self):
        if self.start_iteration < 0:
            raise TaskConfigError(f"start_iteration must be an integer >= 0, got {self.start_iteration}")
        if not (math.isfinite(self.perturbation) and 0 <= self.perturbation < 1):
            raise TaskConfigError(
                f"perturbation must be in [0, 1) (Newton-Schulz converges iff ||I - M X|| < 1), got {self.perturbation}"
            )
        return self

    @property
    def _operand_len(self) -> int:
        return self.N if self.operand == "A" else self.D

    @property
    def seq_len(self) -> int:
        return self._operand_len + self.D

    @property
    def d_in(self) -> int:
        return 2 * self.D

    @property
    def d_out(self) -> int:
        return self.D

    def _iterate(self, M: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        if self.init == "scaled_transpose":
            return alg.newton_schulz_iterates(M, alg.newton_schulz_init(M), self.start_iteration)[:, -1]
        E = torch.randn(M.shape, generator=generator, dtype=torch.float64)
        E = E / torch.linalg.matrix_norm(E, ord=2)[:, None, None]
        eye = torch.eye(self.D, dtype=torch.float64)
        return torch.linalg.inv(M) @ (eye + self.perturbation * E)

    def _sample_exact(self, batch_size, generator, dtype):
        p = self._problem(batch_size, generator, dtype)
        M = alg.hessian(p.A)
        operand = p.A
        if self.operand == "M":
            M = round_to(M, dtype)
            operand = M
        X = round_to(self._iterate(M, generator), dtype)
        operand_tokens = torch.cat([operand, torch.zeros_like(operand)], dim=-1)
        iterate_tokens = torch.cat([torch.zeros_like(X), X], dim=-1)
        inputs = torch.cat([operand_tokens, iterate_tokens], dim=1)
        targets = torch.zeros(batch_size, self.seq_len, self.D, dtype=torch.float64)
        targets[:, self._operand_len :] = alg.newton_schulz_step(M, X)
        mask = torch.zeros(self.seq_len, dtype=torch.bool)
        mask[self._operand_len :] = True
        return inputs, targets, mask
