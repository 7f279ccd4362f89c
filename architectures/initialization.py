"""Parameter fills that draw from an explicit torch.Generator.

torch.nn.init draws from the global RNG; these draw in float64 from `generator` and
copy into the parameter, so weights depend only on the seed (and not on the dtype or
device the model is later moved to).
"""
from __future__ import annotations

import torch


@torch.no_grad()
def fill_normal(t: torch.Tensor, std: float, generator: torch.Generator, mean: float = 0.0) -> None:
    t.copy_(torch.randn(t.shape, generator=generator, dtype=torch.float64) * std + mean)


@torch.no_grad()
def fill_uniform(t: torch.Tensor, bound: float, generator: torch.Generator) -> None:
    """U(-bound, bound)."""
    t.copy_((torch.rand(t.shape, generator=generator, dtype=torch.float64) * 2 - 1) * bound)
