"""In-context linear regression: infer w from (x_i, y_i) pairs, predict the next y."""
from __future__ import annotations

import math
from typing import ClassVar

import torch
from pydantic import model_validator

from .base import Task, TaskConfigError, positive, round_to
from .registry import register


@register
class ICLRegression(Task):
    """ICL_REGRESSION: y_i = w . x_i + sigma * noise, w ~ N(0, I_D) per sequence, x_i ~ N(0, I_D).

    Layout (N pairs, interleaved): token 2i = [x_i (D), 0], token 2i + 1 = [0 (D), y_i].
    Shapes: inputs (B, 2N, D + 1); targets (B, 2N, 1).
    Scored positions: the x-tokens 2i with i >= score_from; their target is y_i, predicted
    from the pairs before it and x_i. Default score_from = D: from then on (sigma = 0) the
    earlier pairs determine w, so an exact answer exists and precision can be measured;
    score_from = 0 scores every x-token. With sigma > 0 the noise (variance sigma^2) is
    irreducible. y_i is exact in float64 from the rounded x_i; its token holds y_i rounded.
    """

    name: ClassVar[str] = "icl_regression"
    D: int = 5
    N: int = 20
    sigma: float = 0.0
    score_from: int | None = None

    @model_validator(mode="after")
    def _check_icl(self):
        positive("D", self.D)
        positive("N", self.N)
        if not (math.isfinite(self.sigma) and self.sigma >= 0):
            raise TaskConfigError(f"sigma (noise on y) must be a finite number >= 0, got {self.sigma}")
        if not 0 <= self.first_scored < self.N:
            raise TaskConfigError(
                f"score_from must be in [0, N - 1] = [0, {self.N - 1}], got {self.first_scored}"
                + (" (the default is D; lower it or raise N)" if self.score_from is None else "")
            )
        return self

    @property
    def first_scored(self) -> int:
        return self.D if self.score_from is None else self.score_from

    @property
    def seq_len(self) -> int:
        return 2 * self.N

    @property
    def d_in(self) -> int:
        return self.D + 1

    @property
    def d_out(self) -> int:
        return 1

    def _sample_exact(self, batch_size, generator, dtype):
        B, N, D = batch_size, self.N, self.D
        w = torch.randn(B, D, generator=generator, dtype=torch.float64)
        x = self._draw((B, N, D), generator, dtype)
        y = (x @ w.unsqueeze(-1)).squeeze(-1)
        if self.sigma > 0:
            y = y + self.sigma * torch.randn(B, N, generator=generator, dtype=torch.float64)
        inputs = torch.zeros(B, 2 * N, D + 1, dtype=torch.float64)
        inputs[:, 0::2, :D] = x
        inputs[:, 1::2, D] = round_to(y, dtype)
        targets = torch.zeros(B, 2 * N, 1, dtype=torch.float64)
        targets[:, 0::2, 0] = y
        mask = torch.zeros(2 * N, dtype=torch.bool)
        mask[2 * self.first_scored :: 2] = True
        return inputs, targets, mask
