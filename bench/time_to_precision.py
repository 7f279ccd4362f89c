"""Train until an eval-MSE target is reached, timing only the training.

The time-to-precision benchmarks (bench/test_bench_training.py) use `train_until`. A recipe
may name a second optimizer in its run config (RunConfig.polish) to switch to once the first
stalls: L-BFGS levels off near 1e-8 on MULTIPLY in float32, and Levenberg-Marquardt steps from
that point go on down by orders of magnitude. The switch is the trainer's own
(Trainer.maybe_switch); here training is driven by a wall-clock budget instead of a step
count, and nothing is written.
"""
from __future__ import annotations

import time

from .train import Diverged, Trainer, synchronize


def train_until(trainer: Trainer, target: float, budget_s: float, eval_every: int,
                milestones: tuple[float, ...] = ()) -> dict:
    """Step until eval MSE <= target or `budget_s` seconds of training are spent.

    Evaluation time is not counted. With a polish optimizer in the trainer's config, switch to
    it once the first one stalls and evaluate every step from then on; the switch (step,
    seconds) is reported as `switched_at`. `best_mse` is the lowest finite eval MSE (None if
    there was none); `diverged` is None, or why the run stopped early. `milestones` (MSE levels
    above the target): the training seconds at which each was first reached, in `seconds_to`
    (None: not reached).
    """
    if target <= 0 or budget_s <= 0 or eval_every < 1:
        raise ValueError(f"need target > 0, budget_s > 0 and eval_every >= 1, got {target}, {budget_s}, {eval_every}")
    train_s, best, curve, switched_at, diverged = 0.0, None, [], None, None
    seconds_to: dict[str, float | None] = {f"{m:g}": None for m in (*milestones, target)}
    while train_s < budget_s and diverged is None:
        if switched_at is None:
            trainer.maybe_switch()
            if trainer.state.switched_at is not None:
                switched_at, eval_every = (trainer.state.step, round(train_s, 2)), 1
        t0 = time.perf_counter()
        try:
            for _ in range(eval_every):
                trainer.step_once()
                if train_s + time.perf_counter() - t0 >= budget_s:
                    break
        except Diverged as why:  # a non-finite loss or weights: no later step can recover
            diverged = str(why)
        synchronize(trainer.device)
        train_s += time.perf_counter() - t0
        if diverged is None:
            try:
                trainer.add_curve_point()  # the trainer's curve is what its polish switch reads
            except Diverged as why:
                diverged = str(why)
        mse = trainer.state.curve[-1].eval_mse if diverged is None else None  # None: not a finite number
        if mse is not None:
            best = mse if best is None else min(best, mse)
        curve.append((trainer.state.step, round(train_s, 2), mse))
        for level in (*milestones, target):
            if mse is not None and seconds_to[f"{level:g}"] is None and mse <= level:
                seconds_to[f"{level:g}"] = round(train_s, 2)
        if mse is not None and mse <= target:
            return dict(reached=True, seconds_to_target=train_s, steps_to_target=trainer.state.step, best_mse=best,
                        switched_at=switched_at, diverged=None, seconds_to=seconds_to, curve=curve)
    return dict(reached=False, seconds_to_target=None, steps_to_target=None, steps_run=trainer.state.step,
                seconds_run=train_s, best_mse=best, switched_at=switched_at, diverged=diverged, seconds_to=seconds_to,
                curve=curve)
