"""Token-mixing and channel-mixing linear primitives: READ and LINEAR (Liu et al. 2025).

Both take L tokens of width d Gaussian inputs (default 40 x 20, as the paper) and
score every position. Their fixed parameters (READ's i, j when not given; LINEAR's H)
are drawn once from the task's own random stream ("task", seeded by `seed`).
"""
from __future__ import annotations

import math
from typing import ClassVar

import torch
from pydantic import PrivateAttr, model_validator

from .base import TaskConfigError, positive, positive_finite
from .elementwise import _Tokenwise
from .registry import register


@register
class Read(_Tokenwise):
    """READ(i, j, a, b): copy columns a:b of token i to position j.

    Output at every position t != j is x[:, t, a:b]; at position j it is x[:, i, a:b].
    i <= j, so a causal model can solve it. i and j are given, or the missing ones are
    drawn once from the task seed (j uniform in [i, L) given i, i uniform in [0, j] given j,
    a uniform pair i <= j given neither). a:b defaults to all columns 0:width.
    Shapes: inputs (B, length, width); targets (B, length, b - a); every position scored.
    """

    name: ClassVar[str] = "read"
    i: int | None = None
    j: int | None = None
    a: int = 0
    b: int | None = None
    _ij: tuple[int, int] = PrivateAttr()

    @model_validator(mode="after")
    def _check_read(self):
        L, w = self.length, self.width
        for label, v in (("i", self.i), ("j", self.j)):
            if v is not None and not 0 <= v < L:
                raise TaskConfigError(f"{label} must be in [0, length - 1] = [0, {L - 1}], got {v}")
        if self.i is not None and self.j is not None and self.i > self.j:
            raise TaskConfigError(
                f"read needs i <= j (a causal model cannot read a later token), got i={self.i} > j={self.j}"
            )
        b = w if self.b is None else self.b
        if not 0 <= self.a < b <= w:
            raise TaskConfigError(
                f"columns a:b need 0 <= a < b <= width = {w}, got a={self.a}, b={b}"
            )
        self._resolve_positions()  # only after the checks: the draws need valid ranges
        return self

    def _resolve_positions(self) -> None:
        i, j = self.i, self.j
        g = self._task_generator()
        if i is None and j is None:
            i, j = sorted(torch.randint(0, self.length, (2,), generator=g).tolist())
        elif i is None:
            i = int(torch.randint(0, j + 1, (1,), generator=g))
        elif j is None:
            j = int(torch.randint(i, self.length, (1,), generator=g))
        self._ij = (i, j)

    @property
    def positions(self) -> tuple[int, int]:
        """The resolved (i, j): read token i, write at position j."""
        return self._ij

    def describe(self) -> dict:
        i, j = self.positions
        return {**super().describe(), "resolved_i": i, "resolved_j": j}

    @property
    def columns(self) -> tuple[int, int]:
        return self.a, self.width if self.b is None else self.b

    @property
    def d_out(self) -> int:
        a, b = self.columns
        return b - a

    def _sample_exact(self, batch_size, generator, dtype):
        x = self._inputs(batch_size, generator, dtype)
        (i, j), (a, b) = self.positions, self.columns
        y = x[..., a:b].clone()
        y[:, j] = x[:, i, a:b]
        return x, y, self._all_positions()


@register
class Linear(_Tokenwise):
    """LINEAR(H): y_t = x_t H at every position, H (width, d_out) fixed.

    Default (the paper): one output, H = c ~ scale * N(0, I) with scale 3, drawn from the task
    seed. `out_width=k` draws a random H with k outputs; `matrix=[[...], ...]` (width rows,
    d_out columns) gives H explicitly. H is kept in float64 (it is what the model must learn,
    not an input). Shapes: inputs (B, length, width); targets (B, length, d_out); every
    position scored.
    """

    name: ClassVar[str] = "linear"
    out_width: int | None = None
    matrix: tuple[tuple[float, ...], ...] | None = None  # accepts a list of lists
    scale: float = 3.0
    _H_rows: tuple[tuple[float, ...], ...] = PrivateAttr()  # a tuple, so tasks compare and hash

    @model_validator(mode="after")
    def _check_linear(self):
        positive_finite("scale", self.scale)
        if self.out_width is not None:
            positive("out_width", self.out_width)
        if self.matrix is not None:
            rows = len(self.matrix)
            cols = {len(r) for r in self.matrix}
            if rows != self.width:
                raise TaskConfigError(f"matrix must have width = {self.width} rows, got {rows}")
            if len(cols) != 1 or 0 in cols:
                raise TaskConfigError(f"matrix rows must all have the same length >= 1, got lengths {sorted(cols)}")
            if self.out_width is not None and cols != {self.out_width}:
                raise TaskConfigError(
                    f"out_width = {self.out_width} disagrees with the matrix's {cols.pop()} columns"
                )
            if not all(math.isfinite(v) for r in self.matrix for v in r):
                raise TaskConfigError("matrix entries must be finite")
        self._build_matrix()
        return self

    def _build_matrix(self) -> None:
        if self.matrix is not None:
            H = torch.tensor(self.matrix, dtype=torch.float64)
        else:
            k = 1 if self.out_width is None else self.out_width
            H = self.scale * torch.randn(self.width, k, generator=self._task_generator(), dtype=torch.float64)
        self._H_rows = tuple(tuple(row) for row in H.tolist())  # float64 -> Python float is exact

    @property
    def H(self) -> torch.Tensor:
        """The (width, d_out) float64 matrix."""
        return torch.tensor(self._H_rows, dtype=torch.float64)

    @property
    def d_out(self) -> int:
        return len(self._H_rows[0])

    def _sample_exact(self, batch_size, generator, dtype):
        x = self._inputs(batch_size, generator, dtype)
        return x, x @ self.H, self._all_positions()
