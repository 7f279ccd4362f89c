"""The grids users run, as plain Python: each grid is a function budget -> list[RunConfig] whose
docstring states the question it answers (bench.grids.product).

    from bench.grids import GRIDS
    configs = GRIDS["primitives"]("ci")

    python -m bench sweep bench.grids:primitives_ci --workers 2      # one grid at one budget
    python -m bench sweep bench.grids:all_ci --workers 2             # every grid at ci
    python -m bench sweep bench.grids:primitives_paper --executor ray

Modules: budgets (paper, ci, smoke: `BUDGETS`), recipes (the models and solver settings the grids
share), product (grids 1-9 and the main job's runs), registry (which grid and which table each run
belongs to, what each profile runs, what has no committed record yet). The studies' chains of runs
(grid 8's GD step given longer, the float64 chain, grid 9's whole-set chain) are data in
bench.studies.chains; `bench.grids:<chain>_ci` sweeps one of them too.

The module exposes `<grid>_<budget>` for `bench sweep`, and `all_<budget>`.
"""
from __future__ import annotations

import functools
from typing import Callable

from bench.grids.budgets import (BUDGET_BY_NAME, BUDGETS, CI, MODEL_DEFAULTS, PAPER, SMOKE, Budget, cached, gd_budget,
                                 get_budget, with_fields)
from bench.grids.product import (ADDED_MIXERS, GD_WARM_START, LEAST_SQUARES_DEPTHS, ODE_GD_CURVATURE, ODE_GD_LAYOUT,
                                 ODE_GD_STEP_RECIPE, ODE_GD_TASK, ODE_TASK, PAPER_MIXERS, PRIMITIVE_TASKS,
                                 QUICK_LM_STEPS, QUICK_MULTIPLY_STEPS, TO_THE_LIMIT_SECONDS, added_mixers, as_lbfgs,
                                 attention_multiply, dtype_optimizer, expressivity_pair, gd_k_least_squares, gd_step,
                                 gd_step_warm_started, lm_gd_step, ode, ode_gd_step, ode_gd_task, polished_multiply,
                                 primitives, quick, second_order, to_the_limit, twins)
from bench.grids.recipes import (GD_DEPTH, GD_STEP_PROBLEMS, adaptive_schedule, exact_gd_step_model, exact_multiply_model,
                                 lm_512_then_2048, matrix_free_lm, paper_gd_step_model, paper_primitive_model)
from bench.grids.registry import GRID_BUDGETS, GRIDS, RUN_ORDER, all_grids, grid_budgets, grids_of
from bench.harness.config import RunConfig

__all__ = [
    "BUDGETS", "BUDGET_BY_NAME", "Budget", "CI", "PAPER", "SMOKE", "MODEL_DEFAULTS", "cached", "gd_budget", "get_budget",
    "with_fields", "ADDED_MIXERS", "GD_WARM_START", "LEAST_SQUARES_DEPTHS", "ODE_GD_CURVATURE", "ODE_GD_LAYOUT",
    "ODE_GD_STEP_RECIPE", "ODE_GD_TASK", "ODE_TASK", "PAPER_MIXERS", "PRIMITIVE_TASKS", "QUICK_LM_STEPS",
    "QUICK_MULTIPLY_STEPS", "TO_THE_LIMIT_SECONDS", "added_mixers", "as_lbfgs", "attention_multiply", "dtype_optimizer",
    "expressivity_pair", "gd_k_least_squares", "gd_step", "gd_step_warm_started", "lm_gd_step", "ode", "ode_gd_step",
    "ode_gd_task", "polished_multiply", "primitives", "quick", "second_order", "to_the_limit", "twins", "GD_DEPTH",
    "GD_STEP_PROBLEMS", "adaptive_schedule", "exact_gd_step_model", "exact_multiply_model", "lm_512_then_2048",
    "matrix_free_lm", "paper_gd_step_model", "paper_primitive_model", "GRID_BUDGETS", "GRIDS", "RUN_ORDER",
    "all_grids", "grid_budgets", "grids_of", "sweep_names",
]


def _study_chain(name: str) -> Callable[..., list[RunConfig]]:
    """The study chain `name` as a function of the budget (ci only), for callers that name it as a grid."""
    def chain(budget: str | Budget = "ci") -> list[RunConfig]:
        from bench.grids.registry import grid_configs

        return grid_configs(name, budget)

    chain.__name__ = chain.__qualname__ = name
    chain.__doc__ = f"The links of the study chain {name!r} (bench.studies.chains), as RunConfigs: ci only."
    return chain


def sweep_names() -> dict[str, Callable[[], list[RunConfig]]]:
    """The zero-argument grids `python -m bench sweep bench.grids:NAME` takes: <grid>_<budget> for every
    product grid and budget it has, <chain>_ci for every study chain, and all_<budget>."""
    from bench.studies import chains

    names = {f"{name}_{b}": functools.partial(fn, b) for name, fn in GRIDS.items() for b in grid_budgets(name)}
    names.update({f"{name}_ci": functools.partial(chains.run_configs, name) for name in chains.CHAINS})
    names.update({f"all_{b}": functools.partial(all_grids, b) for b in ("ci", "paper")})
    return names


def __getattr__(name: str):
    # module attributes for the sweep names (PEP 562), so bench.grids:primitives_ci resolves; and the study
    # chains by their grid names (bench.grids.to_the_limit_slice("ci")), for callers that name them so
    from bench.studies import chains

    if name in chains.CHAINS:
        return _study_chain(name)
    if name == "GD_EXTENDED_SECONDS":  # grid 8's warm-started GD step given longer: its seconds in all
        return {"ci": chains.link("warm_started_121min").config["time_limit_s"]}
    names = sweep_names()
    if name in names:
        return names[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    from bench.studies import chains

    return sorted(set(globals()) | set(sweep_names()) | set(chains.CHAINS) | {"GD_EXTENDED_SECONDS"})
