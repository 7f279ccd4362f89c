"""Two benchmark runs side by side: per case the MSE ratio and the time ratio, regressions flagged.

    python -m bench compare results/benchmarks/precision-smoke.json new.json
    python -m bench compare old_results/ results/ --mse-threshold 3 --speed-threshold 1.5

A and B are both pytest-benchmark JSONs (as `pytest bench --benchmark-json` writes them) or both
results folders (their runs/*.json records). Cases are matched by the benchmark's full name, or
by a record's config hash under the current code (bench.reporting.frames.records_by_hash). Per case:

    MSE    eval_mse of B / A   (benchmark: extra_info["eval_mse"]; record: the final eval MSE)
    time   time of B / A       (benchmark: stats mean, seconds; record: train time per step)

A case regresses if B's MSE is more than --mse-threshold times A's, if B takes more than
--speed-threshold times A's time, or if A finished ok and B did not (diverged, failed, no MSE).
Cases present on one side only are listed, and are not regressions.

Exit status: 0 no regression, 1 at least one regression flagged, 2 invalid input.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from tabulate import tabulate


class CompareError(ValueError):
    """An input that cannot be compared; the message says which and why."""


@dataclass
class Case:
    key: str
    label: str
    status: Optional[str]
    mse: Optional[float]
    time_s: Optional[float]


@dataclass
class Row:
    a: Case
    b: Case
    mse_ratio: Optional[float]
    time_ratio: Optional[float]
    regressions: list[str]


def _number(x) -> Optional[float]:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(x) else None


def benchmark_cases(path: Path) -> dict[str, Case]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise CompareError(f"{path}: not a readable benchmark JSON ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise CompareError(f"{path}: not a pytest-benchmark JSON (no 'benchmarks' list)")
    cases = {}
    for b in data["benchmarks"]:
        info = b.get("extra_info") or {}
        key = b.get("fullname") or b.get("name")
        cases[key] = Case(key, b.get("name") or key, info.get("status"), _number(info.get("eval_mse")),
                          _number((b.get("stats") or {}).get("mean")))
    return cases


def record_cases(folder: Path) -> dict[str, Case]:
    from bench.reporting.floors import case_id
    from bench.reporting.frames import records_by_hash

    if not (folder / "runs").is_dir():
        raise CompareError(f"{folder}: not a results folder (it has no runs/ folder of run records)")
    cases = {}
    for h, r in records_by_hash(folder, log=lambda m: print(m, file=sys.stderr)).items():
        per_step = r.train_time_s / r.steps_done if r.steps_done and r.train_time_s > 0 else None
        cases[h] = Case(h, f"{h}  {case_id(r.config)}/seed{r.config.seed}", r.status, _number(r.eval_mse), per_step)
    return cases


def load_side(path: str | Path) -> tuple[str, dict[str, Case]]:
    """('benchmark JSON' | 'results folder', {key: Case})."""
    path = Path(path)
    if path.is_dir():
        return "results folder", record_cases(path)
    if path.is_file():
        return "benchmark JSON", benchmark_cases(path)
    raise CompareError(f"{path}: no such file or folder")


def ratio(b: Optional[float], a: Optional[float]) -> Optional[float]:
    """b / a; an exact 0 on both sides is 1, a 0 that became positive is infinitely worse."""
    if a is None or b is None:
        return None
    if a == 0:
        return 1.0 if b == 0 else math.inf
    return b / a


def compare_cases(a: Case, b: Case, mse_threshold: float, speed_threshold: float) -> Row:
    mse_ratio, time_ratio = ratio(b.mse, a.mse), ratio(b.time_s, a.time_s)
    regressions = []
    if a.status in ("ok", None) and a.mse is not None and b.mse is None:
        regressions.append(f"{b.status} (no MSE)" if b.status not in ("ok", None) else "no MSE")
    elif a.status == "ok" and b.status not in ("ok", None):
        regressions.append(b.status)
    if mse_ratio is not None and mse_ratio > mse_threshold:
        regressions.append(f"MSE {mse_ratio:.3g}x worse")
    if time_ratio is not None and time_ratio > speed_threshold:
        regressions.append(f"{time_ratio:.3g}x slower")
    return Row(a, b, mse_ratio, time_ratio, regressions)


def compare(a: dict[str, Case], b: dict[str, Case], mse_threshold: float = 10.0,
            speed_threshold: float = 1.25) -> tuple[list[Row], list[Case], list[Case]]:
    """Rows of the cases on both sides (by label), then the cases only in A and only in B."""
    rows = [compare_cases(a[k], b[k], mse_threshold, speed_threshold) for k in a if k in b]
    rows.sort(key=lambda r: r.a.label)
    only_a = sorted((c for k, c in a.items() if k not in b), key=lambda c: c.label)
    only_b = sorted((c for k, c in b.items() if k not in a), key=lambda c: c.label)
    return rows, only_a, only_b


def _fmt(x: Optional[float], spec: str) -> str:
    if x is None:
        return "—"
    return "inf" if math.isinf(x) else format(x, spec)


def _status(a: Case, b: Case) -> str:
    if a.status == b.status:
        return a.status or ""
    return f"{a.status} -> {b.status}"


def table(rows: list[Row], time_unit: str) -> str:
    body = [[r.a.label, _status(r.a, r.b), _fmt(r.a.mse, ".2e"), _fmt(r.b.mse, ".2e"), _fmt(r.mse_ratio, ".3g"),
             _fmt(r.a.time_s, ".3g"), _fmt(r.b.time_s, ".3g"), _fmt(r.time_ratio, ".3g"),
             "; ".join(r.regressions)] for r in rows]
    headers = ["case", "status", "MSE A", "MSE B", "MSE B/A", f"{time_unit} A", f"{time_unit} B", "time B/A",
               "regression"]
    return tabulate(body, headers=headers, disable_numparse=True)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench compare",
                                description="Compare two pytest-benchmark JSONs, or two results folders, case by "
                                            "case. Exit status: 0 no regression, 1 a regression was flagged, "
                                            "2 invalid input.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("a", type=Path, help="the baseline: a benchmark JSON or a results folder")
    p.add_argument("b", type=Path, help="the one to check, of the same kind as A")
    p.add_argument("--mse-threshold", type=float, default=10.0,
                   help="flag a case whose MSE in B is more than this many times A's")
    p.add_argument("--speed-threshold", type=float, default=1.25,
                   help="flag a case whose time in B is more than this many times A's (1.25: 25%% slower)")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = parser().parse_args(argv)
    try:
        for name in ("mse_threshold", "speed_threshold"):
            value = getattr(args, name)
            if not (math.isfinite(value) and value >= 1):
                raise CompareError(f"--{name.replace('_', '-')} is a ratio B/A that flags B as worse, so it must "
                                   f"be >= 1, got {value:g}")
        kind_a, a = load_side(args.a)
        kind_b, b = load_side(args.b)
        if kind_a != kind_b:
            raise CompareError(f"A ({args.a}) is a {kind_a} and B ({args.b}) a {kind_b}: compare two of a kind")
    except CompareError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    rows, only_a, only_b = compare(a, b, args.mse_threshold, args.speed_threshold)
    time_unit = "s/step" if kind_a == "results folder" else "mean s"
    print(f"A: {args.a} ({kind_a}, {len(a)} cases)\nB: {args.b} ({kind_b}, {len(b)} cases)")
    print(f"flagged: MSE B/A > {args.mse_threshold:g}, time B/A > {args.speed_threshold:g}, or A ok and B not\n")
    if rows:
        print(table(rows, time_unit))
    for side, cases in (("A", only_a), ("B", only_b)):
        if cases:
            print(f"\nonly in {side} ({len(cases)}):")
            print("\n".join(f"  {c.label}" for c in cases))
    flagged = [r for r in rows if r.regressions]
    print(f"\n{len(rows)} cases compared, {len(flagged)} regressions, {len(only_a)} only in A, {len(only_b)} only in B")
    return 1 if flagged else 0
