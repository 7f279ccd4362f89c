"""Run records and benchmark JSON as pandas data frames: one row per run (or benchmark case),
and the formatting every table shares. bench/reporting/tables.py shapes these frames into tables,
bench/reporting/figures.py draws them.

The paper's reported figures (Liu et al., ICLR 2025; DESIGN.md "Reference facts") live here too:
tables and figures put them next to ours.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable, Optional

import pandas as pd

from bench import grids as G
from bench.harness.config import RunConfig
from bench.harness.records import RunResult, load_results

MIXER_ORDER = ("attention", "linear_attention", "baseconv", "hyena", "s4d", "mamba", "based", "mlp")


TASK_ORDER = ("read", "linear", "multiply", "gd_step", "gd_k", "least_squares")


# The paper's reported figures (Liu et al., ICLR 2025; DESIGN.md "Reference facts"), all
# float32, all at the paper's budget (PAPER_BUDGET).
PAPER_BUDGET = "batch 1024, 1M steps, Adam (eps 1e-16), LR 1e-3 x0.9 every 10k steps, width 64, 2 heads, float32"


PAPER_FIGURES = {
    "least_squares_attention": (1e-9, "softmax attention trained end to end on least squares, best over depth (levels off however deep)"),
    "learned_gd_iterated": (1e-13, "learned one-step GD (BaseConv or linear attention, 3 layers) applied iteratively"),
    "true_gd_float32": (5e-15, "true GD in float32"),
    "attention_step_iterated": (1e-2, "softmax-attention learned GD step applied iteratively"),
}


def fmt_mse(x) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "—"
    if isinstance(x, str):
        return x
    return f"{x:.2e}"


def budget_text(cfg: RunConfig) -> str:
    """What a run was trained with, in a few words."""
    opt = cfg.optimizer
    # a time-capped run's step count is only a ceiling: its seconds are the budget
    steps = (cfg.polish_after if cfg.polish_after is not None
             else None if cfg.time_limit_s is not None else cfg.steps)
    steps_text = "" if steps is None else f" {steps} steps"
    if opt.name == "lbfgs":
        how = f"L-BFGS{steps_text} x {opt.max_iter} iters on {opt.train_size} samples"
    elif opt.name in SECOND_ORDER:
        how = f"{second_order_name(opt)}{steps_text} on {opt.train_size} samples"
    else:
        how = f"{opt.name}{steps_text} x batch {cfg.batch_size}"
    if cfg.polish is not None:
        polish = cfg.polish
        then = f"{second_order_name(polish)} on {polish.train_size} samples" if polish.name in SECOND_ORDER else polish.name
        how += f", then {then}" + (" once stalled" if cfg.polish_after is None else "")
    if cfg.time_limit_s is not None:
        how += f", {cfg.time_limit_s / 60:g} min of training"
    return f"{how}, width {cfg.model.params.get('width', 64)}, {cfg.dtype}"


SECOND_ORDER = ("levenberg_marquardt", "gauss_newton")


def second_order_name(opt) -> str:
    """levenberg_marquardt -> Levenberg-Marquardt, gauss_newton -> Gauss-Newton."""
    return opt.name.replace("_", "-").title()


def budget_summary(budget: G.Budget) -> str:
    if budget.name == "paper":
        return f"paper budget ({PAPER_BUDGET})"
    gd = G.gd_budget(budget)
    return (f"{budget.name} budget (bench.grids.{budget.name.upper()}: batch {budget.batch_size}, "
            f"{budget.steps} steps unless the table says otherwise, Adam eps 1e-16, LR {budget.lr:g} x0.9 "
            f"{budget.decays} times over the run, width {budget.width}, {budget.heads} heads, float32 unless stated; "
            f"GD-step runs: {gd.steps} steps from LR {gd.lr:g}, {gd.decays} decays)")


class Records(dict):
    """Records by config hash; `unreadable`: the hash (file name) of each record that could not be read, and
    why (its row is marked, not taken for a run that was never trained)."""

    unreadable: dict[str, str]


def records_by_hash(results_dir: str | Path, log=print, who: str = "tables") -> Records:
    """Every readable record, keyed by the hash its config has under the current code; an
    unreadable one is skipped and named in one line."""
    bad: dict[str, str] = {}

    def on_bad(message: str) -> None:
        log(f"{who}: {message}")
        name = message.removeprefix("skipping ").split(":", 1)[0]
        bad[Path(name).stem] = message

    records = Records({r.config.hash: r for r in load_results(results_dir, on_bad=on_bad)})
    records.unreadable = bad
    return records


def run_row(cfg: RunConfig, record: Optional[RunResult]) -> dict:
    p = cfg.model.params
    row = {
        "hash": cfg.hash, "task": cfg.task.name, "task_params": json.dumps(cfg.task.params, sort_keys=True),
        "model": cfg.model.name, "depth": p.get("depth"), "width": p.get("width"), "heads": p.get("heads"),
        "mlp_factor": p.get("mlp_factor", 4), "prenorm": p.get("prenorm", True), "optimizer": cfg.optimizer.name,
        "lr": cfg.optimizer.lr, "schedule": cfg.schedule.name, "ema": cfg.ema_lambda > 0, "dtype": cfg.dtype,
        "steps": cfg.steps, "batch": cfg.batch_size, "budget": budget_text(cfg),
        "variant": "bare" if p.get("mlp") is False and p.get("final_norm") is False else "backbone",
        "status": "missing", "eval_mse": math.nan, "best_eval_mse": math.nan, "floor": math.nan,
        "rel": math.nan, "steps_per_s": math.nan, "wall_s": math.nan,
        "train_mse": math.nan, "steps_done": 0, "train_s": math.nan, "message": None,
        "cg_rel_residual": math.nan, "damping": math.nan, "eval_trend": math.nan, "switched_at": math.nan,
    }
    if record is not None:
        row.update(status=record.status, floor=math.nan if record.floor is None else record.floor,
                   eval_mse=math.nan if record.eval_mse is None else record.eval_mse,
                   best_eval_mse=math.nan if record.best_eval_mse is None else record.best_eval_mse,
                   rel=math.nan if record.eval_rel is None else record.eval_rel,
                   steps_per_s=math.nan if record.steps_per_s is None else record.steps_per_s,
                   wall_s=record.wall_time_s, steps_done=record.steps_done, train_s=record.train_time_s,
                   train_mse=math.nan if record.train_loss is None else record.train_loss, message=record.message,
                   eval_trend=eval_trend(record),
                   switched_at=math.nan if record.switched_at is None else record.switched_at)
        diagnostics = record.optimizer_diagnostics or {}
        for key in ("cg_rel_residual", "damping"):
            if diagnostics.get(key) is not None:
                row[key] = diagnostics[key]
    return row


def eval_trend(record: RunResult, steps: int = 5) -> float:
    """Last eval MSE over the one at least `steps` steps earlier (< 1: still falling; ~1: stalled)."""
    points = [(p.step, p.eval_mse) for p in record.curve if p.eval_mse is not None]
    if len(points) < 2:
        return math.nan
    last_step, last = points[-1]
    earlier = [mse for step, mse in points if step <= last_step - steps]
    if not earlier or not earlier[-1]:
        return math.nan
    return last / earlier[-1]


def grid_frame(configs: Iterable[RunConfig], records: dict[str, RunResult]) -> pd.DataFrame:
    """One row per config; a run whose record is unreadable (Records.unreadable) has status "unreadable record"."""
    bad = getattr(records, "unreadable", {})
    rows = [run_row(c, records.get(c.hash)) for c in configs]
    for row in rows:
        if row["status"] == "missing" and row["hash"] in bad:
            row["status"] = "unreadable record"
    return pd.DataFrame(rows)


def mse_cell(row) -> str:
    """The table cell of one run: its MSE, or why there is none."""
    if row["status"] == "ok":
        return fmt_mse(row["eval_mse"])
    return row["status"]


def done_note(df: pd.DataFrame) -> str:
    n_done = int((df["status"].isin(["ok", "diverged"])).sum())
    n_div = int((df["status"] == "diverged").sum())
    n_failed = int((df["status"] == "failed").sum())
    failed = f"; {n_failed} failed, see their records' message" if n_failed else ""
    bad = df.loc[df["status"] == "unreadable record", "hash"].tolist()
    failed += f"; unreadable record: {', '.join(f'runs/{h}.json' for h in bad)}" if bad else ""
    return f"{n_done} of {len(df)} runs finished ({n_div} diverged{failed})."


def learned_step_runs(df: pd.DataFrame) -> pd.DataFrame:
    """Per model and optimizer, the finished float32 gd_step run with the lowest eval MSE."""
    ok = df[(df["status"] == "ok") & (df["dtype"] == "float32")]
    return ok.loc[ok.groupby(["model", "optimizer"])["eval_mse"].idxmin()] if len(ok) else ok


def learned_step_label(model: str, optimizer: str) -> str:
    return f"{model} learned step ({optimizer})"


def benchmark_frame(path: str | Path) -> pd.DataFrame:
    """One row per precision case of a pytest-benchmark JSON (cases with extra_info.case_id)."""
    data = json.loads(Path(path).read_text())
    rows = []
    for b in data.get("benchmarks", []):
        info = b.get("extra_info", {})
        if "case_id" not in info:
            continue
        rows.append({"case": info["case_id"], "status": info.get("status"), "eval MSE": fmt_mse(info.get("eval_mse")),
                     "floor": fmt_mse(info.get("floor")), "rel": fmt_mse(info.get("rel")),
                     "steps/s": round(info["steps_per_s"], 1) if info.get("steps_per_s") else None,
                     "time (s)": round(b.get("stats", {}).get("mean", math.nan), 2),
                     "budget": info.get("budget"), "config": info.get("config_hash")})
    return pd.DataFrame(rows)

