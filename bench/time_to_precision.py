"""Train until an eval-MSE target is reached, timing only the training.

The time-to-precision benchmarks (bench/test_bench_training.py) use `train_until`. A recipe
may name a second optimizer to switch to once the first stalls ("polish"): L-BFGS levels
off near 1e-8 on MULTIPLY in float32, and Levenberg-Marquardt steps from that point go on
down by orders of magnitude.

The switch happens outside the run config, so a switched trainer is a benchmark object,
not a resumable run: nothing here writes records or checkpoints.
"""
from __future__ import annotations

import time

from pydantic import TypeAdapter, ValidationError

from .config import FULL_BATCH_OPTIMIZERS, ConstantSchedule, OptimizerConfig, RunConfigError, validation_message
from .optim import make_optimizer, make_schedule
from .train import Trainer, synchronize

_OPTIMIZER = TypeAdapter(OptimizerConfig)


def switch_optimizer(trainer: Trainer, optimizer: dict) -> None:
    """Continue the trainer's model with another optimizer (an OptimizerConfig as a dict).

    The new optimizer runs at its own LR, constant (the run's schedule belonged to the first).
    A full-batch optimizer gets a fresh training set of its `train_size` from the trainer's
    train stream (never the eval stream)."""
    try:
        cfg = _OPTIMIZER.validate_python(optimizer)
    except ValidationError as err:
        raise RunConfigError("polish optimizer: " + validation_message(err)) from None
    trainer.optimizer = make_optimizer(cfg, trainer.model)
    trainer.schedule = make_schedule(ConstantSchedule(), cfg.lr)
    trainer.full_batch = cfg.name in FULL_BATCH_OPTIMIZERS
    trainer.train_set = None
    if trainer.full_batch:
        trainer.train_set = trainer.task.sample(cfg.train_size, generator=trainer.train_gen,
                                                dtype=trainer.dtype).to(trainer.device)


def stalled(curve: list, window: int = 5, gain: float = 0.95) -> bool:
    """The eval MSE (curve entries (step, seconds, mse)) is less than 5% lower than `window` evals ago."""
    return len(curve) > window and curve[-1][2] > gain * curve[-1 - window][2]


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
        if polish and switched_at is None and stalled(curve):
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
