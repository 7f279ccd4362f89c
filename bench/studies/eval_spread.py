"""How much a run's eval MSE depends on which held-out problems it was scored on.

    python -m bench eval-spread fbdf76f9c8a93dee a2cc27545a33b48e --fresh 8 --large 16384

A run's eval MSE is the mean over one fixed held-out set (its seed's "eval" stream, eval_size problems).
Where a few hard problems carry the mean, as near float64's precision on MULTIPLY, another set of the same
size can give another order of magnitude. For each run (its kept final state or checkpoint under --results)
this scores the final weights on its own eval set (which must reproduce the record's eval MSE), on --fresh
other sets of the same size (eval seeds 1000, 1001, ...: problems no run trained or was scored on) and on
one set of --large problems; for the large one, also the median problem's MSE and the share of the sum that
its hardest 1% of problems carry. Each run's result is a stored evaluation (kind "eval_spread",
bench.harness.evaluations: results/evaluations/<hash>/eval_spread-<key>.json, keyed by its record, its
weights and --fresh/--large); `python -m bench tables` formats every stored one as results/tables/eval_spread.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Optional

import pandas as pd
import torch

from primitives import stream_generator

from bench.harness import evaluations as E
from bench.harness.records import finished_state
from bench.reporting.frames import fmt_mse

FRESH_SEED = 1000  # eval seeds of the fresh sets start here: far from any grid's run seeds (0-9)


@torch.no_grad()
def per_problem_mse(model: torch.nn.Module, task, size: int, seed: int, chunk: int = 256) -> torch.Tensor:
    """Each of `size` problems' MSE over its scored positions, in float64, on eval seed `seed`."""
    dtype = next(model.parameters()).dtype
    batch = task.sample(size, generator=stream_generator(seed, "eval"), dtype=dtype)
    model.eval()
    pred = torch.cat([model(batch.inputs[i:i + chunk]) for i in range(0, size, chunk)]).to(torch.float64)
    err = (pred - batch.targets.to(torch.float64))[:, batch.mask] ** 2
    return err.flatten(1).mean(dim=1)


def spread(cfg_hash: str, results_dir: Path, fresh: int = 8, large: int = 16384) -> dict:
    """The eval MSE of run `cfg_hash`'s final weights on its own eval set, on `fresh` others and on `large`;
    `weights`: the fingerprint of those weights (bench.harness.evaluations.weights_fingerprint)."""
    record, state = finished_state(cfg_hash, results_dir)
    cfg = record.config
    model = cfg.build_model().to(dtype=cfg.torch_dtype)
    model.load_state_dict(state["model"])
    task, t0 = cfg.build_task(), time.perf_counter()
    own = per_problem_mse(model, task, cfg.eval_size, cfg.seed).mean().item()
    sets = [per_problem_mse(model, task, cfg.eval_size, FRESH_SEED + k).mean().item() for k in range(fresh)]
    out = {"hash": cfg_hash, "label": cfg.label(), "dtype": cfg.dtype, "eval_size": cfg.eval_size,
           "record_eval_mse": record.eval_mse, "own_set_mse": own, "fresh_set_mse": sets, "large_size": large}
    if large:
        big = per_problem_mse(model, task, large, FRESH_SEED + fresh)
        top = big.sort(descending=True).values[:max(1, large // 100)]
        out.update(large_mse=big.mean().item(), large_median_problem=big.median().item(),
                   large_top_1pct_share=(top.sum() / big.sum()).item())
    return {**out, "seconds": time.perf_counter() - t0, "weights": E.weights_fingerprint(state["model"]),
            "record": record}


def store(c: dict, results_dir: Path, fresh: int, large: int) -> Path:
    """Keep one run's spread (from `spread`) as its stored evaluation."""
    result = {k: v for k, v in c.items() if k not in ("hash", "seconds", "weights", "record")}
    s = E.spec("eval_spread", fresh=fresh, large=large)
    return E.store(results_dir, c["hash"], s, result, record=c["record"], weights=c["weights"], seconds=c["seconds"])


def summary(checks: list[dict]) -> pd.DataFrame:
    rows = []
    for c in checks:
        sets, large = sorted(c["fresh_set_mse"]), c.get("large_size")
        rows.append({"run": c["hash"], "dtype": c["dtype"], "record eval MSE": fmt_mse(c["record_eval_mse"]),
                     "own set, again": fmt_mse(c["own_set_mse"]),
                     f"{len(sets)} fresh sets of {c['eval_size']:,}: min / median / max":
                         " / ".join(fmt_mse(v) for v in (sets[0], sets[len(sets) // 2], sets[-1])) if sets else "—",
                     "large set (problems)": f"{fmt_mse(c['large_mse'])} ({large:,})" if large else "—",
                     "its median problem": fmt_mse(c["large_median_problem"]) if large else "—",
                     "its hardest 1%'s share": f"{c['large_top_1pct_share']:.2f}" if large else "—"})
    return pd.DataFrame(rows)


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench eval-spread", description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="config hashes of runs with kept weights")
    ap.add_argument("--results", type=Path, default=Path("results"),
                    help="where the records and final states are; the results go to its evaluations/")
    ap.add_argument("--fresh", type=int, default=8, help="fresh eval sets of the run's eval_size")
    ap.add_argument("--large", type=int, default=16384, help="problems in the one large set (0: none)")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    if args.fresh < 0 or args.large < 0:
        ap.error("--fresh and --large count problems or sets: 0 or more")
    torch.set_num_threads(args.threads)
    for h in args.runs:
        c = spread(h, args.results, args.fresh, args.large)
        path = store(c, args.results, args.fresh, args.large)
        print(f"{h}: record {c['record_eval_mse']:.3g}, own set {c['own_set_mse']:.3g}, fresh "
              + ", ".join(f"{v:.3g}" for v in c["fresh_set_mse"])
              + (f"; {c['large_size']} problems {c['large_mse']:.3g}" if args.large else "")
              + f" ({c['seconds']:.0f} s) -> {path}", flush=True)
    print(f"the table: python -m bench tables --results {args.results} (results/tables/eval_spread)")
    return 0
