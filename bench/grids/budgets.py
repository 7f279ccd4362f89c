"""Budgets: how much training one run of a grid gets (`Budget.run()` turns one into a RunConfig).

  paper  the paper's training recipe: batch 1024, 1M steps, Adam (eps 1e-16), LR 1e-3 decayed
         x0.9 every 10k steps, width 64, 2 heads, eval on 1024 held-out samples. Every grid at
         its full shape (full products of its axes).
  ci     the same grids sized for a 2-core CPU: width 32, batch 32, 300 steps (more for some
         grids), LR 1e-2 decayed x0.9 ten times over the run (a short run needs its time at a
         high LR); the GD-step runs of grids 3 and 6 take 1500 steps from LR 3e-3 with 30 decays
         (`gd_budget`). The larger grids keep the most informative subset of their axes (one axis at
         a time around a base config, fewer depths); each grid's docstring says which.
  smoke  grid 1 ("primitives") only: a handful of runs that take seconds each.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, replace
from typing import Callable, Optional

from bench.harness.config import RunConfig

BUDGETS = ("smoke", "ci", "paper")

# Per-mixer parameters every grid uses. Liu et al.'s BaseConv adds its input back around the
# conv (c = conv(x) + x); conv_kind "long" starts the filter at the identity plus small noise,
# the same function at initialisation.
MODEL_DEFAULTS = {"baseconv": {"conv_kind": "long"}}


@dataclass(frozen=True)
class Budget:
    """How much training one run of a grid gets; `run()` turns it into a RunConfig."""

    name: str
    steps: int
    batch_size: int
    width: int
    heads: int
    lr: float
    decays: int  # the step schedule multiplies the LR by 0.9 this many times over the run
    eval_size: int
    curve_points: int  # evals over the run (eval_every = steps // curve_points)
    checkpoint_every: int
    lbfgs_steps: int
    lbfgs_train_size: int
    lbfgs_max_iter: int

    def scaled(self, factor: float) -> "Budget":
        """The same budget with `factor` times the steps (ci grids that need longer runs)."""
        return replace(self, steps=max(1, int(round(self.steps * factor))))

    def run(self, task: str, model: str, *, task_params: Optional[dict] = None, depth: int = 2,
            steps: Optional[int] = None, lr: Optional[float] = None, **fields) -> RunConfig:
        """A RunConfig for `model` on `task` at this budget; `fields` override RunConfig fields
        (model params go in `model_params`)."""
        steps = self.steps if steps is None else steps
        lr = self.lr if lr is None else lr
        model_params = {"width": self.width, "heads": self.heads, "depth": depth, **MODEL_DEFAULTS.get(model, {}),
                        **fields.pop("model_params", {})}
        data = dict(
            task={"name": task, "params": dict(task_params or {})},
            model={"name": model, "params": model_params},
            optimizer={"name": "adam", "lr": lr, "eps": 1e-16},
            schedule={"name": "step", "gamma": 0.9, "every": max(1, steps // self.decays)},
            steps=steps,
            batch_size=self.batch_size,
            eval_size=self.eval_size,
            eval_every=max(1, steps // self.curve_points),
            checkpoint_every=self.checkpoint_every,
        )
        data.update(fields)
        return RunConfig(**data)


PAPER = Budget(name="paper", steps=1_000_000, batch_size=1024, width=64, heads=2, lr=1e-3, decays=100,
               eval_size=1024, curve_points=100, checkpoint_every=10_000,
               lbfgs_steps=5000, lbfgs_train_size=16384, lbfgs_max_iter=20)
CI = Budget(name="ci", steps=300, batch_size=32, width=32, heads=2, lr=1e-2, decays=10,
            eval_size=256, curve_points=15, checkpoint_every=0,
            lbfgs_steps=20, lbfgs_train_size=256, lbfgs_max_iter=10)
SMOKE = Budget(name="smoke", steps=300, batch_size=32, width=32, heads=2, lr=1e-2, decays=10,
               eval_size=256, curve_points=10, checkpoint_every=0,
               lbfgs_steps=10, lbfgs_train_size=128, lbfgs_max_iter=10)
BUDGET_BY_NAME = {b.name: b for b in (SMOKE, CI, PAPER)}


def get_budget(budget: str | Budget) -> Budget:
    if isinstance(budget, Budget):
        return budget
    if budget not in BUDGET_BY_NAME:
        raise ValueError(f"budget must be one of {', '.join(BUDGETS)}, got {budget!r}")
    return BUDGET_BY_NAME[budget]


def cached(grid: Callable[[Budget], list[RunConfig]]) -> Callable[[str | Budget], list[RunConfig]]:
    """Build a grid once per budget (validating a RunConfig resolves its model: not free)."""
    cache: dict[Budget, tuple[RunConfig, ...]] = {}

    @functools.wraps(grid)
    def wrapper(budget: str | Budget = "ci") -> list[RunConfig]:
        b = get_budget(budget)
        if b not in cache:
            cache[b] = tuple(grid(b))
        return list(cache[b])

    return wrapper


def no_smoke(grid: str, b: Budget) -> None:
    """Only grid 1 has a smoke budget: say so for any other."""
    if b.name == "smoke":
        raise ValueError(f"grid {grid!r} has budgets ci and paper; only 'primitives' has a smoke budget")


def with_fields(cfg: RunConfig, **fields) -> RunConfig:
    """A copy of `cfg` with some fields replaced, validated again."""
    return RunConfig(**{**cfg.model_dump(mode="json"), **fields})


def gd_budget(budget: str | Budget) -> Budget:
    """The learned-GD-step runs (grids 3 and 6): at ci 1500 steps from LR 3e-3, 30 decays."""
    b = get_budget(budget)
    no_smoke("gd_step", b)
    return replace(b.scaled(5), lr=3e-3, decays=30) if b.name == "ci" else b
