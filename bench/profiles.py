"""What each profile of `python -m bench main` runs, and what it would cost: `--dry-run`.

    python -m bench main --profile ci --dry-run      # what would train, what is recorded, a time estimate

The estimate adds, for each thing the profile runs, the best of what the repository knows of its
time: a run's own record (its wall_time_s), where one exists; else a benchmark's measured time in
a committed pytest-benchmark JSON of the same profile (its rounds' total); else its cap (a run's
time_limit_s, a time-to-precision benchmark's budget: an upper bound); else nothing, and it is
counted as not estimated. Times are those of the machines that recorded them, summed as if one
process ran everything in turn.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

REPO_ROOT = Path(__file__).resolve().parent.parent

PROFILE_HELP = {
    "quick": "the main job: three training runs (MULTIPLY by the bare one-layer BaseConv and softmax attention, "
             "L-BFGS then 12 Levenberg-Marquardt steps; the GD step learned by the bare linear attention), the "
             "learned step iterated, the exact constructions, the conv kernels' error floor (L <= 512), tables, "
             "figures and the report; finished cases are not redone",
    "smoke": "pytest bench --profile smoke: 8 short precision runs (bench.grids.primitives('smoke')), the sharp "
             "constructions and the timing benchmarks at their smallest sizes",
    "ci": "pytest bench --profile ci: every grid at the ci budget (bench.grids.all_grids('ci')), each run trained "
          "again, the sharp constructions, time to precision (each recipe up to 5 minutes, the paper's model by each "
          "method up to 30 minutes) and the timing benchmarks at ci sizes",
    "paper": "pytest bench --profile paper: every grid at the paper budget (bench.grids.all_grids('paper')), time "
             "to precision with 4-hour budgets and the timing benchmarks at the paper's sizes (GPU-cluster scale)",
}


# what a case of the main job leaves that makes it skip its work the next time (bench.main)
OUTPUTS = {"constructions": "constructions/constructions.json", "kernels": "kernels/error_floor_*.json"}


@dataclass
class Item:
    """One thing a profile runs, and what is known of its time."""

    kind: str  # "training run" | "time-to-precision benchmark" | "timing benchmark" | "main job case"
    name: str
    group: str  # a grid's name, a test function, "main job"
    seconds: Optional[float] = None
    # record <hash> | timed <main.json> | benchmark JSON <file> | time cap | budget | reuses | not estimated
    source: str = "not estimated"
    recorded: bool = False  # quick: finished in the results folder, so not trained again
    steps: Optional[int] = None  # a training run's optimizer steps
    recorded_on: Optional[str] = None  # the device its record was made on


COMMITTED_MAIN_JOB_TIMING = REPO_ROOT / "results" / "benchmarks" / "main_job_cpu.json"


def records_by_hash(*folders: Path) -> dict:
    """Every readable record under each folder's runs/, by config hash (the first folder wins)."""
    from bench.reporting.frames import records_by_hash as readable_records

    found: dict = {}
    for folder in folders:
        for cfg_hash, record in readable_records(folder, log=lambda line: None).items():
            found.setdefault(cfg_hash, record)
    return found


def run_item(cfg, group: str, records: dict, kind: str = "training run") -> Item:
    item = Item(kind, cfg.label(), group, steps=cfg.steps)
    record = records.get(cfg.hash)
    if record is not None and record.finished:
        item.seconds, item.source = record.wall_time_s, f"record {cfg.hash}"
        item.recorded_on = str(record.environment.get("device", "?")).split(":")[0]
    elif cfg.time_limit_s is not None:
        item.seconds, item.source = cfg.time_limit_s, "time cap"
    return item


def quick_items(results: Path) -> list[Item]:
    """The main job's cases: its runs (recorded in `results`: skipped), and the other cases (their times
    from the last job's main.json in `results`, where there is one)."""
    from bench import main as main_job
    from bench.grids import quick
    from bench.harness.records import is_finished

    records = records_by_hash(results, REPO_ROOT / "results")
    # the last job in this folder, else the committed timing of a whole job on the CI-like CPU
    timed = next((f for f in (results / "main.json", COMMITTED_MAIN_JOB_TIMING) if f.exists()), None)
    timings = json.loads(timed.read_text()).get("cases", {}) if timed else {}
    items, runs = [], dict(zip(("baseconv", "attention", "gd_step"), quick()))
    for case in main_job.CASES:
        if case.key in runs:
            cfg = runs[case.key]
            item = run_item(cfg, "main job", records)
            item.recorded = is_finished(cfg, results)
        else:
            item = Item("main job case", case.title, "main job")
            item.recorded = any(results.glob(OUTPUTS[case.key])) if case.key in OUTPUTS else False
        if item.seconds is None and case.key in timings:
            item.seconds, item.source = timings[case.key], f"timed {timed}"
        items.append(item)
    return items


def collected_tests(profile: str) -> list[str]:
    """The test ids `pytest bench --profile P` runs (pytest's own collection)."""
    cmd = [sys.executable, "-m", "pytest", "--collect-only", "-q", "bench", "--profile", profile,
           "-p", "no:cacheprovider"]
    out = subprocess.run(cmd, cwd=REPO_ROOT, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"pytest cannot collect profile {profile}: " +
                           next((line for line in out.stdout.splitlines() if line.startswith("E ")), out.stdout[-300:]))
    return [line.split("::", 1)[1] for line in out.stdout.splitlines() if "::" in line]


def measured_benchmarks(profile: str) -> dict:
    """test name -> (seconds, file) from the committed pytest-benchmark JSONs of `profile` (the newest wins)."""
    found: dict = {}
    files = sorted((REPO_ROOT / "results").glob("benchmarks/*.json")) + sorted((REPO_ROOT / "results").glob("kernels/*.json"))
    for path in files:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if not isinstance(data, dict) or data.get("machine_info", {}).get("profile") != profile:
            continue
        for b in data.get("benchmarks", []):
            key = b["extra_info"].get("config_hash") if b["name"].startswith("test_precision[") else b["name"]
            if key and (key not in found or data.get("datetime", "") > found[key][2]):
                found[key] = (b["stats"]["total"], path.relative_to(REPO_ROOT), data.get("datetime", ""))
    return found


def pytest_items(profile: str, results: Path) -> list[Item]:
    from bench.benchmarks import test_bench_training as training
    from bench.benchmarks.test_precision import profile_cases
    from bench.grids.registry import RUN_ORDER, grid_budgets, grid_configs
    from bench.reporting.floors import case_id

    configs = iter(profile_cases(profile))  # in the order pytest parametrizes them (repeated ids get a suffix)
    grid_of = {}  # each run under the first grid that holds it, in the order all_grids takes them
    if profile != "smoke":
        for name in RUN_ORDER:
            if profile in grid_budgets(name):
                for c in grid_configs(name, profile):
                    grid_of.setdefault(c.hash, name)
    records, measured = records_by_hash(results, REPO_ROOT / "results"), measured_benchmarks(profile)
    budgets = {"test_time_to_precision": training.TTP_BUDGET_S, "test_time_to_precision_paper_model":
               training.PAPER_MODEL_BUDGET_S}
    items = []
    for test in collected_tests(profile):
        function, _, param = test.partition("[")
        if function == "test_precision":
            cfg = next(configs)
            assert param[:-1].startswith(case_id(cfg)), (param, case_id(cfg))
            item = run_item(cfg, grid_of.get(cfg.hash, "primitives (smoke)"), records)
            if item.source != "time cap" and item.seconds is None and cfg.hash in measured:
                item.seconds, item.source = measured[cfg.hash][0], f"benchmark JSON {measured[cfg.hash][1]}"
            items.append(item)
            continue
        kind = "time-to-precision benchmark" if function in budgets else "timing benchmark"
        if (function in budgets and profile not in budgets[function]) or skipped_here(function, param[:-1], profile):
            continue  # the test skips itself here (its own rule)
        item = Item(kind, test, function)
        if function == "test_baseconv_reaches_multiply_precision_attention_cannot":
            item.seconds, item.source = 0.0, "reuses"  # the smoke precision runs again, from the session's cache
        if test in measured:
            item.seconds, item.source = measured[test][0], f"benchmark JSON {measured[test][1]}"
        elif function in budgets and profile in budgets[function]:
            item.seconds, item.source = budgets[function][profile], "budget"
        items.append(item)
    return items


def skipped_here(function: str, param: str, profile: str) -> bool:
    """Whether a timing benchmark skips itself on this machine and profile, by the benchmark module's own rule."""
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if function in ("test_conv_fwd", "test_conv_fwdbwd"):
        from bench.benchmarks.test_bench_kernels import skip_reason

        shape, backend = param.split("-L")[0], param.rsplit("-", 1)[1]
        seq_len, channels = (int(x) for x in param.split("-L")[1].rsplit("-", 1)[0].split("-D"))
        return skip_reason(backend, shape, seq_len, channels, profile, device) is not None
    if function == "test_training_throughput":
        return param.endswith("triton") and device != "cuda"  # needs_device
    if function == "test_baseconv_reaches_multiply_precision_attention_cannot":
        return profile != "smoke"
    return False


def side_by_side(seconds: list[float], jobs: int) -> float:
    """The main job's wall time with `jobs` workers, if each case takes seconds[i]: its cases started as
    bench.main.run_quick starts them (the head of the longest chain first, a case once those it needs
    have ended), then the cases the job's own process runs."""
    from bench.main import CASES

    index = {c.key: i for i, c in enumerate(CASES)}
    pending = sorted((i for i, c in enumerate(CASES) if not c.in_driver), key=lambda i: (not CASES[i].start_first, i))
    free, ends = [0.0] * jobs, {}
    while pending:
        worker = min(range(jobs), key=lambda w: free[w])
        now = free[worker]
        ready = [i for i in pending if all(ends.get(index[k], float("inf")) <= now for k in CASES[i].needs)]
        if not ready:  # wait for the next case to end
            free[worker] = min(t for t in ends.values() if t > now)
            continue
        pending.remove(ready[0])
        ends[ready[0]] = free[worker] = now + seconds[ready[0]]
    return max(ends.values(), default=0.0) + sum(seconds[i] for i, c in enumerate(CASES) if c.in_driver)


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.1f} min"


def detail(source: str, items: list[Item]) -> str:
    """Where recorded times were made; how many steps the runs without an estimate take."""
    if source == "record":
        on = defaultdict(int)
        for i in items:
            on[i.recorded_on] += 1
        return " (recorded on " + ", ".join(f"{k} {v}" for k, v in sorted(on.items())) + ")"
    steps = [i.steps for i in items if i.steps is not None]
    if source == "none" and steps:
        return f" ({sum(steps):,} optimizer steps in all)"
    return ""


def summary_lines(items: list[Item], kind: str, retrained: bool) -> list[str]:
    """Counts and times of one kind of item, and one line per group."""
    mine = [i for i in items if i.kind == kind]
    if not mine:
        return []
    lines = [f"{len(mine)} {kind}{'s' if len(mine) != 1 else ''}:"]
    by_source = defaultdict(list)
    for i in mine:
        by_source[i.source.split()[0] if i.source != "not estimated" else "none"].append(i)
    names = {"record": "recorded (their records' wall time)", "benchmark": "measured (committed benchmark JSON)",
             "time": "not recorded, time-capped (their caps)", "budget": "not measured (their time budgets)",
             "timed": "timed by the last job in this results folder (main.json), else by the committed whole-job timing",
             "reuses": "reusing the training runs above (nothing of their own)",
             "none": "not estimated (no record, no measurement, no cap)"}
    for key in ("record", "timed", "benchmark", "time", "budget", "reuses", "none"):
        group = by_source.get(key, [])
        if group:
            total = sum(i.seconds for i in group if i.seconds is not None)
            lines.append(f"  {len(group):>4} {names[key]}" + (f": {hours(total)}" if key != "none" else "")
                         + detail(key, group))
    if not retrained:
        done = [i for i in mine if i.recorded]
        lines.append(f"  {len(done):>4} finished in the results folder: not trained again")
    groups = defaultdict(list)
    for i in mine:
        groups[i.group].append(i)
    if len(groups) > 1:
        for name, group in groups.items():
            known = [i.seconds for i in group if i.seconds is not None]
            lines.append(f"    {name:<58} {len(group):>4}   {hours(sum(known)):>9}"
                         + (f"  ({len(group) - len(known)} not estimated)" if len(known) < len(group) else ""))
    return lines


def dry_run(profile: str, results: Path, every: bool = False, echo=print) -> int:
    """Print what `python -m bench main --profile P` would run, what is recorded, and the time estimate."""
    quick = profile == "quick"
    items = quick_items(results) if quick else pytest_items(profile, results)
    how = (f"python -m bench main --results {results}" if quick else
           f"pytest bench --profile {profile} (every case trained again, in a temporary folder), then tables and report")
    echo(f"profile {profile}: {PROFILE_HELP[profile]}")
    echo(f"runs: {how}")
    for kind in ("training run", "main job case", "time-to-precision benchmark", "timing benchmark"):
        for line in summary_lines(items, kind, retrained=not quick):
            echo(line)
    todo = [i for i in items if not i.recorded]
    known = [i.seconds for i in todo if i.seconds is not None]
    unknown = len(todo) - len(known)
    parallel = ""
    if quick and not unknown:
        cores = os.cpu_count() or 1
        parallel = (f"; about {hours(side_by_side([0.0 if i.recorded else i.seconds for i in items], cores))} "
                    f"with --jobs {cores} (the default here)")
    echo(f"estimate: {hours(sum(known))} for {len(known)} of the {len(todo)} things to run, one after another"
         + (f"; {unknown} not estimated" if unknown else "") + parallel)
    echo("assumption: each takes what its record, committed benchmark or cap says (in that order), on the machine "
         "that recorded it, one after another; caps and budgets are upper bounds, evals and setup not counted"
         + ("; --jobs N runs the cases side by side" if quick else ""))
    if every or quick:
        echo("every item (time, source):")
        for i in items:
            when = "—" if i.seconds is None else f"{i.seconds:,.0f} s"
            state = "  [recorded: skipped]" if i.recorded else ""
            echo(f"  {when:>10}  {i.kind:<17} {i.name}  ({i.source}){state}")
    return 0
