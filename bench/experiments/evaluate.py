"""Compute, once, what the tables read from runs' weights, and store it beside the records.

    python -m bench evaluate                          # every evaluation the ci tables read that is missing or stale
    python -m bench evaluate --dry-run                # list them, compute nothing
    python -m bench evaluate --run HASH [--run HASH]  # only these runs' evaluations
    python -m bench evaluate --retrain                # runs without weights: train them again first (see below)
    python -m bench evaluate --force                  # recompute even the ones stored and current
    python -m bench evaluate --manifest               # rewrite results/final_states/MANIFEST.json, nothing else

What is evaluated: the learned GD steps of grids 3, 5, 7 and 8 applied iteratively next to true GD and the
exact constructions, and out of distribution (bench.reporting.learned_steps.wanted says which runs; the
kinds and their parameters are bench.harness.evaluations.SPECS). Each lands in
results/evaluations/<run>/<kind>-<key>.json, keyed by the run's record, its weights and the evaluation's own
parameters, and `python -m bench tables` formats it.

The weights come from the run's checkpoint or kept final state (results/final_states). A run with neither
is skipped and listed, unless --retrain: then a run without a time cap is trained again from its config
into results/scratch (deterministic on one CPU thread). If that reproduces the record's eval MSE to the bit,
its weights are the run's: kept as its final state (weights only) and evaluated. If not (another torch or
kernel sums in another order), the retrained weights are evaluated as what they are: the tables mark the row
"retrained here" with both eval MSEs, and the weights are not kept. A time-capped run is never retrained:
trained again, it stops elsewhere and is another run.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Optional

import torch

from bench import grids as G
from bench.harness import evaluations as E
from bench.harness.config import RunConfig
from bench.harness.records import BadFileError, RunResult, load_checkpoint


def compute(s: E.Spec, cfg: Optional[RunConfig], model: Optional[torch.nn.Module]):
    """The result of evaluation `s` (of `model`, the weights of run `cfg`; none for the reference)."""
    from bench.harness import iterate

    if s.kind == "gd_iteration_reference":
        return iterate.gd_reference_result(s.params)
    if s.kind == "gd_iteration":
        return iterate.gd_iteration_result(model, cfg, s.params)
    if s.kind == "ood":
        return iterate.ood_result(model, cfg, s.params)
    raise ValueError(f"evaluate computes gd_iteration, gd_iteration_reference and ood, not {s.kind!r}")


def model_from_state(cfg: RunConfig, state: dict) -> torch.nn.Module:
    model = cfg.build_model().to(dtype=cfg.torch_dtype)
    model.load_state_dict(state["model"])
    return model.eval()


def retrained_state(record: RunResult, results_dir: Path, log) -> Optional[tuple[dict, str, Optional[str]]]:
    """Train run `record.config` again into RESULTS/scratch (a finished retrain there is reused): (its final
    state, source, note), or None (said why). A retrain that reproduces the record's eval MSE to the bit has the
    run's weights: they are kept as its final state (weights only), source "computed". One that does not is
    evaluated as what it is, source "retrained", the two eval MSEs in the note, and its weights are not kept."""
    from bench.harness.final_states import save_weights
    from bench.harness.train import run

    cfg = record.config
    if cfg.time_limit_s is not None:
        log(f"run {cfg.hash}: time-capped ({cfg.time_limit_s:g} s): retrained it would be another run; not evaluated")
        return None
    scratch, t0 = results_dir / "scratch", time.perf_counter()
    again = run(cfg, scratch, progress=False)
    state = load_checkpoint(cfg, scratch) if again.status == "ok" else None
    if state is None:
        log(f"run {cfg.hash}: retrained, it ended {again.status} ({again.message}); not evaluated")
        return None
    if again.eval_mse == record.eval_mse:
        path = save_weights(state, results_dir, record.model_dump_json())
        log(f"run {cfg.hash}: retrained ({time.perf_counter() - t0:.0f} s) to the record's eval MSE "
            f"{record.eval_mse!r}: its weights kept in {path}")
        return state, "computed", None
    note = (f"retrained here ({again.environment.get('torch')}): eval MSE {again.eval_mse:.9g}, the record's "
            f"{record.eval_mse:.9g} ({record.environment.get('torch')})")
    log(f"run {cfg.hash}: {note}; evaluated, weights not kept")
    return state, "retrained", note


def evaluate_run(run: str, specs: list[E.Spec], records: dict, args, log) -> int:
    """Compute and store the evaluations `specs` of `run` (or of the reference); how many were stored."""
    record = records.get(run)
    if run != E.REFERENCE and record is None:
        log(f"run {run}: no readable record under {args.results}; skipped")
        return 0
    model, weights, source, note = None, None, "computed", None
    if run != E.REFERENCE:
        try:
            state = load_checkpoint(record.config, args.results)
        except BadFileError as err:
            log(f"run {run}: {err}; skipped")
            return 0
        if state is None and args.retrain:
            state, source, note = retrained_state(record, args.results, log) or (None, source, note)
        if state is None:
            log(f"run {run}: no checkpoint or final state under {args.results}; skipped (--retrain trains it again "
                "where that gives the same run)")
            return 0
        model, weights = model_from_state(record.config, state), E.weights_fingerprint(state["model"])
    for s in specs:
        t0 = time.perf_counter()
        result = compute(s, None if record is None else record.config, model)
        path = E.store(args.results, run, s, result, record=record, weights=weights, seconds=time.perf_counter() - t0,
                       source=source, note=note)
        log(f"run {run}: {s.kind} in {time.perf_counter() - t0:.1f} s -> {path}")
    return len(specs)


def to_do(args, records: dict, frames: dict, log) -> dict[str, list[E.Spec]]:
    """The evaluations that are missing or stale (all of them with --force), by run."""
    from bench.reporting.learned_steps import Lookups, wanted

    find = Lookups(args.results, records, lambda m: None)
    todo: dict[str, list[E.Spec]] = {}
    for run, s in wanted(frames, args.iterations):
        if args.run and run not in args.run:
            continue
        found = find(run, s)
        if args.force or not found.usable:
            todo.setdefault(run, []).append(s)
            log(f"run {run}: {s.kind} {'(forced)' if found.usable else found.why}")
    return todo


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench evaluate", description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--results", type=Path, default=Path("results"), help="results folder (runs/, final_states/)")
    p.add_argument("--budget", choices=G.BUDGETS[1:], default="ci", help="the grids whose tables are evaluated for")
    p.add_argument("--run", action="append", default=[], metavar="HASH", help="only this run (repeatable)")
    p.add_argument("--iterations", type=int, default=150, help="GD iterations of the iteration evaluations")
    p.add_argument("--retrain", action="store_true",
                   help="train a run without weights again first (never a time-capped one); keep its weights "
                        "if it reproduces the record")
    p.add_argument("--force", action="store_true", help="recompute the evaluations that are stored and current too")
    p.add_argument("--dry-run", action="store_true", help="list what would be computed; compute nothing")
    p.add_argument("--manifest", action="store_true",
                   help="only rewrite RESULTS/final_states/MANIFEST.json: each file, what it holds, what reads it")
    p.add_argument("--threads", type=int, default=1, help="torch threads (one: reproducible to the bit)")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    from bench.reporting import manifest
    from bench.reporting.tables import frames_at

    args = parser().parse_args(argv)
    torch.set_num_threads(args.threads)
    if not (args.results / "runs").is_dir():
        print(f"error: no run records under {args.results / 'runs'}", flush=True)
        return 2

    def log(message: str) -> None:
        print(message, flush=True)

    if args.manifest:
        log(f"wrote {manifest.write(args.results, args.budget)}")
        return 0
    records, frames = frames_at(args.results, G.get_budget(args.budget), log=log)
    todo = to_do(args, records, frames, log)
    if args.dry_run or not todo:
        log(f"{sum(map(len, todo.values()))} evaluation(s) to compute" + (" (dry run)" if todo else ""))
        return 0
    t0 = time.perf_counter()
    stored = sum(evaluate_run(run, specs, records, args, log) for run, specs in todo.items())
    wanted = sum(map(len, todo.values()))
    log(f"stored {stored} of {wanted} evaluation(s) in {time.perf_counter() - t0:.0f} s")
    if args.retrain:  # weights it kept are final states: the manifest lists them
        log(f"wrote {manifest.write(args.results, args.budget)}")
    return 0 if stored == wanted else 1
