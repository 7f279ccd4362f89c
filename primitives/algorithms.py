"""Reference implementations of the least-squares algorithms the tasks are built from.

One canonical version of each step, used for the task targets (always called with
float64 tensors there), by the exact weight constructions in architectures/ and by
the bench tables (which may call them in float32 to measure "true GD in float32").
Every function computes in the dtype of its arguments and broadcasts over leading
batch dimensions:

    A (..., N, D)   b (..., N)   x (..., D)   M, X (..., D, D)

Conventions (Liu et al. 2025): the least-squares loss is ||A x - b||^2 / (2N), so
    gradient(A, b, x) = A^T (A x - b) / N,   hessian M = A^T A / N,
    GD:            x_{t+1} = x_t - eta * A^T (A x_t - b) / N
    Newton:        x_1 = x_0 - M^{-1} A^T (A x_0 - b) / N   (= the least-squares solution)
    Newton-Schulz: X_{k+1} = X_k (2 I - M X_k)              (-> M^{-1} quadratically)
"""
from __future__ import annotations

import torch


def _mv(A: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return (A @ x.unsqueeze(-1)).squeeze(-1)


def residual(A: torch.Tensor, b: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A x - b, shape (..., N)."""
    return _mv(A, x) - b


def gradient(A: torch.Tensor, b: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A^T (A x - b) / N, shape (..., D): the explicit gradient of ||A x - b||^2 / (2N)."""
    return _mv(A.transpose(-1, -2), residual(A, b, x)) / A.shape[-2]


def hessian(A: torch.Tensor) -> torch.Tensor:
    """M = A^T A / N, shape (..., D, D)."""
    return A.transpose(-1, -2) @ A / A.shape[-2]


def gd_step(A: torch.Tensor, b: torch.Tensor, x: torch.Tensor, eta: float) -> torch.Tensor:
    """One gradient-descent step x - eta * A^T (A x - b) / N."""
    return x - eta * gradient(A, b, x)


def gd_iterates(A: torch.Tensor, b: torch.Tensor, x0: torch.Tensor, eta: float, k: int) -> torch.Tensor:
    """All GD iterates x_0, x_1, ..., x_k stacked: shape (..., k + 1, D)."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    xs = [x0]
    for _ in range(k):
        xs.append(gd_step(A, b, xs[-1], eta))
    return torch.stack(xs, dim=-2)


def least_squares_solution(A: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """argmin_x ||A x - b|| for full-column-rank A (N >= D), via Householder QR.

    QR rather than the normal equations: its error grows with cond(A), not cond(A)^2.
    """
    Q, R = torch.linalg.qr(A, mode="reduced")
    rhs = (Q.transpose(-1, -2) @ b.unsqueeze(-1))
    return torch.linalg.solve_triangular(R, rhs, upper=True).squeeze(-1)


def newton_step(A: torch.Tensor, b: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """One Newton step x0 - M^{-1} A^T (A x0 - b) / N; lands on the least-squares solution.

    Applied as x0 - A^+ (A x0 - b) (the same map, M^{-1} A^T / N = A^+) through QR, so the
    rounding error grows with cond(A), not with cond(M) = cond(A)^2.
    """
    return x0 - least_squares_solution(A, residual(A, b, x0))


def newton_schulz_init(M: torch.Tensor) -> torch.Tensor:
    """X_0 = M^T / (||M||_1 ||M||_inf): guarantees ||I - M X_0||_2 < 1, so Newton-Schulz converges."""
    norm_1 = M.abs().sum(dim=-2).amax(dim=-1)  # max column sum
    norm_inf = M.abs().sum(dim=-1).amax(dim=-1)  # max row sum
    return M.transpose(-1, -2) / (norm_1 * norm_inf)[..., None, None]


def newton_schulz_step(M: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """X (2 I - M X): one Newton-Schulz step towards M^{-1}; I - M X_{k+1} = (I - M X_k)^2."""
    eye = torch.eye(M.shape[-1], dtype=M.dtype, device=M.device)
    return X @ (2 * eye - M @ X)


def newton_schulz_iterates(M: torch.Tensor, X0: torch.Tensor, k: int) -> torch.Tensor:
    """X_0, ..., X_k stacked: shape (..., k + 1, D, D)."""
    Xs = [X0]
    for _ in range(k):
        Xs.append(newton_schulz_step(M, Xs[-1]))
    return torch.stack(Xs, dim=-3)
