"""What stopped one cell of `python -m bench limits`: the evidence, and the rule that turns it into a verdict.

The evidence of a cell comes from its run record (eval MSE, the curve, the dtype floor) and from its final
state (results/checkpoints/<hash>.pt): the weights, the training set and, where the run ended in dense
Levenberg-Marquardt, its damping. At those weights the normal equations (J^T J + mu I) d = -J^T r are built
once more on the Levenberg-Marquardt training set (for a run that ended in L-BFGS, on the first
CHECK_PROBLEMS problems of its training set) and solved (Cholesky, float64):

  step residual  |r + J d| / |r| at the final damping: what the next step's linear model says it would leave
                 of the training residual (1: no step it would take helps)
  GN ratio       |r + J d|^2 / |r|^2 with mu at 1e-12 of the largest curvature: the training MSE the
                 Gauss-Newton model predicts at its own minimum over the MSE now
  held-out gain  the lowest MSE on PROBE_PROBLEMS problems of the probe stream (drawn neither for training nor
                 for eval) at the final weights plus a fraction (1, 1/4, 1/16, 1/64) of a step d solved at mu
                 = the final damping, 1e-6 or 1e-3 of the largest curvature, over their MSE at the final weights:
                 whether a second-order step from where the run stopped brings the task closer

The rule (`verdict`), in this order; docs/limits.md says how far it can be trusted:

  at the floor          eval MSE <= FLOOR_FACTOR x the precision level (the dtype floor; where that is 0
                        because the targets are representable, as READ's are, ulp^2 / 12 at their magnitudes)
  optimizer-limited     the eval MSE still falls at the end (more than 5% below its value GAIN_WINDOW evals
                        before: the polish switch's stall rule) or too few evals to tell; or the recipe's
                        Levenberg-Marquardt phase never ran; or there is no held-out check (no final state); or
                        the eval MSE is above OVERFIT x the training MSE (the training set, not the task, was
                        fitted); or the held-out gain is below HELD_OUT_GAIN (a second-order step does better)
  architecture-limited  none of these: the eval MSE is flat above the floor, and no second-order step from the
                        final weights lowers the held-out MSE by 10%
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Optional

import torch

from bench.harness.config import RunConfig
from bench.harness.records import RunResult, load_checkpoint
from bench.harness.run_state import stalled

FLOOR_FACTOR = 1000.0  # a float32 model's own arithmetic adds to the target's rounding (docs/limits.md)
GAIN_WINDOW = 5  # evals: "still gaining" = not stalled(window=GAIN_WINDOW) on the train or eval MSE
OVERFIT = 10.0  # eval MSE above this many times the training MSE: the training set was fitted, not the task
HELD_OUT_GAIN = 0.9  # a step that takes the held-out MSE below this fraction: the optimizer stopped short
GN_RELATIVE_DAMPING = 1e-12  # the "undamped" Gauss-Newton solve's mu, relative to the largest curvature
PROBE_DAMPINGS = (1e-6, 1e-3)  # the held-out check's mu besides the final damping, relative to the largest curvature
STEP_FRACTIONS = (1.0, 0.25, 0.0625, 0.015625)
PROBE_PROBLEMS = 256
CHECK_PROBLEMS = 64  # a run that ended in L-BFGS: the problems of its training set the normal equations are built on

LM = "levenberg_marquardt"
AT_FLOOR, OPTIMIZER, ARCHITECTURE = "at the floor", "optimizer-limited", "architecture-limited"
VERDICTS = (AT_FLOOR, OPTIMIZER, ARCHITECTURE)


@dataclass
class Evidence:
    """One cell's numbers (None where the run or its final state does not hold them)."""

    status: str
    eval_mse: Optional[float]
    floor: Optional[float]
    level: Optional[float]  # what "at the floor" is measured against (see module docstring)
    gaining: Optional[bool]  # still gaining at the end of the curve
    train_mse: Optional[float] = None  # MSE on the final optimizer's training set at the final weights
    lm_steps: Optional[int] = None  # Levenberg-Marquardt steps taken (None: the recipe has none)
    damping: Optional[float] = None
    step_residual: Optional[float] = None
    gn_ratio: Optional[float] = None
    held_out_gain: Optional[float] = None

    def as_dict(self) -> dict:
        return asdict(self)


def verdict(e: Evidence) -> tuple[str, str]:
    """(verdict, why) by the rule of the module docstring; a run that did not end ok gets its status."""
    if e.status != "ok" or e.eval_mse is None:
        return e.status, "the run did not end ok: no verdict"
    if e.level is not None and e.eval_mse <= FLOOR_FACTOR * e.level:
        return AT_FLOOR, f"eval MSE {e.eval_mse / e.level:.0f}x the precision level (<= {FLOOR_FACTOR:g}x)"
    if e.gaining or e.gaining is None:
        return OPTIMIZER, (f"still gaining: eval MSE more than 5% lower than {GAIN_WINDOW} evals before the end"
                           if e.gaining else f"stopped within {GAIN_WINDOW} evals: too short to tell")
    if e.lm_steps == 0:
        return OPTIMIZER, "the Levenberg-Marquardt phase never ran within the budget"
    if e.held_out_gain is None:
        return OPTIMIZER, "flat, but no final state to check a second-order step on: cannot tell"
    over = e.eval_mse / e.train_mse if e.train_mse else math.inf
    if over > OVERFIT:
        return OPTIMIZER, f"eval MSE {over:.3g}x train: the training set was fitted, not the task"
    if e.held_out_gain < HELD_OUT_GAIN:
        return OPTIMIZER, f"a Gauss-Newton step from the final weights takes held-out MSE to {e.held_out_gain:.2g}x"
    return ARCHITECTURE, f"eval MSE flat; no Gauss-Newton step lowers held-out MSE by 10% (best {e.held_out_gain:.3g}x)"


# ---- the evidence -----------------------------------------------------------------------------------------


def precision_level(cfg: RunConfig, floor: Optional[float]) -> Optional[float]:
    """The dtype floor, or where it is 0 (the targets are exactly representable, as READ's inputs are) the
    MSE of rounding values of the targets' magnitudes: mean(ulp(y)^2) / 12 over the eval stream's targets."""
    if floor is None or floor > 0:
        return floor
    from primitives import stream_generator

    task = cfg.build_task()
    batch = task.sample(1024, generator=stream_generator(0, "eval"), dtype=cfg.torch_dtype)
    y = batch.exact_targets[:, batch.mask, :].to(cfg.torch_dtype)
    ulp = (torch.nextafter(y.abs(), torch.full_like(y, math.inf)) - y.abs()).to(torch.float64)
    return ulp.pow(2).mean().item() / 12


def still_gaining(result: RunResult) -> Optional[bool]:
    """Whether the eval MSE still fell at the end: more than 5% over the curve's last GAIN_WINDOW evals (None:
    fewer evals than that). The eval MSE, not the training MSE: a gain on the training set alone is not one on
    the task."""
    evals = [p.eval_mse for p in result.curve if p.eval_mse is not None]
    return None if len(evals) <= GAIN_WINDOW else not stalled(evals, GAIN_WINDOW)


def solve(jtj: torch.Tensor, jtr: torch.Tensor, damping: float) -> torch.Tensor:
    """d with (J^T J + damping I) d = -J^T r (float64, Cholesky). The damping is at least 1e-15 of the largest
    curvature, and one too small for Cholesky (a singular J^T J) is raised tenfold until it works."""
    eye = torch.eye(jtj.shape[0], dtype=jtj.dtype, device=jtj.device)
    damping = max(float(damping), 1e-15 * jtj.diagonal().max().item(), 1e-300)
    for _ in range(40):
        chol, info = torch.linalg.cholesky_ex(jtj + damping * eye)
        if int(info) == 0:
            break
        damping *= 10
    return -torch.cholesky_solve(jtr.unsqueeze(1), chol).squeeze(1)


def predicted_ratio(jtj: torch.Tensor, jtr: torch.Tensor, rr: float, damping: float) -> float:
    """|r + J d|^2 / |r|^2 for d = solve(jtj, jtr, damping), from the normal equations alone:
    |r|^2 + 2 d.J^T r + d.J^T J d."""
    d = solve(jtj, jtr, damping)
    predicted = rr + 2 * torch.dot(d, jtr).item() + torch.dot(d, jtj @ d).item()
    return max(predicted, 0.0) / rr if rr > 0 else 1.0


@torch.no_grad()
def mse(model: torch.nn.Module, batch) -> float:
    err = (model(batch.inputs) - batch.targets)[:, batch.mask, :].to(torch.float64)
    return err.pow(2).mean().item()


@torch.no_grad()
def held_out_gain(trainer, jtj: torch.Tensor, jtr: torch.Tensor, dampings: tuple[float, ...]) -> float:
    """The lowest MSE on the probe stream's problems at the final weights plus a fraction of a step solved at
    each damping, over their MSE at the final weights; the weights are put back."""
    from primitives import stream_generator

    cfg = trainer.cfg
    probe = trainer.task.sample(PROBE_PROBLEMS, generator=stream_generator(cfg.seed, "probe"), dtype=trainer.dtype)
    params = trainer.params
    start = torch.nn.utils.parameters_to_vector(params).detach().clone()
    base = best = mse(trainer.model, probe)
    try:
        for damping in dampings:
            d = solve(jtj, jtr, damping).to(start.dtype)
            for fraction in STEP_FRACTIONS:
                torch.nn.utils.vector_to_parameters(start + fraction * d, params)
                trial = mse(trainer.model, probe)
                best = trial if math.isfinite(trial) and trial < best else best
    finally:
        torch.nn.utils.vector_to_parameters(start, params)
    return best / base if base > 0 else 1.0


def final_state_evidence(cfg: RunConfig, results_dir: str | Path) -> Optional[dict]:
    """Train MSE, damping, step residual, GN ratio and held-out gain at the run's final state (None without
    one). The trainer is rebuilt from the checkpoint, its Levenberg-Marquardt phase and training set included."""
    from bench.harness.train import Trainer
    from bench.solvers.levenberg_marquardt import LevenbergMarquardt, LevenbergMarquardtConfig

    state = load_checkpoint(cfg, results_dir)
    if state is None:
        return None
    trainer = Trainer(cfg, results_dir, progress=False)
    trainer.load_state_dict(state)
    data, opt = trainer.train_set, trainer.optimizer
    out: dict = {"train_mse": mse(trainer.model, data)}
    if isinstance(opt, LevenbergMarquardt):
        lm, dampings = opt, (opt.damping,)
        out["damping"] = opt.damping
    else:
        lm, dampings = LevenbergMarquardt(trainer.model, LevenbergMarquardtConfig(train_size=CHECK_PROBLEMS)), ()
        data = replace(data, **{k: getattr(data, k)[:CHECK_PROBLEMS] for k in ("inputs", "targets", "exact_targets")})
    jtj, jtr, loss, count = lm._normal_equations(data.inputs, data.targets, data.mask)
    rr, top = loss * count, max(jtj.diagonal().max().item(), 1e-300)
    if dampings:
        out["step_residual"] = math.sqrt(predicted_ratio(jtj, jtr, rr, opt.damping))
    out["gn_ratio"] = predicted_ratio(jtj, jtr, rr, GN_RELATIVE_DAMPING * top)
    out["held_out_gain"] = held_out_gain(trainer, jtj, jtr, dampings + tuple(top * m for m in PROBE_DAMPINGS))
    return out


def evidence(cfg: RunConfig, result: RunResult, results_dir: str | Path, cached: Optional[dict] = None) -> Evidence:
    """A cell's evidence: the record's numbers, and the final state's (or `cached`, the same cell's row of an
    earlier table, where the final state is gone: checkpoints are not committed)."""
    ok = result.status == "ok"
    lm_start = result.switched_at if cfg.polish is not None else 0 if cfg.optimizer.name == LM else None
    planned = cfg.optimizer.name == LM or getattr(cfg.polish, "name", None) == LM
    e = Evidence(status=result.status, eval_mse=result.eval_mse, floor=result.floor,
                 level=precision_level(cfg, result.floor) if ok else None,
                 gaining=still_gaining(result) if ok else None,
                 lm_steps=None if not planned else 0 if lm_start is None else result.steps_done - lm_start)
    extra = final_state_evidence(cfg, results_dir) if ok else None
    if extra is None and cached:
        extra = {k: cached.get(k) for k in ("train_mse", "damping", "step_residual", "gn_ratio", "held_out_gain")}
    for key, value in (extra or {}).items():
        setattr(e, key, value)
    if e.train_mse is None:
        e.train_mse = result.train_loss
    return e
