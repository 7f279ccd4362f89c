"""The precision limits of an architecture on READ, LINEAR, MULTIPLY and the GD step, with a verdict per cell.

    python -m bench limits --model baseconv
    PYTHONPATH=/path/to/yours python -m bench limits --model mymixers:MyMixer --model-param order=2
    python -m bench limits --model attention --tasks multiply gd_step --budget-s 120 --jobs 2

Each cell (task) trains the model at a bare size by the recipe that took the built-in mixers to the float32
floor (grid 7: L-BFGS, then dense Levenberg-Marquardt), writes its record to <results>/runs as every run does,
and the table of its evidence and verdict goes to <results>/limits/<model>.md and .json beside the committed
rows of softmax attention, linear attention and BaseConv (results/limits/, written by this command).
Evidence and rule: bench.experiments.limits_evidence; what they mean and how far to trust them: docs/limits.md.

The bare size (`CELLS`): one mixer layer, no norms, no MLP, of a width that holds the task's 20 input
dimensions and what the primitive adds beside them (the 10 products of MULTIPLY: width 32; the position
channel of READ: width 22, with a learned position embedding); the GD step on grid 7's
`exact_gd_step_model` (two layers, width 18, position embedding: the linear-attention construction's
architecture). At these sizes every built-in mixer has at most 5,450 weights, so the dense
Levenberg-Marquardt (params x params normal equations, at most MAX_PARAMS) solves its steps exactly.

Exit status: 0 every cell finished (ok or diverged), 1 a run failed, 2 invalid input, 130 interrupted
(checkpointed; the same command resumes).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from bench.harness.config import RunConfig, RunConfigError, make_run_config

REPO_ROOT = Path(__file__).resolve().parents[2]
COMMITTED = REPO_ROOT / "results" / "limits"  # the committed rows (this command's tables of COMMITTED_MODELS)
COMMITTED_MODELS = ("attention", "linear_attention", "baseconv")
TASKS = ("read", "linear", "multiply", "gd_step")
DEFAULT_BUDGET_S = 450.0  # seconds of training per cell: the four cells in 30 minutes of one core
MAX_PARAMS = 8000  # the dense solve's params x params float64 matrix: 512 MB
BUILTIN_PARAMS = {"baseconv": {"conv_kind": "long"}}  # as every grid builds BaseConv (Liu et al.'s identity start)
BARE = {"depth": 1, "heads": 2, "prenorm": False, "final_norm": False, "mlp": False, "pos_emb": False}


@dataclass(frozen=True)
class Cell:
    """One task's bare model and recipe: `lbfgs_steps` of L-BFGS (20 iterations each, on 512 problems), then
    `lm_steps` of dense Levenberg-Marquardt on `lm_problems` fresh ones (0 of either: that phase is left out)."""

    task: str
    model: dict
    lbfgs_steps: int
    lm_steps: int
    lm_problems: int = 0
    why: str = ""

    @property
    def steps(self) -> int:
        return self.lbfgs_steps + self.lm_steps


CELLS = {
    # READ scores every position, but only position j carries the read (20 of a problem's 800 residuals): a
    # Levenberg-Marquardt set small enough to solve densely is fitted instead of the task (docs/limits.md)
    "read": Cell("read", {**BARE, "width": 22, "pos_emb": True}, lbfgs_steps=120, lm_steps=0,
                 why="READ: width 22 (20 inputs + a position channel), a learned position embedding to tell position "
                     "j; L-BFGS only"),
    "linear": Cell("linear", {**BARE, "width": 22}, lbfgs_steps=30, lm_steps=8, lm_problems=320,
                   why="LINEAR: READ's width (any width holds the 20 inputs); LM on 320 problems"),
    # grid 7's bare multiply and its polish on 16 problems, cut where its BaseConv had reached the floor
    "multiply": Cell("multiply", {**BARE, "width": 32}, lbfgs_steps=50, lm_steps=12, lm_problems=16,
                     why="MULTIPLY: width 32 (20 inputs + the 10 products beside them); LM on 16 problems"),
    # grid 7's Levenberg-Marquardt GD step from a random start, cut where its linear attention had reached the floor
    "gd_step": Cell("gd_step", {"width": 18, "heads": 2, "depth": 2, "prenorm": False, "final_norm": False,
                                "mlp": False, "pos_emb": True}, lbfgs_steps=0, lm_steps=50, lm_problems=1024,
                    why="GD step: grid 7's exact_gd_step_model (2 layers, width 18, position embedding: the "
                        "linear-attention construction's architecture); LM from the start on 1,024 problems"),
}


class LimitsError(ValueError):
    """Bad input to the limits command; the message names the flag."""


# ---- the recipe ---------------------------------------------------------------------------------------------


def model_params(model: str, cell: Cell, params: dict) -> dict:
    """The cell's bare size as `model` takes it (an out-of-tree class keeps the backbone's fields, and
    `heads` only if it takes it), the built-in defaults, then the user's --model-param."""
    from architectures import shared_parameter_names

    keep = set(shared_parameter_names(model))
    return {**{k: v for k, v in cell.model.items() if k in keep}, **BUILTIN_PARAMS.get(model, {}), **params}


def cell_config(task: str, model: str, params: dict, seed: int, budget_s: float) -> RunConfig:
    """The RunConfig of one cell: its recipe at its bare size, capped at budget_s seconds of training. The
    switch to Levenberg-Marquardt is at step lbfgs_steps (polish_after; the stall rule's window is as long,
    so it cannot come sooner): the split, and so the numbers, do not depend on how fast the machine is."""
    cell = CELLS[task]
    lm = {"name": "levenberg_marquardt", "lr": 1.0, "damping": 1e-3, "train_size": cell.lm_problems,
          "max_params": MAX_PARAMS, "solver": "dense"}
    lbfgs = {"name": "lbfgs", "lr": 1.0, "max_iter": 20, "train_size": 512}
    data: dict[str, Any] = dict(task={"name": task}, model={"name": model, "params": model_params(model, cell, params)},
                                schedule={"name": "constant"}, steps=cell.steps, batch_size=32, eval_size=256,
                                eval_every=1, checkpoint_every=0, time_limit_s=budget_s, seed=seed, dtype="float32")
    if cell.lbfgs_steps and cell.lm_steps:
        data.update(optimizer=lbfgs, polish=lm, polish_after=cell.lbfgs_steps, polish_patience=cell.lbfgs_steps)
    else:
        data.update(optimizer=lbfgs if cell.lbfgs_steps else lm)
    return make_run_config(**data)


def recipe(model: str, params: dict, tasks: list[str], seed: int, budget_s: float) -> list[RunConfig]:
    return [cell_config(t, model, params, seed, budget_s) for t in tasks]


# ---- the command ----------------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench limits", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, help="a built-in model name (e.g. baseconv) or your mixer class as "
                                                  "package.module:Class (on PYTHONPATH)")
    p.add_argument("--model-param", action="append", metavar="K=V", help="a parameter of the model, applied to "
                                                                         "every cell after the bare size (repeatable)")
    p.add_argument("--tasks", nargs="+", default=list(TASKS), metavar="TASK", help=f"cells, of {' '.join(TASKS)}")
    p.add_argument("--budget-s", type=float, default=DEFAULT_BUDGET_S, help="seconds of training per cell")
    p.add_argument("--jobs", type=int, default=None, help="cells side by side, one thread each (default: the cores "
                                                          "there are)")
    p.add_argument("--results", type=Path, default=Path("results"), help="results folder (records in runs/, the "
                                                                         "table in limits/)")
    p.add_argument("--seed", type=int, default=0, help="seed of the data streams and the initialisation")
    p.add_argument("--force", action="store_true", help="train finished cells again")
    return p


def checked(args: argparse.Namespace) -> tuple[dict, list[str]]:
    """The model parameters and the tasks, or LimitsError naming the flag."""
    from bench.cli import parse_params

    tasks = [t for item in args.tasks for t in item.split(",") if t]
    unknown = [t for t in tasks if t not in TASKS]
    if unknown or not tasks:
        raise LimitsError(f"--tasks: unknown task {', '.join(map(repr, unknown)) or '(none given)'}; choose from "
                          f"{' '.join(TASKS)}")
    if not args.budget_s > 0:
        raise LimitsError(f"--budget-s: seconds of training per cell must be > 0, got {args.budget_s:g}")
    if args.jobs is not None and args.jobs < 1:
        raise LimitsError(f"--jobs: cells side by side must be >= 1, got {args.jobs}")
    if args.seed < 0:
        raise LimitsError(f"--seed must be >= 0, got {args.seed}")
    try:
        params = parse_params(args.model_param, "--model-param")
    except SystemExit as err:  # parse_params speaks the user's language and exits; here it is one error line
        raise LimitsError(str(err).removeprefix("error: ")) from None
    return params, list(dict.fromkeys(tasks))


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser().parse_args(argv)
    from bench.harness.records import ResultsDirError
    from bench.harness.sweep import run_sweep

    try:
        params, tasks = checked(args)
        configs = recipe(args.model, params, tasks, args.seed, args.budget_s)
    except ValueError as err:  # LimitsError names its flag; the model's errors (RunConfigError, ModelConfigError) not
        print(f"error: {err}" if isinstance(err, LimitsError) else f"error: --model {args.model}: {err}",
              file=sys.stderr)
        return 2
    jobs = args.jobs or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    start = time.perf_counter()
    try:
        outcomes = run_sweep(configs, args.results, workers=min(jobs, len(configs)), threads_per_run=1, echo=True,
                             force=args.force)
    except (ResultsDirError, RunConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    import torch

    torch.set_num_threads(jobs)  # the evidence, one cell after another, on the cores the cells had
    write_table(args, configs, params, jobs, start, argv)
    statuses = {o.status for o in outcomes}
    return 130 if statuses & {"interrupted", "not started"} else 1 if "failed" in statuses else 0


# ---- the table --------------------------------------------------------------------------------------------------


def stem(model: str, params: dict, seed: int, budget_s: float) -> str:
    """The table's file name: the model, its parameters, and the seed and budget where not the defaults."""
    name = model.replace(":", ".").replace("/", "_")
    name += "".join(f"-{k}={json.dumps(v, separators=(',', ':'))}" for k, v in sorted(params.items()))
    name += f"-seed{seed}" if seed else ""
    return name + (f"-{budget_s:g}s" if budget_s != DEFAULT_BUDGET_S else "")


def cell_row(cfg: RunConfig, results: Path, cached: Optional[dict]) -> dict:
    """One cell's row: what its record and final state say, and the verdict."""
    from bench.experiments.limits_evidence import evidence, verdict
    from bench.harness.records import load_result

    result = load_result(cfg, results)
    row = {"task": cfg.task.name, "model": cfg.model.name, "config_hash": cfg.hash, "seed": cfg.seed,
           "budget_s": cfg.time_limit_s}
    if result is None:
        return {**row, "status": "not started", "verdict": "not started", "why": "no record"}
    e = evidence(cfg, result, results, cached if cached and cached.get("config_hash") == cfg.hash else None)
    v, why = verdict(e)
    return {**row, **e.as_dict(), "verdict": v, "why": why, "params": result.param_count,
            "steps_done": result.steps_done, "steps": cfg.steps, "switched_at": result.switched_at,
            "stopped_by": "time" if (result.message or "").startswith("time limit") else "steps",
            "train_time_s": round(result.train_time_s, 1), "wall_time_s": round(result.wall_time_s, 1),
            "message": result.message}


def committed_rows() -> dict[str, list[dict]]:
    """task -> the committed rows of COMMITTED_MODELS (those whose table is under COMMITTED)."""
    out: dict[str, list[dict]] = {t: [] for t in TASKS}
    for model in COMMITTED_MODELS:
        path = COMMITTED / f"{stem(model, {}, 0, DEFAULT_BUDGET_S)}.json"
        if path.exists():
            for row in json.loads(path.read_text())["rows"]:
                out.setdefault(row["task"], []).append({**row, "model": f"{model} (committed)"})
    return out


def _num(x, fmt: str = ".2e") -> str:
    return "—" if x is None else format(x, fmt)


def _steps(row: dict) -> str:
    """steps done / the recipe's, and whether the time budget stopped it first."""
    if row.get("steps_done") is None:
        return "—"
    return f"{row['steps_done']}/{row.get('steps', '?')}" + (" time" if row.get("stopped_by") == "time" else "")


def _cells(r: dict) -> list:
    """One row of the table (a row of this run or a committed one)."""
    level, train, mse = r.get("level"), r.get("train_mse"), r.get("eval_mse")
    ratio = mse / level if mse is not None and level else None
    over = mse / train if mse is not None and train else None
    gaining = {True: "yes", False: "no"}.get(r.get("gaining"), "—")
    return [r["task"], r["model"], r.get("params", "—"), _num(mse), _num(train), _num(r.get("floor")),
            _num(ratio, ".0f" if ratio is not None and ratio < 1e5 else ".1e"), gaining, _steps(r),
            _num(r.get("lm_steps"), "d"), _num(r.get("damping"), ".1e"), _num(r.get("step_residual"), ".3g"),
            _num(r.get("gn_ratio"), ".3g"), _num(r.get("held_out_gain"), ".3g"), _num(over, ".2g"),
            r.get("train_time_s", "—"), r["verdict"]]


def markdown(rows: list[dict], committed: dict[str, list[dict]], title: str, notes: list[str]) -> str:
    from tabulate import tabulate

    headers = ["task", "model", "weights", "eval MSE", "train MSE", "floor", "eval / level", "still gaining",
               "steps", "LM steps", "damping", "step residual", "GN ratio", "held-out gain", "eval / train", "train s",
               "verdict"]
    body = [_cells(r) for row in rows
            for r in [row, *(c for c in committed.get(row["task"], []) if c.get("config_hash") != row["config_hash"])]]
    table = tabulate(body, headers=headers, tablefmt="github", disable_numparse=True)
    why = [f"{r['task']}: {r['verdict']}: {r.get('why', '')}" for r in rows]
    return f"# {title}\n\n{table}\n\n" + "\n".join(f"- {n}" for n in why + notes) + "\n"


def write_table(args, configs: list[RunConfig], params: dict, jobs: int, start: float, argv: list[str]) -> None:
    """Print the table and write it to <results>/limits/<stem>.md and .json (rows of tasks not run this time
    are kept from the file that was there)."""
    from bench.harness.records import atomic_write_text

    folder = Path(args.results) / "limits"
    path = folder / f"{stem(args.model, params, args.seed, args.budget_s)}.json"
    old = json.loads(path.read_text()) if path.exists() else {"rows": []}
    cached = {r["task"]: r for r in old["rows"]}
    rows = {t: cached[t] for t in TASKS if t in cached}
    rows.update({c.task.name: cell_row(c, Path(args.results), cached.get(c.task.name)) for c in configs})
    ordered = [rows[t] for t in TASKS if t in rows]
    wall_s = time.perf_counter() - start  # training and the evidence
    command = "python -m bench limits " + " ".join(argv)
    meta = {"command": command, "model": args.model, "model_params": params, "seed": args.seed,
            "budget_s": args.budget_s, "jobs": jobs, "wall_time_s": round(wall_s, 1), "rows": ordered}
    trained = sum(r.get("wall_time_s") or 0 for r in ordered)
    notes = [f"`{command}`: {wall_s:.0f} s wall this time, {jobs} job(s) of one thread; the cells' runs took "
             f"{trained:.0f} s of wall time in all (their records); budget {args.budget_s:g} s of training per cell",
             "bare sizes: " + "; ".join(f"{t}: {CELLS[t].why}" for t in TASKS if t in rows),
             "level: the float32 floor (MSE of the exact targets rounded), or where it is 0 (READ) ulp^2/12 at the "
             "targets' magnitudes; step residual: |r + J d| / |r| of the next LM step at the final damping; GN "
             "ratio: the training MSE the Gauss-Newton model predicts at its minimum over the MSE now; held-out "
             "gain: the best MSE on fresh problems after a Gauss-Newton step from the final weights, over the MSE "
             "before it",
             "verdict rule and how far to trust it: docs/limits.md"]
    text = markdown(ordered, committed_rows(), f"Precision limits of {args.model}", notes)
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(meta, indent=1) + "\n")
    atomic_write_text(path.with_suffix(".md"), text)
    print(text)
    print(f"wrote {path.with_suffix('.md')} and {path}")
