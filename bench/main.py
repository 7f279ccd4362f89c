"""The main job: the suite's question answered in minutes, then the report.

    python -m bench main                          # profile quick (the default of `tox -e bench`)
    python -m bench main --results DIR            # where it writes (default results/quick)
    python -m bench main --jobs 1                 # one case at a time (default: one per core)
    python -m bench main --profile ci --dry-run   # what a profile runs, what is recorded, how long it takes
    python -m bench main --profile ci             # pytest bench --profile ci (hours), then the report

Profile quick, its cases side by side (--jobs, worker processes, one torch thread each; the
numbers are those of --jobs 1, the output is in case order):

    1-2  multiply with the bare one-layer BaseConv and softmax attention: L-BFGS until it stalls (at
         grid 7's stall step at the latest), then 12 Levenberg-Marquardt steps, which take BaseConv to
         the float32 floor (bench.grids.quick)
    3    the GD step learned by the bare linear attention that can express it (Levenberg-Marquardt)
    4    that learned step applied iteratively, next to true GD and the exact constructions
         (bench.harness.iterate; after case 3)
    5    the exact constructions (bench.experiments.construction_report)
    6    the conv kernels' error floor against the float64 oracle, L <= 512 (bench.experiments.kernel_error_floor)
    7-8  tables, figures and the report (bench.reporting.report), once the others have ended

Finished runs are not trained again (their records are in DIR/runs), so an interrupted job resumes
by running it again (Ctrl-C once: the runs in flight checkpoint and the job stops; twice: it exits
at once); --force recomputes everything. The job ends by printing the headline table and where each
file went. Profiles smoke, ci and paper run the pytest-benchmark suite
(`pytest bench --profile P --benchmark-json results/benchmarks/bench-P.json`, any other arguments
passed on to pytest), tabulate its precision cases and write the report of the results folder.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import textwrap
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

PYTEST_PROFILES = ("smoke", "ci", "paper")
PROFILES = ("quick",) + PYTEST_PROFILES
KERNEL_MAX_LEN, KERNEL_TRITON_MAX_LEN = 512, 64  # the interpreter's cost grows fast with L
REPO_ROOT = Path(__file__).resolve().parent.parent
CONSTRUCTION_ARGS: list[str] = []  # bench.experiments.construction_report's defaults: the committed table's command
ITERATIONS = 150  # GD iterations of the learned step (as bench.reporting.tables' gd_iteration)


@dataclass
class Job:
    """What the cases of the quick profile share: where to write, and what earlier cases produced."""

    results: Path
    force: bool = False
    log_file: Optional[Path] = None
    progress: Optional[bool] = None  # a run's progress bar (None: where stderr is a terminal)
    done: dict = field(default_factory=dict)

    @property
    def tables(self) -> Path:
        return self.results / "tables"

    @property
    def figures(self) -> Path:
        return self.results / "figures"

    @contextlib.contextmanager
    def quiet(self):
        """A case's own prints go to the job's log file, not the terminal."""
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "a") as f, contextlib.redirect_stdout(f):
            yield


class Interrupted(Exception):
    """A run of the job was interrupted (it checkpointed): the job stops, and running it again resumes."""


@dataclass
class Case:
    key: str
    title: str
    do: Callable[[Job], str]  # returns a one-line summary of what it got
    needs: tuple[str, ...] = ()  # the cases whose results it reads (it starts once they have ended)
    start_first: bool = False  # side by side (--jobs > 1), it starts before the others: it heads the longest chain
    in_driver: bool = False  # it reads what every other case made: the job's own process runs it, after them


def fmt(x) -> str:
    from bench.reporting.frames import fmt_mse

    return fmt_mse(x)


# ---- the cases ------------------------------------------------------------------------


def train_case(index: int) -> Callable[[Job], str]:
    def do(job: Job) -> str:
        from bench.grids import quick
        from bench.harness.train import run

        cfg = quick()[index]
        result = run(cfg, job.results, force=job.force, progress=job.progress)
        job.done["runs"] = {**job.done.get("runs", {}), cfg.hash: result}  # a new dict: what the case returns
        if result.status == "interrupted":  # Ctrl-C / SIGTERM: the run checkpointed; the next cases need it
            raise Interrupted(result.message or "interrupted")
        if result.status != "ok":
            return f"{result.status}: {result.message}"
        stop = f"; {result.message}" if result.message else ""
        return (f"eval MSE {fmt(result.eval_mse)} ({result.eval_mse / result.floor:.3g}x the float32 floor), "
                f"{result.steps_done} steps, {result.train_time_s:.0f} s of training{stop}")
    return do


def iterate_case(job: Job) -> str:
    """The learned GD step (case 3's run) applied iteratively, next to true GD and the constructions."""
    from bench.reporting.figures import gd_iteration_figure
    from bench.reporting.frames import fmt_mse, learned_step_label
    from bench.grids import quick
    from bench.harness.iterate import gd_iteration_curves, trained_model
    from bench.harness.records import load_result
    from bench.reporting.tables import Output, iteration_levels

    cfg = quick()[2]
    result = load_result(cfg, job.results)
    label = learned_step_label(cfg.model.name, cfg.optimizer.name)
    curves = gd_iteration_curves([(label, trained_model(cfg, job.results), cfg.build_task().tokens)], steps=ITERATIONS)
    levels = iteration_levels(curves, {label: f"{budget_of(cfg)} (gd_step eval MSE {fmt_mse(result.eval_mse)})"})
    job.done["levels"] = levels
    out = Output(job.tables, job.figures)
    curves.to_csv(job.tables / "gd_iteration_curves.csv", index=False)
    shown = levels.copy()
    for column in ("level (median MSE, last 20 iterations)", "mean MSE, last 20"):
        shown[column] = shown[column].map(fmt_mse)
    out.table("gd_iteration", shown, "GD applied iteratively: where each curve levels off",
              [f"{ITERATIONS} iterations, eta 0.5, 256 held-out problems D=5, N=20; error = per-problem mean squared "
               "distance to the float64 least-squares solution; the learned step is case 3 of the main job."])
    out.figure("gd_iteration", gd_iteration_figure(curves))
    learned = levels[levels["method"] == "learned"].iloc[0]["level (median MSE, last 20 iterations)"]
    true32 = levels[(levels["method"] == "true_gd") & (levels["dtype"] == "float32")].iloc[0]
    return (f"learned step levels off at {fmt_mse(learned)}, true GD in float32 at "
            f"{fmt_mse(true32['level (median MSE, last 20 iterations)'])}")


def constructions_case(job: Job) -> str:
    from bench.experiments import construction_report

    out = job.results / "constructions"
    path = out / "constructions.json"
    if path.exists() and not job.force:
        result = json.loads(path.read_text())
    else:
        with job.quiet():
            result = construction_report.main([*CONSTRUCTION_ARGS, "--out", str(out)])
    job.done["constructions"] = result
    multiply = next(r for r in result["primitives"] if r["task"]["name"] == "multiply")["float32"]
    gd = next(r for r in result["least_squares"] if r["construction"] == "baseconv_gd_step")["float32"]
    return (f"MULTIPLY in one BaseConv layer {'bit-exact' if multiply['bit_exact'] else fmt(multiply['mse'])}; "
            f"BaseConv GD step iterated: {fmt(gd['final_median_mse'])}")


def kernel_case(job: Job) -> str:
    out = job.results / "kernels"
    existing = sorted(out.glob("error_floor_*.json"))
    if not existing or job.force:
        # its own process: the Triton interpreter must be switched on before triton is first imported,
        # and this one may have imported it already (TRITON_INTERPRET=1 is set there on a CPU machine)
        cmd = [sys.executable, "-m", "bench", "kernel-floor", "--out", str(out), "--max-len", str(KERNEL_MAX_LEN),
               "--triton-max-len", str(KERNEL_TRITON_MAX_LEN), "--triton-fft-max-len", str(KERNEL_TRITON_MAX_LEN)]
        job.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(job.log_file, "a") as log:
            subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=True, cwd=REPO_ROOT,
                           env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
                               p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)})
        existing = sorted(out.glob("error_floor_*.json"))
    result = json.loads(existing[0].read_text())
    job.done["kernels"] = result
    length, errors = kernel_errors(result)
    return f"float32 forward at L={length}: " + ", ".join(f"{b} {fmt(v)}" for b, v in errors.items())


def kernel_errors(result: dict, length: int = 40) -> tuple[int, dict]:
    """Per backend the float32 forward error at L = `length` (the paper's length; else the longest run)."""
    f32 = [r for r in result["records"] if r["dtype"] == "float32"]
    if not any(r["L"] == length for r in f32):
        length = max(r["L"] for r in f32)
    return length, {r["backend"]: r["y"] for r in f32 if r["L"] == length}


def tables_case(job: Job) -> str:
    from bench.grids import quick
    from bench.harness.records import load_result
    from bench.reporting.figures import training_curves_figure
    from bench.reporting.tables import Output

    out = Output(job.tables, job.figures)
    pair = [load_result(c, job.results) for c in quick()[:2]]
    out.figure("training_curves_runs", training_curves_figure(
        [(f"{r.config.model.name}, bare one layer", r) for r in pair if r is not None],
        "multiply, L-BFGS then Levenberg-Marquardt: eval MSE during training"))
    out.table("headline", headline_frame(job), "The suite's question, answered by the main job (profile quick)",
              ["Ours: measured by this job on this machine. Reference: the float32 level the number is to be read "
               "against. Paper: Liu et al. (ICLR 2025), at the paper's budget (batch 1024, 1M Adam steps, GPU)."])
    out.table("runs", runs_frame(job), "The main job's training runs", [
        "eval MSE on 1,024 held-out problems, float64 against exact targets; floor: the MSE of rounding the exact "
        "targets to float32."])
    from bench.experiments.kernel_error_floor import floor_table
    import pandas as pd

    kernels = job.done.get("kernels")
    if kernels is None:
        return f"{len(out.written)} files under {job.tables} and {job.figures} (no kernel error floor)"
    out.table("kernel_error_floor", pd.DataFrame(floor_table(kernels["records"])),
              "Causal conv kernels: relative L2 error of the forward pass against the float64 oracle",
              [f"Median of {len(kernels['shape']['seeds'])} seeds, B={kernels['shape']['B']}, "
               f"D={kernels['shape']['D']}; 'rounded oracle' is the exact result rounded once (no backend can do "
               f"better); `{kernels['command']}`, {kernels['device']}."])
    return f"{len(out.written)} files under {job.tables} and {job.figures}"


def report_case(job: Job) -> str:
    from bench.reporting.report import write_report

    html, md = write_report(job.results, job.results, profile="quick")
    job.done["report"] = (html, md)
    return f"{html} and {md}"


CASES = [
    Case("baseconv", "multiply, bare one-layer BaseConv: L-BFGS, then 12 Levenberg-Marquardt steps", train_case(0)),
    Case("attention", "multiply, bare one-layer softmax attention: the same recipe", train_case(1)),
    Case("gd_step", "the GD step learned by the bare linear attention (Levenberg-Marquardt)", train_case(2),
         start_first=True),
    Case("iterate", "the learned GD step applied iteratively, next to true GD", iterate_case, needs=("gd_step",)),
    Case("constructions", "the exact constructions (bench.experiments.construction_report)", constructions_case),
    Case("kernels", f"the conv kernels' error floor, L <= {KERNEL_MAX_LEN} (bench.experiments.kernel_error_floor)",
         kernel_case),
    Case("tables", "tables and figures", tables_case,
         needs=("baseconv", "attention", "gd_step", "iterate", "constructions", "kernels"), in_driver=True),
    Case("report", "the report (bench.reporting.report)", report_case, needs=("tables",), in_driver=True),
]


# ---- tables --------------------------------------------------------------------------


def budget_of(cfg) -> str:
    from bench.reporting.frames import budget_text

    cap = f", at most {cfg.time_limit_s:g} s of training" if cfg.time_limit_s else ""
    return budget_text(cfg) + cap


def runs_frame(job: Job):
    import pandas as pd

    from bench.grids import quick

    rows = []
    for cfg in quick():
        r = job.done.get("runs", {}).get(cfg.hash)
        if r is None:
            from bench.harness.records import load_result

            r = load_result(cfg, job.results)
        ok = r is not None and r.status == "ok"
        rows.append({
            "task": cfg.task.name, "model": cfg.model.name, "weights": r.param_count if r else None,
            "status": r.status if r else "missing", "eval MSE": fmt(r.eval_mse) if ok else "—",
            "best eval MSE": fmt(r.best_eval_mse) if ok else "—", "float32 floor": fmt(r.floor) if r else "—",
            "MSE / floor": f"{r.eval_mse / r.floor:.3g}" if ok and r.floor else "—",
            "steps": r.steps_done if r else 0,
            "switched to LM at step": r.switched_at if r and r.switched_at is not None else "—",
            "train time (s)": round(r.train_time_s) if r else None, "budget": budget_of(cfg),
            "config": cfg.hash,
        })
    return pd.DataFrame(rows)


def headline_frame(job: Job):
    """One row per question: our number, the float32 level to read it against, the paper's."""
    import pandas as pd

    from bench.reporting.frames import PAPER_FIGURES
    from bench.grids import quick

    runs = job.done.get("runs", {})
    rows = []

    def add(question, architecture, ours, reference, paper, budget):
        rows.append({"question": question, "architecture": architecture, "ours": ours, "reference": reference,
                     "paper": paper, "budget": budget})

    for cfg in quick():
        r = runs.get(cfg.hash)
        if r is None:
            continue
        ours = fmt(r.eval_mse) if r.status == "ok" else r.status
        if r.status == "ok" and r.best_eval_mse is not None and r.best_eval_mse < 0.5 * r.eval_mse:
            ours += f" (best {fmt(r.best_eval_mse)})"
        question = ("MULTIPLY trained to the floor" if cfg.task.name == "multiply"
                    else "the GD step (gd_step) learned")
        arch = f"{cfg.model.name}, bare ({r.param_count:,} weights)"
        add(question, arch, ours, f"float32 floor {fmt(r.floor)}", "—", budget_of(cfg))
    levels = job.done.get("levels")
    if levels is not None:
        column = "level (median MSE, last 20 iterations)"
        f32 = levels[levels["dtype"] == "float32"]
        for _, lv in f32.iterrows():
            if lv["method"] == "learned":
                true = f32[f32["method"] == "true_gd"][column].iloc[0]
                add(f"the learned GD step applied {ITERATIONS} times", lv["curve"], fmt(lv[column]),
                    f"true GD in float32 {fmt(true)}", f"~{PAPER_FIGURES['learned_gd_iterated'][0]:g}", lv["budget"])
            elif lv["method"] == "true_gd":
                add(f"true GD applied {ITERATIONS} times", "primitives.algorithms.gd_iterates", fmt(lv[column]),
                    "—", f"~{PAPER_FIGURES['true_gd_float32'][0]:g}", "exact (no training)")
            else:
                add(f"an exact construction of the GD step applied {ITERATIONS} times", lv["curve"], fmt(lv[column]),
                    f"true GD in float32 {fmt(f32[f32['method'] == 'true_gd'][column].iloc[0])}", "—",
                    "hand-set weights (no training)")
    cons = job.done.get("constructions")
    if cons is not None:
        for r in cons["primitives"]:
            f = r["float32"]
            ours = fmt(f["mse"]) + (" (bit-exact)" if f["bit_exact"] else "")
            add(f"{r['task']['name'].upper()} by an exact construction", f"baseconv, {r['layers']} layer, "
                f"width {r['width']}", ours, f"float32 floor {fmt(f['floor'])}", "—", "hand-set weights (no training)")
    kernels = job.done.get("kernels")
    if kernels is not None:
        length, errors = kernel_errors(kernels)
        oracle = errors.pop("rounded oracle", None)
        for backend, value in errors.items():
            add(f"kernel error floor: causal conv, float32, L={length} (relative L2)", f"{backend} backend", fmt(value),
                f"exact result rounded once {fmt(oracle)}", "—", "no training")
    return pd.DataFrame(rows)


# ---- running it ----------------------------------------------------------------------


def case_list(cases: str) -> list[Case]:
    """The cases named by 'module:NAME' (bench.main:CASES; a test's stand-ins are importable by the workers too)."""
    import importlib

    module, _, name = cases.partition(":")
    return getattr(importlib.import_module(module), name)


def run_case(index: int, results: str, force: bool, done: dict, progress: Optional[bool] = None,
             cases: str = "bench.main:CASES") -> dict:
    """Case `index` of `cases` on one torch thread, in this process or a worker (bench.harness.sweep's
    local executor), given what the cases before it produced (`done`); never raises:
    {"status": ok | failed | interrupted (a run checkpointed), "summary", "done", "seconds"}."""
    import torch

    from bench.harness.train import set_ieee_precision

    set_ieee_precision()
    # One thread: the recorded trajectories were measured so (L-BFGS takes another path with two).
    torch.set_num_threads(1)
    case = case_list(cases)[index]
    job = Job(Path(results), force=force, log_file=case_log(Path(results), index, case), done=dict(done),
              progress=progress)
    t0 = time.perf_counter()
    status = "ok"
    try:
        with job.quiet():  # what a case prints goes to its log: side by side, it would interleave
            summary = case.do(job)
    except Interrupted as why:
        status, summary = "interrupted", str(why)
    except Exception as err:  # the other cases still run; the traceback goes to the log
        status = "failed"
        job.log_file.parent.mkdir(parents=True, exist_ok=True)
        with open(job.log_file, "a") as log:
            log.write(f"--- case {index + 1} failed: {case.title}\n{traceback.format_exc()}")
        summary = f"FAILED: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''} " \
                  f"(traceback in {job.log_file})"
    new = {k: v for k, v in job.done.items() if k not in done or done[k] is not v}
    return {"status": status, "summary": summary, "done": new, "seconds": time.perf_counter() - t0}


def case_log(results: Path, index: int, case: Case) -> Path:
    return results / "logs" / "main" / f"{index + 1}-{case.key}.log"


def run_quick(results: Path, force: bool = False, echo: Callable[[str], None] = print, jobs: int = 1,
              cases: str = "bench.main:CASES") -> Job:
    """Every case of the quick profile, `jobs` at a time in worker processes (1: in this process),
    one torch thread each; the output and the job's log in case order whatever the order they end in."""
    from bench.harness.sweep import _InProcess, _Job, _Processes, drive

    job = Job(Path(results), force=force, log_file=Path(results) / "main.log")
    job.results.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    ended: dict[int, dict] = {}
    shown = [0]
    defs = case_list(cases)  # CASES, or a test's stand-ins
    index = {c.key: i for i, c in enumerate(defs)}

    def make_job(i: int) -> _Job:
        # side by side, progress bars would write over each other
        progress = None if jobs == 1 else False
        return _Job(i, (i, str(job.results), force, dict(job.done), progress, cases), time.perf_counter())

    def report(j: _Job, out: dict) -> None:
        ended[j.item] = out
        for key, value in out.get("done", {}).items():  # the runs of cases that ran side by side add up
            job.done[key] = {**job.done.get(key, {}), **value} if key == "runs" else value
        while shown[0] in ended:  # in case order: a case's lines wait for those of the cases before it
            i, o = shown[0], ended[shown[0]]
            echo(f"[{i + 1}/{len(defs)}] {defs[i].title}  ({len(defs) - i - 1} more after this; "
                 f"{time.perf_counter() - start:.0f} s so far)")
            echo(f"      {o.get('seconds', 0):.0f} s: {o['summary']}")
            shown[0] += 1

    def lost(j: _Job, err: Exception, stopping: bool) -> dict:
        return {"status": "interrupted" if stopping else "failed", "summary": f"FAILED: {err}"}

    def ready(i: int) -> bool:
        return all(index[k] in ended for k in defs[i].needs)

    # one at a time in case order, as they print; side by side the head of the longest chain first
    order = sorted(range(len(defs)), key=lambda i: (jobs > 1 and not defs[i].start_first, i))
    phases = [(_Processes(jobs, target=run_case) if jobs > 1 else _InProcess(run_case),
               [i for i in order if not defs[i].in_driver]),
              (_InProcess(run_case), [i for i in order if defs[i].in_driver])]
    try:
        for backend, batch in phases:
            stopped = drive(backend, batch, make_job, report, lost, ready)
            if stopped or any(o["status"] == "interrupted" for o in ended.values()):
                raise Interrupted(next((o["summary"] for o in ended.values() if o["status"] == "interrupted"),
                                       "stopped by a signal"))
    finally:
        gather_logs(job, defs)
    job.done["failed"] = [defs[i].title for i in sorted(ended) if ended[i]["status"] == "failed"]
    job.done["seconds"] = time.perf_counter() - start
    from bench.harness.records import atomic_write_text

    # what each case took (`--dry-run` reads it for the cases that leave no record)
    atomic_write_text(job.results / "main.json", json.dumps(
        {"jobs": jobs, "seconds": job.done["seconds"],
         "cases": {defs[i].key: o.get("seconds") for i, o in sorted(ended.items())}}, indent=1) + "\n")
    return job


def gather_logs(job: Job, cases: list[Case]) -> None:
    """The cases' logs, in case order, into the job's log."""
    parts = [case_log(job.results, i, c) for i, c in enumerate(cases)]
    text = "".join(f"=== case {i + 1}: {cases[i].title}\n{p.read_text()}" for i, p in enumerate(parts) if p.exists())
    job.log_file.write_text(text)


def print_summary(job: Job, echo: Callable[[str], None] = print) -> None:
    from tabulate import tabulate

    head = headline_frame(job).drop(columns=["budget"])
    echo("")
    echo(tabulate(head.values.tolist(), headers=list(head.columns), tablefmt="simple", disable_numparse=True,
                  maxcolwidths=[34, 40, 22, 30, 8]))
    html, md = job.done.get("report", (job.results / "report.html", job.results / "report.md"))
    r = job.results
    echo("")
    echo(f"main job (profile quick) done in {job.done['seconds'] / 60:.1f} minutes. Where everything went:")
    for path, what in ((html, "the report: every table and figure, the environment (open in a browser)"),
                       (md, "the same report in Markdown"),
                       (r / "tables", "tables (.md, .csv, .tex): headline, runs, gd_iteration, kernel_error_floor"),
                       (r / "figures", "figures (.png)"),
                       (r / "runs", "one record per training run (config, curve, metrics, environment)"),
                       (r / "checkpoints", "the trained weights"),
                       (r / "constructions", "the exact constructions (constructions.md, .json, gd_vs_newton.png)"),
                       (r / "kernels", "the kernel error floor (error_floor_<device>.json, .png)"),
                       (job.log_file, "what the cases printed")):
        echo(f"  {str(path):<38} {what}")


def run_pytest(profile: str, results: Path, pytest_args: list[str]) -> int:
    """The pytest-benchmark suite at `profile`, its precision cases tabulated, then the report."""
    bench_json = results / "benchmarks" / f"bench-{profile}.json"
    bench_json.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pytest", "bench", "--profile", profile, "--benchmark-json", str(bench_json),
           *pytest_args]
    print("running: " + " ".join(cmd[1:]), flush=True)
    code = subprocess.call(cmd)
    if bench_json.exists():
        from bench.reporting.tables import main as tables_main

        tables_main(["--results", str(results), "--only", "benchmarks", "--benchmark-json", str(bench_json)])
    from bench.reporting.report import write_report

    html, md = write_report(results, results)
    print(f"benchmark JSON: {bench_json}\nreport: {html} and {md}")
    return code


def parser() -> argparse.ArgumentParser:
    from bench.profiles import PROFILE_HELP

    p = argparse.ArgumentParser(prog="python -m bench main", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="profiles:\n" + "\n".join(
                                    textwrap.fill(text, 100, initial_indent=f"  {name:<7}", subsequent_indent=" " * 9)
                                    for name, text in PROFILE_HELP.items()) +
                                "\n\nOther arguments go to pytest (profiles smoke, ci, paper).")
    p.add_argument("--profile", choices=PROFILES, default="quick", help="what to run (below; default quick)")
    p.add_argument("--results", type=Path, help="results folder (default: results/quick for quick, else results)")
    p.add_argument("--force", action="store_true", help="quick: recompute every case, finished runs too")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                   help="quick: cases side by side, one torch thread each, in worker processes; the numbers are "
                        "those of --jobs 1 (default: the cores there are, %(default)s here)")
    p.add_argument("--dry-run", action="store_true",
                   help="print what would run, what is recorded and a time estimate; run nothing")
    p.add_argument("--list", action="store_true", help="with --dry-run: every run and benchmark, one a line")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args, rest = parser().parse_known_args(argv)
    results = args.results or (Path("results") / "quick" if args.profile == "quick" else Path("results"))
    if args.jobs < 1:
        parser().error(f"--jobs must be at least 1, got {args.jobs}")
    if args.dry_run:
        from bench.profiles import dry_run

        return dry_run(args.profile, results, every=args.list)
    if args.profile != "quick":
        return run_pytest(args.profile, results, rest)
    if rest:
        parser().error(f"unrecognized arguments for profile quick: {' '.join(rest)}")
    try:
        job = run_quick(results, force=args.force, jobs=args.jobs)
    except Interrupted as why:
        print(f"interrupted ({why}); run the same command again to resume", file=sys.stderr)
        return 130
    print_summary(job)
    failed = job.done.get("failed", [])
    if failed:
        print(f"{len(failed)} case(s) failed: {'; '.join(failed)} (see {job.log_file})", file=sys.stderr)
    return 1 if failed else 0
