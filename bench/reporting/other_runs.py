"""The runs of a results folder that no grid names: a task or mixer of one's own, `limits` cells, one-off runs.

Every other table is a grid's; without this one such a run would be recorded but never shown.
"""
from __future__ import annotations

import pandas as pd

from bench.reporting.frames import fmt_mse


def other_runs_table(records: dict, in_grids: set[str]) -> pd.DataFrame:
    """One row per record whose hash is in no grid's frame, sorted by task, model and eval MSE."""
    rows = []
    for h, r in records.items():
        if h in in_grids:
            continue
        cfg = r.config
        rows.append({"task": cfg.task.name, "model": cfg.model.name, "optimizer": cfg.optimizer.name,
                     "dtype": cfg.dtype, "status": r.status, "eval MSE": r.eval_mse, "floor": r.floor, "run": h})
    if not rows:
        return pd.DataFrame(rows)
    df = pd.DataFrame(rows).sort_values(["task", "model", "eval MSE", "run"], kind="stable", na_position="last")
    return df.assign(**{c: df[c].map(fmt_mse) for c in ("eval MSE", "floor")})


def other_runs(ctx) -> None:
    """Every record that no grid's table shows."""
    in_grids = {h for frame in ctx.frames.values() if "hash" in frame for h in frame["hash"]}
    table = other_runs_table(ctx.records, in_grids)
    if len(table):
        ctx.out.table("other_runs", table, "Runs in no grid (a task or mixer of your own, limits cells, one-off runs)",
                      [f"{len(table)} runs of {ctx.results_dir.name} that no grid names; their grids' tables are "
                       "elsewhere in this folder."])
