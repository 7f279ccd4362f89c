"""The least-squares problem sampler shared by the algorithm tasks.

One problem per batch element:

    A   (N, D)  Gaussian N(0, 1) entries, or with a prescribed condition number kappa:
                A = sqrt(N) * U diag(s) V^T, U (N, D) and V (D, D) Haar-orthonormal,
                s_i = kappa^(i / (D - 1)) log-spaced in [1, kappa]; so cond(A) = kappa and
                M = A^T A / N has eigenvalues in [1, kappa^2] (a Gaussian A has M ~ I).
    x*  (D,)    N(0, I)
    x0  (D,)    N(0, I), the starting point of the iterative methods
    b   (N,)    A x* + sigma * N(0, I)   (sigma > 0: an inconsistent system)

`a_scale` multiplies A and `x_scale` multiplies x* and x0 (for out-of-distribution
tests of learned steps). A, b and x0 are the model's inputs, so each is rounded once
to the training dtype (b after it is formed); the least-squares solution `x_ls` is then
computed in float64 from the rounded A and b. It is the exact target, which for sigma = 0
equals x* up to the rounding of the inputs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from pydantic import model_validator

from .algorithms import least_squares_solution
from .base import Task, TaskConfigError, check_float_dtype, positive, positive_finite, round_to


@dataclass
class LeastSquaresProblem:
    """A batch of problems, all float64; A, b, x0 exactly representable in the sampling dtype.

    A (B, N, D), b (B, N), x_star (B, D) (the generating solution, not rounded),
    x0 (B, D), x_ls (B, D) least-squares solution of the rounded (A, b), or None if N < D.
    """

    A: torch.Tensor
    b: torch.Tensor
    x_star: torch.Tensor
    x0: torch.Tensor
    x_ls: torch.Tensor | None


def _haar_orthonormal(batch_size: int, rows: int, cols: int, generator: torch.Generator) -> torch.Tensor:
    """(B, rows, cols) with orthonormal columns, Haar distributed (QR of a Gaussian, sign-fixed)."""
    G = torch.randn(batch_size, rows, cols, generator=generator, dtype=torch.float64)
    Q, R = torch.linalg.qr(G, mode="reduced")
    signs = torch.sign(torch.diagonal(R, dim1=-2, dim2=-1))
    signs = torch.where(signs == 0, torch.ones_like(signs), signs)
    return Q * signs.unsqueeze(-2)


def conditioned_singular_values(D: int, kappa: float) -> torch.Tensor:
    """s_i = kappa^(i / (D - 1)), i = 0..D-1: log-spaced from 1 to kappa (s = [1] when D = 1)."""
    if D == 1:
        return torch.ones(1, dtype=torch.float64)
    return torch.tensor(kappa, dtype=torch.float64) ** torch.linspace(0, 1, D, dtype=torch.float64)


def sample_least_squares(
    batch_size: int,
    *,
    D: int = 5,
    N: int = 20,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float64,
    kappa: float | None = None,
    sigma: float = 0.0,
    a_scale: float = 1.0,
    x_scale: float = 1.0,
) -> LeastSquaresProblem:
    """Draw `batch_size` problems (see the module docstring). Draw order: A, x*, x0, noise."""
    dtype = check_float_dtype(dtype)
    g = generator
    if kappa is None:
        A = torch.randn(batch_size, N, D, generator=g, dtype=torch.float64)
    else:
        if N < D:
            raise TaskConfigError(f"kappa needs N >= D (full column rank), got N={N} < D={D}")
        U = _haar_orthonormal(batch_size, N, D, g)
        V = _haar_orthonormal(batch_size, D, D, g)
        s = conditioned_singular_values(D, kappa)
        A = math.sqrt(N) * (U * s) @ V.transpose(-1, -2)
    A = round_to(A * a_scale, dtype)
    x_star = torch.randn(batch_size, D, generator=g, dtype=torch.float64) * x_scale
    x0 = round_to(torch.randn(batch_size, D, generator=g, dtype=torch.float64) * x_scale, dtype)
    b = (A @ x_star.unsqueeze(-1)).squeeze(-1)
    if sigma > 0:
        b = b + sigma * torch.randn(batch_size, N, generator=g, dtype=torch.float64)
    b = round_to(b, dtype)
    x_ls = least_squares_solution(A, b) if N >= D else None
    return LeastSquaresProblem(A=A, b=b, x_star=x_star, x0=x0, x_ls=x_ls)


class LeastSquaresTask(Task):
    """Shared parameters of the algorithm tasks: the problem size and distribution.

    D: unknowns (>= 1); N: equations (>= 1; >= D where the task needs a determined
    system); kappa: condition number of A (None: Gaussian A; else >= 1); sigma: noise
    on b (>= 0); a_scale, x_scale: input scales (> 0).
    """

    needs_full_rank: ClassVar[bool] = False

    D: int = 5
    N: int = 20
    kappa: float | None = None
    sigma: float = 0.0
    a_scale: float = 1.0
    x_scale: float = 1.0

    @model_validator(mode="after")
    def _check_problem(self):
        positive("D", self.D)
        positive("N", self.N)
        if self.kappa is not None and not (math.isfinite(self.kappa) and self.kappa >= 1):
            raise TaskConfigError(f"kappa (condition number) must be a finite number >= 1, got {self.kappa}")
        if not (math.isfinite(self.sigma) and self.sigma >= 0):
            raise TaskConfigError(f"sigma (noise on b) must be a finite number >= 0, got {self.sigma}")
        positive_finite("a_scale", self.a_scale)
        positive_finite("x_scale", self.x_scale)
        if (self.needs_full_rank or self.kappa is not None) and self.N < self.D:
            why = "a determined system (full column rank A)" if self.needs_full_rank else "a condition number"
            raise TaskConfigError(f"{self.name} needs N >= D for {why}, got N={self.N} < D={self.D}")
        return self

    def _problem(self, batch_size: int, generator: torch.Generator, dtype: torch.dtype) -> LeastSquaresProblem:
        return sample_least_squares(
            batch_size,
            D=self.D,
            N=self.N,
            generator=generator,
            dtype=dtype,
            kappa=self.kappa,
            sigma=self.sigma,
            a_scale=self.a_scale,
            x_scale=self.x_scale,
        )

    def _last_position(self, batch_size: int, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Targets (B, L, width) holding `value` (B, width) at the last position, and its mask."""
        targets = torch.zeros(batch_size, self.seq_len, value.shape[-1], dtype=torch.float64)
        targets[:, -1] = value
        mask = torch.zeros(self.seq_len, dtype=torch.bool)
        mask[-1] = True
        return targets, mask


def gd_tokens(A: torch.Tensor, b: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """The GD layout: token 0 = [x (D), 0], tokens 1..N = [a_i (D), b_i]; (B, N + 1, D + 1), in the
    inputs' dtype. The one definition of the layout: the gd_step / gd_k / newton_step tasks, the hand-set
    constructions (architectures.constructions) and the iterated steps (bench.harness.iterate) all build it here."""
    first = torch.cat([x, torch.zeros_like(x[:, :1])], dim=-1).unsqueeze(1)
    rows = torch.cat([A, b.unsqueeze(-1)], dim=-1)
    return torch.cat([first, rows], dim=1)


def broadcast_tokens(A: torch.Tensor, b: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Liu et al.'s layout: token i = [a_i (D), b_i, x (D)] for i = 1..N, x in every token; (B, N, 2D + 1).
    No position is set apart for x, so a causal model need not first find where it is."""
    return torch.cat([A, b.unsqueeze(-1), x.unsqueeze(1).expand(-1, A.shape[1], -1)], dim=-1)


# the token layouts of the GD-step tasks (their `layout` parameter), by name
GD_LAYOUTS = {"first_token": gd_tokens, "broadcast": broadcast_tokens}
