"""Optimizers, learning-rate schedules and gradient processing for the train loop (Levenberg-Marquardt:
bench.solvers.levenberg_marquardt, dense, and bench.solvers.matrix_free).

Every stateful piece has state_dict()/load_state_dict() so a checkpoint restores it
exactly. Gradient processing for first-order optimizers runs in this order:
    raw grad -> skip (non-finite or > skip_grad_norm) -> clip to grad_clip -> EMA filter
"""
from __future__ import annotations

import math
from typing import Iterable, Optional

import torch
from torch import nn

from bench.harness.config import (
    AdamConfig,
    AdaptiveSchedule,
    ConstantSchedule,
    LBFGSConfig,
    RunConfigError,
    SGDConfig,
    StepSchedule,
)
from bench.solvers.levenberg_marquardt import LevenbergMarquardt, LevenbergMarquardtConfig

# ---- optimizers -------------------------------------------------------------------


def make_optimizer(cfg, model: nn.Module):
    """torch optimizer (adam, adamw, sgd, lbfgs) or a Levenberg-Marquardt solver (dense or matrix-free) for `model`."""
    params = [p for p in model.parameters() if p.requires_grad]
    if isinstance(cfg, AdamConfig):
        cls = torch.optim.Adam if cfg.name == "adam" else torch.optim.AdamW
        return cls(params, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
    if isinstance(cfg, SGDConfig):
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov,
                               weight_decay=cfg.weight_decay)
    if isinstance(cfg, LBFGSConfig):
        return torch.optim.LBFGS(params, lr=cfg.lr, max_iter=cfg.max_iter, history_size=cfg.history_size,
                                 line_search_fn=cfg.line_search, tolerance_grad=cfg.tolerance_grad,
                                 tolerance_change=cfg.tolerance_change)
    if isinstance(cfg, LevenbergMarquardtConfig):
        if cfg.retired:  # a stored run's config: it names it, the solver no longer computes it
            name, value = next(iter(cfg.retired.items()))
            raise RunConfigError(f"{name}: retired (docs/optimizers.md); this stored run set it to {value!r}, which the "
                                 "solver no longer computes: the run loads and tabulates, and is not trained again")
        if cfg.solver == "cg":
            from bench.solvers.matrix_free import MatrixFreeLevenbergMarquardt

            return MatrixFreeLevenbergMarquardt(model, cfg)
        return LevenbergMarquardt(model, cfg)
    raise TypeError(f"unknown optimizer config {cfg!r}")


def set_lr(optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


# ---- gradient processing ----------------------------------------------------------


def grads_of(params: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    return [p.grad for p in params if p.grad is not None]


def total_grad_norm(params: Iterable[torch.Tensor]) -> float:
    """L2 norm of all gradients together, accumulated in float64 (inf/nan propagate)."""
    grads = grads_of(params)
    if not grads:
        return 0.0
    return torch.stack([g.detach().to(torch.float64).pow(2).sum() for g in grads]).sum().sqrt().item()


@torch.no_grad()
def clip_grads_(params: Iterable[torch.Tensor], max_norm: float, norm: float) -> bool:
    """Scale gradients so their total norm is at most max_norm; True if they were scaled."""
    if norm <= max_norm:
        return False
    scale = max_norm / norm
    for g in grads_of(params):
        g.mul_(scale)
    return True


class EMAFilter:
    """g <- g + lam * EMA(g), EMA(g) <- decay * EMA(g) + (1 - decay) * g (EMA starts at
    the first gradient). Amplifies the slow, consistent part of the gradient."""

    def __init__(self, lam: float, decay: float):
        self.lam = lam
        self.decay = decay
        self.ema: Optional[list[torch.Tensor]] = None

    @torch.no_grad()
    def apply_(self, params: list[torch.Tensor]) -> None:
        if self.lam == 0:
            return
        grads = [p.grad for p in params]
        if self.ema is None:
            self.ema = [g.detach().clone() for g in grads]
        else:
            for e, g in zip(self.ema, grads):
                e.mul_(self.decay).add_(g, alpha=1 - self.decay)
        for e, g in zip(self.ema, grads):
            g.add_(e, alpha=self.lam)

    def state_dict(self) -> dict:
        return {"ema": None if self.ema is None else [e.clone() for e in self.ema]}

    def load_state_dict(self, state: dict) -> None:
        self.ema = None if state["ema"] is None else [e.clone() for e in state["ema"]]


def flat_grad(params: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.to(torch.float64), b.to(torch.float64)
    denom = (a.norm() * b.norm()).item()
    return (a @ b).item() / denom if denom > 0 else 0.0


def mean_consecutive_cosine(grads: list[torch.Tensor]) -> float:
    """Mean cosine similarity of grads[i-1], grads[i] (the adaptive schedule's signal)."""
    if len(grads) < 2:
        raise ValueError("need at least two gradients")
    return sum(cosine(grads[i - 1], grads[i]) for i in range(1, len(grads))) / (len(grads) - 1)


# ---- schedules --------------------------------------------------------------------


class Schedule:
    """lr_at(step) gives the LR used by update number `step` (0-based)."""

    def __init__(self, cfg, lr0: float):
        self.cfg = cfg
        self.lr0 = lr0

    def lr_at(self, step: int) -> float:
        return self.lr0

    def wants_signal(self, step: int) -> bool:
        return False

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class StepDecay(Schedule):
    def lr_at(self, step: int) -> float:
        return max(self.lr0 * self.cfg.gamma ** (step // self.cfg.every), self.cfg.min_lr)


class AdaptiveLR(Schedule):
    """See AdaptiveSchedule for the rule. The train loop calls observe(c) with the probe
    cosine when wants_signal(step), then lr_at(step), once per step, in step order."""

    def __init__(self, cfg: AdaptiveSchedule, lr0: float):
        super().__init__(cfg, lr0)
        self.lr = lr0
        self.signal = 1.0
        self.last_update = 0  # the last step at which the rule ran (it runs once per step)

    def wants_signal(self, step: int) -> bool:
        return step % self.cfg.measure_every == 0

    def observe(self, cosine_mean: float) -> None:
        if math.isfinite(cosine_mean):
            s = self.cfg.smoothing
            self.signal = s * self.signal + (1 - s) * cosine_mean

    def lr_at(self, step: int) -> float:
        c = self.cfg
        if step > 0 and step % c.every == 0 and step != self.last_update:
            self.last_update = step
            if self.signal >= c.threshold or step <= c.warmup:
                self.lr = max(self.lr * c.gamma, c.min_lr)
            else:
                self.lr = self.lr / c.gamma
                if c.max_lr is not None:
                    self.lr = min(self.lr, c.max_lr)
        return self.lr

    def state_dict(self) -> dict:
        return {"lr": self.lr, "signal": self.signal, "last_update": self.last_update}

    def load_state_dict(self, state: dict) -> None:
        self.lr = float(state["lr"])
        self.signal = float(state["signal"])
        self.last_update = int(state["last_update"])


def make_schedule(cfg, lr0: float) -> Schedule:
    if isinstance(cfg, ConstantSchedule):
        return Schedule(cfg, lr0)
    if isinstance(cfg, StepSchedule):
        return StepDecay(cfg, lr0)
    if isinstance(cfg, AdaptiveSchedule):
        return AdaptiveLR(cfg, lr0)
    raise TypeError(f"unknown schedule config {cfg!r}")
