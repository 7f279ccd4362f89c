"""What a run accumulates besides its weights, optimizer, schedule, filter and random streams:
RunState, saved into a checkpoint whole and restored from it whole (bench.harness.train.Trainer)."""
from __future__ import annotations

import datetime as _dt
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Optional

import torch

from bench.harness.records import CurvePoint


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


@dataclass
class Interval:
    """Statistics of the steps since the last curve point."""

    loss_sum: float = 0.0
    loss_n: int = 0
    norm_sum: float = 0.0
    norm_max: float = 0.0
    norm_n: int = 0
    skipped: int = 0

    def add(self, loss: float, norm: float, skipped: bool) -> None:
        if skipped:
            self.skipped += 1
            return
        if math.isfinite(loss):
            self.loss_sum += loss
            self.loss_n += 1
        if math.isfinite(norm):
            self.norm_sum += norm
            self.norm_max = max(self.norm_max, norm)
            self.norm_n += 1


@dataclass
class StepOutcome:
    loss: float
    grad_norm: float
    skipped: bool = False


def stalled(evals: list[float], window: int = 5, gain: float = 0.95) -> bool:
    """The last eval MSE is less than 5% below the one `window` evals earlier."""
    return len(evals) > window and evals[-1] > gain * evals[-1 - window]


@dataclass
class RunState:
    """What a run has accumulated besides its weights, optimizer, schedule, filter and random
    streams (Trainer.COMPONENTS): saved into a checkpoint and restored from it whole."""

    step: int = 0
    curve: list[CurvePoint] = field(default_factory=list)
    interval: Interval = field(default_factory=Interval)  # the steps since the last curve point
    skipped_total: int = 0
    consecutive_skips: int = 0
    train_time_s: float = 0.0  # the optimizer steps only
    wall_time_s: float = 0.0  # everything, over all sessions
    resumed_at: list[int] = field(default_factory=list)
    started_at: str = field(default_factory=lambda: now())
    status: Optional[str] = None
    switched_at: Optional[int] = None  # step at which cfg.polish took over
    polish_draw_state: Optional[torch.Tensor] = None  # train_gen state its training set was drawn from

    def saved(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["curve"] = [p.model_dump() for p in self.curve]
        out["interval"] = asdict(self.interval)
        return out

    @classmethod
    def restored(cls, state: dict) -> "RunState":
        """The state of a resumed run: running again (no status), resumed at its step."""
        values = {f.name: state[f.name] for f in fields(cls)}
        values["curve"] = [CurvePoint(**p) for p in state["curve"]]
        values["interval"] = Interval(**state["interval"])
        values["status"] = None
        values["resumed_at"] = list(state["resumed_at"]) + [int(state["step"])]
        return cls(**values)
