"""A learned one-step GD model applied iteratively, next to true GD and the exact construction.

A model trained on `gd_step` maps the tokens [x, 0], [a_i, b_i] to the gradient
A^T (A x - b) / N at the last position. Iterating it is gradient descent with a learned
gradient:

    x_{t+1} = x_t - eta * model(tokens(A, b, x_t))[:, -1]          (in the model's dtype)

Its error curve is compared with
    true GD        primitives.algorithms.gd_iterates, in float32 and float64
    construction   architectures.constructions' hand-set one-step models (BaseConv, 4 layers;
                   linear attention, 2 layers), fed back the same way

Error of an iterate: per problem, the mean over the D coordinates of (x_t - x_ls)^2, with
x_ls the float64 least-squares solution of the problem as the model sees it (A, b rounded to
its dtype); a curve is the median over problems (what Liu et al. plot) and the mean.

The helpers both this module and bench.experiments.construction_curves use live here, once: the held-out
problems (`sample_problems`), the per-problem error (`iterate_errors`), true GD
(`true_gd_iterates`) and the one-step constructions iterated (`ONE_STEP_BUILDERS`,
`construction_iterates`). The token layout is primitives.least_squares.gd_tokens.

Also here: `shifted_metrics`, a trained model scored on a task with other parameters (input
scale, conditioning): the out-of-distribution behaviour of the learned step.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Callable, Iterable, Optional

import pandas as pd
import torch

from primitives import algorithms as alg
from primitives import make_task, sample_least_squares, stream_generator
from primitives.least_squares import LeastSquaresProblem, gd_tokens

from architectures.constructions import (
    baseconv_gd_step,
    baseconv_gd_step_3layer,
    baseconv_gd_step_broadcast,
    gd_iterate,
    linear_attention_gd_step,
)

from bench.harness.config import DTYPES, RunConfig
from bench.harness.records import has_weights, load_model

ETA = 0.5  # gd_k's default: stable for D=5, N=20 (largest eigenvalue of A^T A / N ~ 2.25 < 2 / eta)

# the hand-set one-step GD models, by name: builder(D, N, eta, dtype=...) -> Construction
ONE_STEP_BUILDERS = {
    "baseconv": baseconv_gd_step,  # 4 layers per step
    "baseconv_3layer": baseconv_gd_step_3layer,  # 3
    "baseconv_broadcast": baseconv_gd_step_broadcast,  # 3, Liu et al.'s layout
    "linear_attention": linear_attention_gd_step,  # 2
}


def sample_problems(batch: int, D: int, N: int, dtype: torch.dtype, *, seed: int = 0, **task_params) -> LeastSquaresProblem:
    """Held-out least-squares problems (the "eval" stream of `seed`), inputs rounded to `dtype`.
    The same seed gives the same draws in every dtype (only the rounding differs)."""
    return sample_least_squares(batch, D=D, N=N, generator=stream_generator(seed, "eval"), dtype=dtype, **task_params)


def iterate_errors(xs: torch.Tensor, x_ls: torch.Tensor) -> torch.Tensor:
    """xs (T, B, D), x_ls (B, D) -> per-problem MSE (T, B) in float64 (non-finite stays non-finite)."""
    return (xs.to(torch.float64) - x_ls.to(torch.float64)).pow(2).mean(dim=-1)


@torch.no_grad()
def learned_gd_iterates(model: torch.nn.Module, problem: LeastSquaresProblem, steps: int, eta: float = ETA,
                        tokens: Callable = gd_tokens) -> torch.Tensor:
    """x_0..x_steps of GD with the model's gradient, in the model's dtype: (steps + 1, B, D). `tokens`:
    the layout the model was trained on (its task's `tokens`; default gd_step's first_token)."""
    dtype = next(model.parameters()).dtype
    model.eval()
    A, b, x = problem.A.to(dtype), problem.b.to(dtype), problem.x0.to(dtype)
    xs = [x]
    for _ in range(steps):
        x = x - eta * model(tokens(A, b, x))[:, -1]
        xs.append(x)
    return torch.stack(xs)


def true_gd_iterates(problem: LeastSquaresProblem, steps: int, dtype: torch.dtype, eta: float = ETA) -> torch.Tensor:
    """GD computed by primitives.algorithms in `dtype`: (steps + 1, B, D)."""
    A, b, x0 = problem.A.to(dtype), problem.b.to(dtype), problem.x0.to(dtype)
    return alg.gd_iterates(A, b, x0, eta, steps).transpose(0, 1)


def construction_iterates(name: str, problem: LeastSquaresProblem, steps: int, dtype: torch.dtype,
                          eta: float = ETA) -> torch.Tensor:
    """The hand-set one-step model `name` (a key of ONE_STEP_BUILDERS) built in `dtype` and
    iterated: x_0..x_steps, (steps + 1, B, D)."""
    if name not in ONE_STEP_BUILDERS:
        raise ValueError(f"unknown one-step construction {name!r}; choose from {sorted(ONE_STEP_BUILDERS)}")
    D, N = problem.A.shape[-1], problem.A.shape[-2]
    construction = ONE_STEP_BUILDERS[name](D, N, eta, dtype=dtype)
    return gd_iterate(construction, problem.A, problem.b, problem.x0, steps)


def curve_rows(method: str, label: str, dtype: str, xs: torch.Tensor, x_ls: torch.Tensor, **extra) -> list[dict]:
    """One row per iteration: median and mean error over problems."""
    errors = iterate_errors(xs, x_ls)
    rows = []
    for t in range(errors.shape[0]):
        e = errors[t]
        finite = bool(torch.isfinite(e).all())
        rows.append({"method": method, "label": label, "dtype": dtype, "iteration": t,
                     "median_mse": e.median().item() if finite else math.nan,
                     "mean_mse": e.mean().item() if finite else math.nan, **extra})
    return rows


def gd_iteration_curves(learned: Iterable[tuple] = (), *, steps: int = 300, batch: int = 256,
                        D: int = 5, N: int = 20, eta: float = ETA, seed: int = 0,
                        constructions: tuple[str, ...] = ("baseconv", "linear_attention"),
                        dtypes: tuple[str, ...] = ("float32", "float64")) -> pd.DataFrame:
    """MSE vs GD iteration for each (label, model) or (label, model, tokens) in `learned`, for true GD
    and for the constructions, on the same held-out problems (rounded to each dtype). `tokens` is the
    layout the model was trained on (its task's `tokens`; default gd_step's first_token).

    Columns: method (learned | true_gd | construction), label, dtype, iteration, median_mse, mean_mse.
    """
    rows: list[dict] = []
    problems = {name: sample_problems(batch, D, N, DTYPES[name], seed=seed) for name in dtypes}
    for label, model, *layout in learned:
        tokens = layout[0] if layout else gd_tokens
        dtype_name = next(k for k, v in DTYPES.items() if v == next(model.parameters()).dtype)
        problem = problems.get(dtype_name) or sample_problems(batch, D, N, DTYPES[dtype_name], seed=seed)
        xs = learned_gd_iterates(model, problem, steps, eta, tokens=tokens)
        rows += curve_rows("learned", label, dtype_name, xs, problem.x_ls)
    for name in dtypes:
        problem = problems[name]
        rows += curve_rows("true_gd", f"true GD ({name})", name, true_gd_iterates(problem, steps, DTYPES[name], eta),
                           problem.x_ls)
        for c in constructions:
            xs = construction_iterates(c, problem, steps, DTYPES[name], eta)
            rows += curve_rows("construction", f"{c} construction ({name})", name, xs, problem.x_ls)
    return pd.DataFrame(rows)


def level(curve: pd.DataFrame, column: str = "median_mse", tail: int = 20) -> float:
    """Where a curve levels off: the median of its last `tail` iterations (nan if it diverged)."""
    values = curve.sort_values("iteration")[column].tail(tail)
    return float(values.median()) if values.notna().all() else math.nan


# ---- trained models ------------------------------------------------------------------


def trained_model(cfg: RunConfig, results_dir: str | Path = "results", *, retrain_into: Optional[str | Path] = None):
    """The final weights of run `cfg`. Checkpoints are not committed: if results_dir has none (nor the
    run's kept final state, RunConfig.keep_final_state),
    the run is retrained (deterministic on CPU: same config, same weights) into `retrain_into`
    (default results_dir/scratch, which git ignores), never over the committed record."""
    if has_weights(cfg, results_dir):
        return load_model(cfg, results_dir)
    from bench.harness.train import run

    scratch = Path(retrain_into) if retrain_into is not None else Path(results_dir) / "scratch"
    result = run(cfg, scratch, progress=False)
    if result.status != "ok":
        raise RuntimeError(f"retraining run {cfg.hash} for its weights ended {result.status}: {result.message}")
    return load_model(cfg, scratch)


@torch.no_grad()
def shifted_metrics(model: torch.nn.Module, cfg: RunConfig, *, eval_size: int = 512, seed: int = 0,
                    **task_params) -> dict:
    """Metrics of a trained model on its task with some parameters changed (e.g. x_scale=4,
    a_scale=0.5, kappa=100): how the learned map behaves out of its training distribution."""
    task = make_task(cfg.task.name, **{**cfg.task.params, **task_params})
    dtype = next(model.parameters()).dtype
    batch = task.sample(eval_size, generator=stream_generator(seed, "eval"), dtype=dtype)
    model.eval()
    pred = torch.cat([model(batch.inputs[i:i + 256]) for i in range(0, eval_size, 256)])
    metrics = task.metrics(pred, batch)
    metrics.pop("per_position_mse", None)
    return {**metrics, "floor": task.floor(dtype)}


# ---- stored evaluations (bench.harness.evaluations): computed once by `python -m bench evaluate` ------


def _series(values: list) -> list:
    return [None if v is None or not math.isfinite(v) else v for v in values]


def gd_iteration_result(model: torch.nn.Module, cfg: RunConfig, params: dict) -> dict:
    """The learned step of run `cfg` iterated (evaluations.SPECS["gd_iteration"] parameters): its dtype and the
    median and mean error over problems at each iteration (None where non-finite)."""
    dtype = next(k for k, v in DTYPES.items() if v == next(model.parameters()).dtype)
    problem = sample_problems(params["problems"], params["D"], params["N"], DTYPES[dtype], seed=params["seed"])
    xs = learned_gd_iterates(model, problem, params["iterations"], params["eta"], tokens=cfg.build_task().tokens)
    rows = curve_rows("learned", "", dtype, xs, problem.x_ls)
    return {"dtype": dtype, "median_mse": _series([r["median_mse"] for r in rows]),
            "mean_mse": _series([r["mean_mse"] for r in rows])}


def gd_reference_result(params: dict) -> dict:
    """True GD and the constructions iterated on the same problems (SPECS["gd_iteration_reference"])."""
    curves = gd_iteration_curves(steps=params["iterations"], batch=params["problems"], D=params["D"], N=params["N"],
                                 eta=params["eta"], seed=params["seed"], constructions=tuple(params["constructions"]),
                                 dtypes=tuple(params["dtypes"]))
    return {"curves": [{"method": method, "label": label, "dtype": dtype,
                        "median_mse": _series(g["median_mse"].tolist()), "mean_mse": _series(g["mean_mse"].tolist())}
                       for (method, label, dtype), g in curves.groupby(["method", "label", "dtype"], sort=False)]}


def curves_frame(curves: Iterable[dict]) -> pd.DataFrame:
    """Stored curves ({method, label, dtype, median_mse: [...], mean_mse: [...]}) as gd_iteration_curves' frame."""
    rows = [{"method": c["method"], "label": c["label"], "dtype": c["dtype"], "iteration": t,
             "median_mse": math.nan if med is None else med, "mean_mse": math.nan if mean is None else mean}
            for c in curves for t, (med, mean) in enumerate(zip(c["median_mse"], c["mean_mse"]))]
    columns = ["method", "label", "dtype", "iteration", "median_mse", "mean_mse"]
    return pd.DataFrame(rows, columns=columns)


def ood_result(model: torch.nn.Module, cfg: RunConfig, params: dict) -> list[dict]:
    """MSE and rel of run `cfg`'s step with x or A scaled at test time (SPECS["ood"] parameters)."""
    return [{"shifted": param, "scale": s, **{k: m[k] for k in ("mse", "rel")}}
            for param in params["shifted"] for s in params["scales"]
            for m in [shifted_metrics(model, cfg, eval_size=params["eval_size"], seed=params["seed"], **{param: s})]]


def ood_table(models: Iterable[tuple[str, torch.nn.Module, RunConfig]],
              scales: tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)) -> pd.DataFrame:
    """MSE of each trained step when x (x_scale) or A (a_scale) is scaled at test time."""
    rows = []
    for label, model, cfg in models:
        for param in ("x_scale", "a_scale"):
            for s in scales:
                m = shifted_metrics(model, cfg, **{param: s})
                rows.append({"model": label, "shifted": param, "scale": s, "mse": m["mse"], "rel": m["rel"]})
    return pd.DataFrame(rows)
