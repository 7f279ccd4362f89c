"""The linear algebra of the matrix-free Levenberg-Marquardt: preconditioned conjugate gradients, and the
running estimate of the Gauss-Newton matrix its preconditioner is built from."""
from __future__ import annotations

from typing import Callable, Optional

import torch

Operator = Callable[[torch.Tensor], torch.Tensor]

# the preconditioner is (G_est + mu D)^-PRECONDITION_POWER: between Jacobi's 1 and the square root's 1/2,
# since G_est is an estimate
PRECONDITION_POWER = 0.75


def pcg(matvec: Operator, b: torch.Tensor, x0: Optional[torch.Tensor], precond: Optional[Operator], max_iter: int,
        tol: float, scale_start: bool = False) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Preconditioned conjugate gradients for A x = b, A symmetric positive definite.

    precond: v -> M^-1 v, symmetric positive definite (None: no preconditioner). Stops when
    |b - A x| <= tol |b| or after max_iter products of A (a warm start x0 costs one). With
    `scale_start`, CG starts from the multiple of x0 that minimizes its quadratic (b.x0 / x0.A x0, zero if
    that is negative), at no extra product: a start of the right direction but another length.
    Returns (x, b - A x, products used)."""
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    if x0 is not None and scale_start:
        a_x0 = matvec(x)
        curvature = x @ a_x0
        alpha = max((b @ x / curvature).item(), 0.0) if curvature > 0 else 0.0
        x, r = alpha * x, b - alpha * a_x0
    else:
        r = b - matvec(x) if x0 is not None else b.clone()
    used = 1 if x0 is not None else 0
    b_norm = b.norm()
    z = precond(r) if precond is not None else r
    p = z.clone()
    rz = r @ z
    for _ in range(max_iter - used):  # the warm start's residual counts as one product
        if r.norm() <= tol * b_norm:
            break
        ap = matvec(p)
        used += 1
        curvature = p @ ap
        if not curvature > 0:  # A is positive definite in exact arithmetic; stop where rounding says otherwise
            break
        alpha = rz / curvature
        x += alpha * p
        r -= alpha * ap
        z = precond(r) if precond is not None else r
        rz_next = r @ z
        p = z + (rz_next / rz) * p
        rz = rz_next
    return x, r, used


class CurvatureEstimate:
    """Running estimates of the Gauss-Newton matrix G's blocks, from probes M = J^T z (z Rademacher
    over the residuals, so E[M M^T] = J^T J): its diagonal for every weight (Hutchinson), and for each
    2-D weight W (m x n) the Kronecker factors L = E[M_W M_W^T], R = E[M_W^T M_W] (Shampoo's
    statistics): if the block is A (x) B, the map V -> L V R / tr(L) is exactly V -> A V B. Averaged
    over steps with weight `decay` on the past."""

    def __init__(self, shapes, kronecker: bool, decay: float = 0.5):
        self.shapes = list(shapes)
        self.numels = [int(torch.Size(s).numel()) for s in self.shapes]
        self.kronecker = kronecker
        self.decay = decay
        self.diag: Optional[torch.Tensor] = None
        self.factors: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def is_matrix(self, i: int) -> bool:
        return self.kronecker and len(self.shapes[i]) == 2 and min(self.shapes[i]) > 1

    def update(self, probes: list[torch.Tensor], scale: float) -> None:
        diag = sum(p.pow(2) for p in probes) / (len(probes) * scale)
        self.diag = diag if self.diag is None else self.decay * self.diag + (1 - self.decay) * diag
        for i, shape in enumerate(self.shapes):
            if not self.is_matrix(i):
                continue
            ms = [piece.view(shape) for piece in (p.split(self.numels)[i] for p in probes)]
            left = sum(m @ m.T for m in ms) / (len(ms) * scale)
            right = sum(m.T @ m for m in ms) / (len(ms) * scale)
            if i in self.factors:
                old_l, old_r = self.factors[i]
                left, right = self.decay * old_l + (1 - self.decay) * left, self.decay * old_r + (1 - self.decay) * right
            self.factors[i] = (left, right)

    def floored_diag(self) -> torch.Tensor:
        # a floor keeps directions the probes missed (and unused weights) from a zero scale
        return self.diag.clamp_min(1e-12 * float(self.diag.mean()) + 1e-300)

    def inverse(self, mu: float) -> Operator:
        """v -> (G_est + mu I)^-PRECONDITION_POWER v, block by block."""
        power = PRECONDITION_POWER
        inv_diag = (self.floored_diag() + mu).pow(-power)
        blocks = {}
        for i, (left, right) in self.factors.items():
            t = torch.trace(left).clamp_min(1e-300)
            el, ql = torch.linalg.eigh(left)
            er, qr = torch.linalg.eigh(right)
            eig = (el.clamp_min(0)[:, None] * er.clamp_min(0)[None, :] / t + mu).clamp_min(1e-300)
            blocks[i] = (ql, qr, eig.pow(-power))

        def apply(v: torch.Tensor) -> torch.Tensor:
            out = v * inv_diag
            if blocks:
                pieces = list(out.split(self.numels))
                for i, (ql, qr, w) in blocks.items():
                    m = v.split(self.numels)[i].view(self.shapes[i])
                    pieces[i] = (ql @ ((ql.T @ m @ qr) * w) @ qr.T).reshape(-1)
                out = torch.cat(pieces)
            return out

        return apply
