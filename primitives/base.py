"""The task contract every primitive and algorithm step implements.

A task is a typed, validated config (pydantic) that knows how to draw a batch:

    task.sample(batch_size, generator=g, dtype=torch.float32) -> Batch
    (on the generator's device: a CUDA generator draws the batch on the GPU)

Precision contract (DESIGN.md, "Targets are exact"):
  1. inputs are drawn in float64 and rounded *once* to the training dtype, so the
     model sees exactly the numbers the target is a function of;
  2. targets are computed in float64 from those (exactly representable) inputs;
  3. targets are cast once to the training dtype.
So the only error in a target is the final rounding, whose MSE is `task.floor(dtype)`.

Scoring: `Batch.mask` (L,) marks the positions that are scored; every output channel
of a scored position is scored. Unscored target positions are zero.

A task of your own, named by import path, keeps the same contract and is checked against it
before it trains (primitives/plugin.py, docs/plugins.md).
"""
from __future__ import annotations

import contextlib
import hashlib
import math
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, ValidationError

STREAMS = ("task", "train", "eval", "probe")  # probe: the adaptive LR schedule's gradient probes


class TaskConfigError(ValueError):
    """A task parameter is invalid; the message names it and the valid range."""


def friendly_validation_message(owner: str, err: ValidationError) -> str:
    """Turn a pydantic ValidationError into one line per bad field, no stack trace."""
    parts = []
    for e in err.errors():
        field = ".".join(str(p) for p in e.get("loc", ()))
        msg = e.get("msg", "invalid").removeprefix("Value error, ")
        if e.get("type") == "extra_forbidden":
            msg = "unknown parameter"
        parts.append(f"{field}: {msg}" if field else msg)  # model-level checks name their fields
    return f"{owner}: " + "; ".join(parts)


def check_float_dtype(dtype: Any) -> torch.dtype:
    """Return `dtype` if it is a torch floating dtype, else raise a readable error."""
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TaskConfigError(
            f"dtype must be a floating torch dtype (torch.float32 or torch.float64), got {dtype!r}"
        )
    return dtype


def stream_generator(seed: int, stream: str, device: str | torch.device = "cpu") -> torch.Generator:
    """A generator for one named random stream of a seed.

    Streams "task" (fixed task parameters), "train", "eval" and "probe" (the adaptive
    schedule's gradient probes) of the same seed are seeded from a hash of (stream, seed),
    so they never share draws, and eval data is disjoint from training data for every seed.
    """
    if stream not in STREAMS:
        raise ValueError(f"unknown random stream {stream!r}; known: {', '.join(STREAMS)}")
    digest = hashlib.sha256(f"precision-bench/{stream}/{int(seed)}".encode()).digest()
    g = torch.Generator(device=device)
    g.manual_seed(int.from_bytes(digest[:8], "little") & ((1 << 63) - 1))
    return g


@dataclass
class Batch:
    """One batch of a task.

    inputs:  (B, L, d_in)  in the training dtype
    targets: (B, L, d_out) in the training dtype (zero at unscored positions)
    mask:    (L,) bool, True where a position is scored
    exact_targets: (B, L, d_out) float64 targets before the final cast (for floors)
    """

    inputs: torch.Tensor
    targets: torch.Tensor
    mask: torch.Tensor
    exact_targets: torch.Tensor

    def to(self, device: str | torch.device) -> "Batch":
        return Batch(
            self.inputs.to(device),
            self.targets.to(device),
            self.mask.to(device),
            self.exact_targets.to(device),
        )


class Task(BaseModel):
    """Base class: subclasses declare their parameters as pydantic fields.

    Subclasses implement `seq_len`, `d_in`, `d_out` (properties) and
    `_sample_exact(batch_size, generator, dtype) -> (inputs64, targets64, mask)`
    where inputs64 are already representable in `dtype` (draw them with `self._draw`, or
    round them with `round_to`) and targets64 are computed in float64 from them.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", arbitrary_types_allowed=True)

    name: ClassVar[str] = "task"
    seed: int = 0  # fixes the task's own parameters (READ's i, j; LINEAR's H), not the data

    def __init__(self, **params: Any) -> None:
        # Direct construction (not only make_task) reports bad parameters as one
        # TaskConfigError naming the field, instead of a pydantic traceback.
        try:
            super().__init__(**params)
        except ValidationError as err:
            allowed = ", ".join(type(self).model_fields)
            raise TaskConfigError(
                friendly_validation_message(f"task {self.name!r}", err) + f" (parameters: {allowed})"
            ) from None

    # ---- shapes -------------------------------------------------------------------
    @property
    def seq_len(self) -> int:
        raise NotImplementedError

    @property
    def d_in(self) -> int:
        raise NotImplementedError

    @property
    def d_out(self) -> int:
        raise NotImplementedError

    # ---- sampling -----------------------------------------------------------------
    def _task_generator(self) -> torch.Generator:
        return stream_generator(self.seed, "task")

    @staticmethod
    def _draw(shape, generator: torch.Generator, dtype: torch.dtype, scale: float = 1.0) -> torch.Tensor:
        """Gaussian float64 draw, rounded once to `dtype` and returned as float64."""
        x = torch.randn(*shape, generator=generator, dtype=torch.float64) * scale
        return round_to(x, dtype)

    def _sample_exact(self, batch_size: int, generator: torch.Generator, dtype: torch.dtype):
        raise NotImplementedError

    def sample(self, batch_size: int, *, generator: torch.Generator, dtype: torch.dtype = torch.float64) -> Batch:
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            raise TaskConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not isinstance(generator, torch.Generator):
            raise TaskConfigError("sample() needs an explicit torch.Generator (generator=...)")
        dtype = check_float_dtype(dtype)
        if generator.device.type == "cpu":
            inputs, targets, mask = self._sample_exact(batch_size, generator, dtype)
        else:  # a generator on a GPU: every tensor of the draw is made there (no host draw, no copy)
            with torch.device(generator.device):
                inputs, targets, mask = self._sample_exact(batch_size, generator, dtype)
        assert inputs.dtype == torch.float64 and targets.dtype == torch.float64
        targets = targets * mask.view(1, -1, 1).to(targets.dtype)
        return Batch(inputs.to(dtype), targets.to(dtype), mask.clone(), targets)

    # ---- scoring ------------------------------------------------------------------
    def loss(self, pred: torch.Tensor, batch: Batch) -> torch.Tensor:
        """Training loss: MSE over scored positions and all output channels."""
        err = (pred - batch.targets)[:, batch.mask, :]
        return err.pow(2).mean()

    @torch.no_grad()
    def metrics(self, pred: torch.Tensor, batch: Batch) -> dict:
        """Eval metrics in float64 against the exact (float64) targets.

        mse: mean squared error over scored entries; rel: mean |err| / mean |target|;
        rel_l2: ||err||_2 / ||target||_2; per_position_mse: list of length L with
        None at unscored positions.
        """
        target = batch.exact_targets.to(torch.float64)
        err = pred.detach().to(torch.float64) - target
        m = batch.mask
        e, t = err[:, m, :], target[:, m, :]
        per_pos = err.pow(2).mean(dim=(0, 2))
        return {
            "mse": e.pow(2).mean().item(),
            "rel": (e.abs().mean() / t.abs().mean().clamp_min(1e-300)).item(),
            "rel_l2": (e.norm() / t.norm().clamp_min(1e-300)).item(),
            "per_position_mse": [per_pos[i].item() if m[i] else None for i in range(len(m))],
        }

    @torch.no_grad()
    def floor(self, dtype: torch.dtype, *, n: int = 1024, seed: int = 0) -> float:
        """MSE of rounding this task's exact targets to `dtype` (the best any model can do)."""
        dtype = check_float_dtype(dtype)
        batch = self.sample(n, generator=stream_generator(seed, "eval"), dtype=dtype)
        exact = batch.exact_targets[:, batch.mask, :]
        rounded = exact.to(dtype).to(torch.float64)
        return (rounded - exact).pow(2).mean().item()

    def describe(self) -> dict:
        return {"name": self.name, **self.model_dump()}


def positive(name: str, value: int) -> int:
    """Shared check for sizes: positive integers only."""
    if value < 1:
        raise TaskConfigError(f"{name} must be a positive integer (>= 1), got {value}")
    return value


def positive_finite(name: str, value: float) -> float:
    """Shared check for scales and step sizes: finite and > 0."""
    if not (math.isfinite(value) and value > 0):
        raise TaskConfigError(f"{name} must be a finite number > 0, got {value}")
    return value


# While set, round_to (and so Task._draw) rounds to this dtype whatever dtype it is given: the
# exactness check (primitives.plugin.check_sampler) draws float32 inputs while the sampler
# computes its targets with dtype=float64, where no rounding to the training dtype can hide.
_ROUND_INPUTS_TO: ContextVar[torch.dtype | None] = ContextVar("round_inputs_to", default=None)


def round_to(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Round a float64 tensor once to `dtype` and return it as float64 (exactly representable)."""
    return x.to(_ROUND_INPUTS_TO.get() or dtype).to(torch.float64)


@contextlib.contextmanager
def rounding_inputs_to(dtype: torch.dtype):
    """Within the block, round_to and Task._draw round to `dtype` (see _ROUND_INPUTS_TO)."""
    token = _ROUND_INPUTS_TO.set(dtype)
    try:
        yield
    finally:
        _ROUND_INPUTS_TO.reset(token)
