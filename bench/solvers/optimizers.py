"""Optimizers, learning-rate schedules and gradient processing for the train loop.

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
    LevenbergMarquardtConfig,
    SGDConfig,
    StepSchedule,
)

# ---- optimizers -------------------------------------------------------------------


def make_optimizer(cfg, model: nn.Module):
    """torch optimizer (adam, adamw, sgd, lbfgs) or LevenbergMarquardt for `model`."""
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
        if cfg.solver == "cg":
            from bench.solvers.matrix_free import MatrixFreeLevenbergMarquardt

            return MatrixFreeLevenbergMarquardt(model, cfg)
        return LevenbergMarquardt(model, cfg)
    raise TypeError(f"unknown optimizer config {cfg!r}")


def set_lr(optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


class LevenbergMarquardt:
    """Levenberg-Marquardt / Gauss-Newton for small models (see LevenbergMarquardtConfig).

    Residuals r (all scored entries of a fixed training set) and the Jacobian J of r
    with respect to the flat parameter vector are built in chunks of samples; the step d
    solves (J^T J + mu I) d = -J^T r in float64. The loss is the task's MSE = |r|^2 / n.
    """

    def __init__(self, model: nn.Module, cfg: LevenbergMarquardtConfig):
        self.model = model
        self.cfg = cfg
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        self.damping = 0.0 if cfg.name == "gauss_newton" else cfg.damping
        self.param_groups = [{"lr": cfg.lr}]  # so set_lr works like on torch optimizers

        self.last: dict = {}  # diagnostics of the last step (the matrix-free solver's are richer)

    def state_dict(self) -> dict:
        return {"damping": self.damping, "lr": self.param_groups[0]["lr"]}

    def load_state_dict(self, state: dict) -> None:
        self.damping = float(state["damping"])
        self.param_groups[0]["lr"] = float(state["lr"])

    def _chunks(self, inputs: torch.Tensor, rows_per_sample: int):
        n_params = sum(p.numel() for p in self.params)
        per_chunk = max(1, int(2e7 // max(1, rows_per_sample * n_params)))
        for i in range(0, inputs.shape[0], per_chunk):
            yield slice(i, i + per_chunk)

    @torch.no_grad()
    def loss(self, inputs, targets, mask) -> float:
        total, count = 0.0, 0
        for sl in self._chunks(inputs, int(mask.sum()) * targets.shape[-1]):
            err = (self.model(inputs[sl]) - targets[sl])[:, mask, :].to(torch.float64)
            total += err.pow(2).sum().item()
            count += err.numel()
        return total / count

    def _normal_equations(self, inputs, targets, mask):
        """J^T J, J^T r (float64) and the loss at the current parameters."""
        from torch.func import functional_call, jacrev, vmap

        buffers = dict(self.model.named_buffers())
        current = {n: p.detach() for n, p in zip(self.names, self.params)}
        n_params = sum(p.numel() for p in self.params)
        jtj = torch.zeros(n_params, n_params, dtype=torch.float64, device=inputs.device)
        jtr = torch.zeros(n_params, dtype=torch.float64, device=inputs.device)
        total, count = 0.0, 0

        def sample_residuals(params, x1, y1):
            out = functional_call(self.model, {**params, **buffers}, (x1.unsqueeze(0),))
            return (out - y1.unsqueeze(0))[:, mask, :].reshape(-1)

        # Samples are independent (no model mixes the batch), so J is built per sample: one
        # backward pass per residual of a single sequence, vectorised over the chunk. That is
        # batch-size times cheaper than jacrev over the residuals of the whole chunk.
        per_sample_jacobian = vmap(jacrev(sample_residuals), in_dims=(None, 0, 0))
        for sl in self._chunks(inputs, int(mask.sum()) * targets.shape[-1]):
            x, y = inputs[sl], targets[sl]
            try:
                with torch.no_grad():
                    r = (self.model(x) - y)[:, mask, :].reshape(-1)
                jac = per_sample_jacobian(current, x, y)
                J = torch.cat([jac[n].reshape(r.numel(), -1) for n in self.names], dim=1)
            except RuntimeError:  # a custom autograd.Function without functorch support
                r, J = self._jacobian_by_rows(x, y, mask)
            J = J.to(torch.float64)
            r64 = r.to(torch.float64)
            jtj += J.T @ J
            jtr += J.T @ r64
            total += r64.pow(2).sum().item()
            count += r64.numel()
        return jtj, jtr, total / count, count

    def _jacobian_by_rows(self, x, y, mask):
        """Residuals and Jacobian with one backward pass per residual (slow, always works)."""
        with torch.enable_grad():
            r = (self.model(x) - y)[:, mask, :].reshape(-1)
            rows = []
            for i in range(r.numel()):
                grads = torch.autograd.grad(r[i], self.params, retain_graph=True, allow_unused=True)
                rows.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                                       for g, p in zip(grads, self.params)]))
        return r.detach(), torch.stack(rows)

    def step(self, inputs: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> tuple[float, float]:
        """One LM step on the fixed set. Returns (loss before the step, grad norm before it)."""
        jtj, jtr, loss0, count = self._normal_equations(inputs, targets, mask)
        grad_norm = (2.0 / count) * jtr.norm().item()  # d/dtheta of |r|^2 / n
        if not math.isfinite(loss0):
            return loss0, grad_norm
        start = torch.nn.utils.parameters_to_vector(self.params).detach().clone()
        lr = self.param_groups[0]["lr"]
        eye = torch.eye(jtj.shape[0], dtype=jtj.dtype, device=jtj.device)
        if self.cfg.name == "gauss_newton":
            delta = torch.linalg.lstsq(jtj.cpu(), -jtr.cpu().unsqueeze(1)).solution.squeeze(1).to(jtj.device)
            self._set(start + lr * delta.to(start.dtype))
            return loss0, grad_norm
        for _ in range(self.cfg.max_retries + 1):
            delta = torch.linalg.solve(jtj + self.damping * eye, -jtr)
            self._set(start + lr * delta.to(start.dtype))
            trial = self.loss(inputs, targets, mask)
            if math.isfinite(trial) and trial < loss0:
                self.damping = max(self.damping * self.cfg.damping_down, self.cfg.min_damping)
                return loss0, grad_norm
            self.damping = max(self.damping, self.cfg.min_damping) * self.cfg.damping_up
        self._set(start)  # no acceptable step: stay put (the damping stays raised)
        return loss0, grad_norm

    @torch.no_grad()
    def _set(self, flat: torch.Tensor) -> None:
        torch.nn.utils.vector_to_parameters(flat, self.params)


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
