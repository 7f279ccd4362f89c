"""Where the matrix-free LM's step model fails, at the end of a run (MatrixFreeLevenbergMarquardt.model_check).

    python -m bench step-model 7d8f9670c22b978d c3a1d858f06975d0 --out results/step_model

For each run (its kept final state or checkpoint under --results): the step its solver would take next,
solved as the run solves it, and along fractions t of it the reduction of f = MSE / 2 that three things
give: the curvature slice's quadratic model (what the run's rho is computed from), the whole training
set's Gauss-Newton model (the same step's |J d|^2 on every problem), and the loss itself. Their ratios
say what limits the step: the slice (the slice's model wrong, the whole set's right), or the residuals'
nonlinearity (both wrong alike at full length, right at short ones), which a longer CG solve or a larger
slice cannot mend. Writes <out>/<hash>.json per run and <out>/step_model.md, a table of them all.
"""
from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path
from typing import Optional

import pandas as pd
import torch

from bench.harness.config import RunConfigError
from bench.solvers.matrix_free import MatrixFreeLevenbergMarquardt
from bench.reporting.frames import fmt_mse
from bench.harness.records import atomic_write_text, cpu_name, finished_state
from bench.harness.train import Trainer

FRACTIONS = (0.125, 0.25, 0.5, 1.0)


def check_run(cfg_hash: str, results_dir: Path, fractions=FRACTIONS, float64: bool = False) -> dict:
    """model_check at the end of run `cfg_hash`, with the run's own training set and solver state; with
    `float64`, on a float64 copy of the same weights, problems and solver state: whether the run's own
    arithmetic is what its model misses."""
    record, state = finished_state(cfg_hash, results_dir)
    cfg = record.config
    trainer = Trainer(cfg, results_dir, progress=False)
    trainer.load_state_dict(state)
    if not isinstance(trainer.optimizer, MatrixFreeLevenbergMarquardt):
        raise RunConfigError(f"run {cfg_hash} did not end with the matrix-free LM (solver 'cg'): nothing to check")
    solver, lm = trainer.optimizer, trainer.optimizer.cfg
    if float64:
        solver = MatrixFreeLevenbergMarquardt(copy.deepcopy(trainer.model).double(), lm)
        solver.load_state_dict(trainer.optimizer.state_dict())
    data = trainer.train_set
    t0 = time.perf_counter()
    check = solver.model_check(data.inputs, data.targets, data.mask, fractions)
    return {"hash": cfg_hash, "label": cfg.label(), "dtype": cfg.dtype,
            "arithmetic": "float64" if float64 else cfg.dtype, "train_size": lm.train_size,
            "curvature_size": lm.curvature_size or lm.train_size, "cg_max_iter": lm.cg.max_iter,
            "eval_mse": record.eval_mse, "seconds": time.perf_counter() - t0, "machine": cpu_name(),
            **check}


def summary(checks: list[dict]) -> pd.DataFrame:
    """One row per run and fraction: each model's predicted reduction over the actual one."""
    rows = []
    for c in checks:
        for a in c["along"]:
            rows.append({"run": c["hash"], "dtype": c["dtype"], "arithmetic": c.get("arithmetic", c["dtype"]),
                         "train MSE": fmt_mse(c["mse"]),
                         "curvature / train problems": f"{c['curvature_size']:,} / {c['train_size']:,}",
                         "damping": fmt_mse(c["damping"]), "CG residual": f"{c['cg_rel_residual']:.2f}",
                         "d.G.d slice / whole": f"{c['d_G_slice_d'] / c['d_G_whole_d']:.3f}",
                         "t": a["fraction"], "actual / slice model": f"{a['actual'] / a['predicted_slice']:.3f}",
                         "actual / whole-set model": f"{a['actual'] / a['predicted_whole']:.3f}"})
    return pd.DataFrame(rows)


def write(checks: list[dict], out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for c in checks:
        name = c["hash"] if c["arithmetic"] == c["dtype"] else f"{c['hash']}_{c['arithmetic']}"
        atomic_write_text(out / f"{name}.json", json.dumps(c, indent=1) + "\n")
    every = sorted(out.glob("*.json"))  # the runs checked before too: the table is of all of them
    table = summary([json.loads(p.read_text()) for p in every])
    atomic_write_text(out / "step_model.md", "# The LM step's model against the loss, at the end of each run\n\n"
                      "Reduction of MSE/2 along t x the next step: actual over the curvature slice's quadratic model "
                      "(the run's rho) and over the whole training set's Gauss-Newton model. d.G.d: the step's "
                      "curvature on the slice over that on the whole set. `python -m bench step-model HASH...`\n\n"
                      + table.to_markdown(index=False) + "\n")


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench step-model", description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="config hashes of runs that ended with the matrix-free LM")
    ap.add_argument("--results", type=Path, default=Path("results"), help="where the records and final states are")
    ap.add_argument("--out", type=Path, default=Path("results/step_model"))
    ap.add_argument("--float64", action="store_true", help="on a float64 twin of each float32 run's weights")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    checks = []
    for h in args.runs:
        c = check_run(h, args.results, float64=args.float64)
        print(f"{h}: train MSE {c['mse']:.3g}, d.G.d slice/whole {c['d_G_slice_d'] / c['d_G_whole_d']:.3f}, "
              + ", ".join(f"t={a['fraction']}: actual/slice {a['actual'] / a['predicted_slice']:.3f} "
                          f"actual/whole {a['actual'] / a['predicted_whole']:.3f}" for a in c["along"])
              + f" ({c['seconds']:.0f} s)", flush=True)
        checks.append(c)
        write([c], args.out)  # each as it is done: a later one may take an hour
    return 0
