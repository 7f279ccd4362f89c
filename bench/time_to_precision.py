"""Train until an eval-MSE target is reached, timing only the training.

The time-to-precision benchmarks (bench/test_bench_training.py) use `train_until`. A recipe
may name a second optimizer to switch to once the first stalls ("polish"): L-BFGS levels
off near 1e-8 on MULTIPLY in float32, and Levenberg-Marquardt steps from that point go on
down by orders of magnitude.

The same switch is a run-config field (RunConfig.polish, applied by Trainer.train); here it
is driven by wall-clock budgets instead of a step count, and nothing is written.
"""
from __future__ import annotations

import time

from pydantic import TypeAdapter, ValidationError

from .config import OptimizerConfig, RunConfigError, validation_message
from .train import Trainer, stalled, synchronize

_OPTIMIZER = TypeAdapter(OptimizerConfig)


def switch_optimizer(trainer: Trainer, optimizer: dict) -> None:
    """Trainer.switch_optimizer with the optimizer given as a dict (an OptimizerConfig's fields)."""
    try:
        cfg = _OPTIMIZER.validate_python(optimizer)
    except ValidationError as err:
        raise RunConfigError("polish optimizer: " + validation_message(err)) from None
    trainer.switch_optimizer(cfg)


def train_until(trainer: Trainer, target: float, budget_s: float, eval_every: int,
                polish: dict | None = None) -> dict:
    """Step until eval MSE <= target or `budget_s` seconds of training are spent.

    Evaluation time is not counted. With `polish` (an optimizer config dict), switch to that
    optimizer once the first one stalls and evaluate every step from then on; the switch
    (step, seconds) is reported as `switched_at`.
    """
    if target <= 0 or budget_s <= 0 or eval_every < 1:
        raise ValueError(f"need target > 0, budget_s > 0 and eval_every >= 1, got {target}, {budget_s}, {eval_every}")
    train_s, best, curve, switched_at = 0.0, float("inf"), [], None
    while train_s < budget_s:
        if polish and switched_at is None and stalled([mse for _, _, mse in curve]):
            switch_optimizer(trainer, polish)
            switched_at, eval_every = (trainer.step, round(train_s, 2)), 1
        t0 = time.perf_counter()
        for _ in range(eval_every):
            trainer.step_once()
            if train_s + time.perf_counter() - t0 >= budget_s:
                break
        synchronize(trainer.device)
        train_s += time.perf_counter() - t0
        mse = trainer.evaluate()["mse"]
        best = min(best, mse)
        curve.append((trainer.step, round(train_s, 2), mse))
        if mse <= target:
            return dict(reached=True, seconds_to_target=train_s, steps_to_target=trainer.step, best_mse=best,
                        switched_at=switched_at, curve=curve[-20:])
    return dict(reached=False, seconds_to_target=None, steps_to_target=None, steps_run=trainer.step,
                seconds_run=train_s, best_mse=best, switched_at=switched_at, curve=curve[-20:])
