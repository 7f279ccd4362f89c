"""Token-wise primitives: MULTIPLY and the controls SQUARE and IDENTITY.

Token layout (all three): inputs x (B, L, d_in) Gaussian; every position is scored.
"""
from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import model_validator

from .base import Task, TaskConfigError, positive
from .registry import register


class _Tokenwise(Task):
    """Shared shape parameters: L tokens of width `width`, Gaussian inputs."""

    length: int = 40
    width: int = 20

    @model_validator(mode="after")
    def _check_sizes(self):
        positive("length", self.length)
        positive("width", self.width)
        return self

    @property
    def seq_len(self) -> int:
        return self.length

    @property
    def d_in(self) -> int:
        return self.width

    def _inputs(self, batch_size, generator, dtype):
        return self._draw((batch_size, self.length, self.width), generator, dtype)

    def _all_positions(self) -> torch.Tensor:
        return torch.ones(self.length, dtype=torch.bool)


@register
class Multiply(_Tokenwise):
    """MULTIPLY(a, b, d_out): y[:, t] = x[:, t, a:a+d_out] * x[:, t, b:b+d_out].

    Shapes: inputs (B, L, width), targets (B, L, d_out). Default (a, b, d_out) =
    (0, width/2, width/2): the paper's x[:, :, :10] * x[:, :, 10:] at width 20.
    """

    name: ClassVar[str] = "multiply"
    a: int | None = None
    b: int | None = None
    out_width: int | None = None

    @model_validator(mode="after")
    def _check_slices(self):
        if self.a is None and self.b is None and self.out_width is None:
            if self.width % 2:
                raise TaskConfigError(f"multiply needs an even input width, got {self.width}")
            return self
        a = 0 if self.a is None else self.a
        n = self.width // 2 if self.out_width is None else self.out_width
        b = n if self.b is None else self.b
        positive("out_width", n)
        for label, start in (("a", a), ("b", b)):
            if not 0 <= start <= self.width - n:
                raise TaskConfigError(
                    f"multiply: {label} must be in [0, width - out_width] = [0, {self.width - n}], got {start}"
                )
        return self

    @property
    def slices(self) -> tuple[int, int, int]:
        n = self.width // 2 if self.out_width is None else self.out_width
        a = 0 if self.a is None else self.a
        b = n if self.b is None else self.b
        return a, b, n

    @property
    def d_out(self) -> int:
        return self.slices[2]

    def _sample_exact(self, batch_size, generator, dtype):
        x = self._inputs(batch_size, generator, dtype)
        a, b, n = self.slices
        return x, x[..., a : a + n] * x[..., b : b + n], self._all_positions()


@register
class Square(_Tokenwise):
    """SQUARE (control): y = x * x elementwise. Shapes (B, L, width) -> (B, L, width)."""

    name: ClassVar[str] = "square"

    @property
    def d_out(self) -> int:
        return self.width

    def _sample_exact(self, batch_size, generator, dtype):
        x = self._inputs(batch_size, generator, dtype)
        return x, x * x, self._all_positions()


@register
class Identity(_Tokenwise):
    """IDENTITY (control): y = x. Shapes (B, L, width) -> (B, L, width)."""

    name: ClassVar[str] = "identity"

    @property
    def d_out(self) -> int:
        return self.width

    def _sample_exact(self, batch_size, generator, dtype):
        x = self._inputs(batch_size, generator, dtype)
        return x, x.clone(), self._all_positions()
