"""The one place that says which grid each run belongs to, which grid's tables show it, what each
profile runs, and which product-grid runs have no committed record yet. Reporting reads these, never a
grid's internals.

    from bench.grids import registry
    registry.table_grids("ci")        # {product grid: its configs and the study links its tables show}
    registry.grids_of(cfg.hash)       # ["to_the_limit"], ["to_the_limit_broadcast"], ...
    registry.profile_runs("quick")    # the main job's runs
"""
from __future__ import annotations

from typing import Callable

from bench.grids import product
from bench.grids.budgets import BUDGETS, Budget, get_budget
from bench.grids.recipes import GD_STEP_PROBLEMS
from bench.harness.config import RunConfig, unique_configs

# The grids users run (grids 1-9), each a function of the budget.
GRIDS: dict[str, Callable[[str | Budget], list[RunConfig]]] = {
    "primitives": product.primitives,
    "attention_multiply": product.attention_multiply,
    "gd_step": product.gd_step,
    "gd_k_least_squares": product.gd_k_least_squares,
    "dtype_optimizer": product.dtype_optimizer,
    "added_mixers": product.added_mixers,
    "second_order": product.second_order,
    "to_the_limit": product.to_the_limit,
    "ode": product.ode,
}

# the budgets of the grids that do not have ci and paper: only grid 1 has a smoke budget
GRID_BUDGETS = {"primitives": BUDGETS}

# Study chains (bench.studies.chains) were run at the ci budget only: they are part of `all_ci` and of the
# ci tables, never of another budget's.
STUDY_BUDGET = "ci"

# The order `all_<budget>` runs the grids and study chains in (the chains at ci only): what the headline
# tables and figures need first. Grid 9's BaseConv step is the last link of the chain ode_whole_set, whose
# links train first, in order; the chains of grid 8's GD step given longer and with each slice's own step
# come last.
RUN_ORDER = ("gd_step", "primitives", "gd_k_least_squares", "added_mixers", "attention_multiply", "dtype_optimizer",
             "second_order", "to_the_limit", "ode_whole_set", "ode", "to_the_limit_extended", "to_the_limit_slice")

# Which product-grid runs at ci have no committed record in results/runs/ (config hash -> what it is and
# why not): tests/test_grid_records.py checks it against the grids and the records, both ways.
NOT_YET_RUN: dict[str, str] = {}

__all__ = ["GRIDS", "GRID_BUDGETS", "RUN_ORDER", "NOT_YET_RUN", "GD_STEP_PROBLEMS", "grid_budgets", "grid_configs",
           "study_rows", "table_grids", "all_grids", "grids_of", "profile_runs", "main_job"]


def _chains():
    # imported when first needed: the studies build on the product grids (grid 8's runs are their roots)
    from bench.studies import chains

    return chains


def grid_budgets(name: str) -> tuple[str, ...]:
    """The budgets a product grid or a study chain has."""
    if name in _chains().CHAINS:
        return (STUDY_BUDGET,)
    return GRID_BUDGETS.get(name, ("ci", "paper"))


def grid_configs(name: str, budget: str | Budget = "ci") -> list[RunConfig]:
    """The configs of a product grid or a study chain at `budget`."""
    b = get_budget(budget)
    if name in GRIDS:
        return GRIDS[name](b)
    chains = _chains()
    if name not in chains.CHAINS:
        raise ValueError(f"no grid or study chain named {name!r}; grids: {', '.join(GRIDS)}; "
                         f"study chains: {', '.join(chains.CHAINS)}")
    if b.name != STUDY_BUDGET:
        raise ValueError(f"{name} is a study's chain of runs (bench.studies.chains), made at the {STUDY_BUDGET} "
                         f"budget only, not {b.name!r}")
    return chains.run_configs(name)


def study_rows() -> dict[str, str]:
    """Study chain -> the product grid whose tables show its links as rows (chains no table shows are left out)."""
    chains = _chains()
    return {name: host for name in chains.CHAINS if (host := chains.rows_of(name)) is not None}


def table_grids(budget: str | Budget = "ci") -> dict[str, list[RunConfig]]:
    """Per product grid at `budget`, the runs its tables show: its own configs, then the links of the study
    chains whose rows it shows (at ci), each config once."""
    b = get_budget(budget)
    out = {name: fn(b) for name, fn in GRIDS.items() if b.name in grid_budgets(name)}
    if b.name == STUDY_BUDGET:
        for chain, host in study_rows().items():
            out[host] = unique_configs(out[host] + grid_configs(chain, b))
    return out


def all_grids(budget: str | Budget = "ci") -> list[RunConfig]:
    """Every grid at one budget (in RUN_ORDER, the study chains at ci), without duplicates."""
    b = get_budget(budget)
    return unique_configs(c for name in RUN_ORDER if b.name in grid_budgets(name) for c in grid_configs(name, b))


def grids_of(cfg_hash: str, budget: str | Budget = "ci") -> list[str]:
    """The names of the product grids and study chains (at `budget`) that hold the run with this config hash."""
    b = get_budget(budget)
    names = list(GRIDS) + list(_chains().CHAINS)
    return [name for name in names if b.name in grid_budgets(name) and any(c.hash == cfg_hash for c in grid_configs(name, b))]


def main_job() -> list[RunConfig]:
    """The main job's runs (`python -m bench main`, profile quick): bench.grids.quick, looked up there so
    that what stands in for it (a test's tiny runs) is the main job's everywhere."""
    import bench.grids

    return bench.grids.quick()


def profile_runs(profile: str) -> list[RunConfig]:
    """What a profile runs: quick, the main job's runs; ci or paper, every grid at that budget."""
    return main_job() if profile == "quick" else all_grids(profile)
