"""Precision floors: the MSE each smoke case must reach, and the CI gate that checks it.

    pytest bench/benchmarks/test_precision.py --profile smoke --benchmark-json out.json
    python -m bench floors --check out.json       # exit 1 with a table if a case got worse or is missing
    python -m bench floors --update out.json      # rewrite results/floors.json from a measured run

results/floors.json holds, per case id (`case_id`, stable across code changes that do not
change what a case trains), the MSE the case must reach:

    floor_mse = measured_mse * margin          (margin: per case, `case_margin`)

`measured_mse` is a real measurement (the --update run); `margin` covers run-to-run noise.
Training is bit-reproducible for one config on one machine and thread count, but a
different CPU, BLAS or thread count rounds differently, and a short training run amplifies
that like a change of seed. So a trained case's margin is sized from its own measured spread
across seeds and thread counts (kept under 'spread'); the sharp cases (bench/benchmarks/sharp.py: exact
constructions, no training) get tight ones. MARGIN_RULE says how, in the file too.

A case fails the gate if its MSE is above its floor, if it diverged (no MSE), or if it is
missing from the run. A case without a floor is reported, and does not fail.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from bench.harness.config import RunConfig

FLOORS_PATH = Path("results/floors.json")
MARGIN = 20.0  # a trained case without a measured spread (twice the largest spread measured, 9.5x)
MARGIN_RULE = (
    "Per case. A trained case: margin = 2r - 1, where r is the max/min ratio of the case's final eval MSE over "
    "seeds 0-3 (1 thread) and 1 vs 2 threads (seed 0), measured by python -m bench floors --measure-spread and "
    "kept under 'spread': the floor allows the measured spread twice over (a different CPU or BLAS perturbs a "
    "short training run like a change of seed; 2 threads instead of 1 moved a case by at most 0.15%). A trained "
    "case without a measured spread: 20. A sharp case (bench/benchmarks/sharp.py: an exact construction, no training, "
    "identical on 1 and 2 threads): 1 if bit-exact, 2 for a float32 level. An untrained model fails every "
    "case (tests/test_floors.py)."
)
# Model parameters that every case of a grid sets; they name the budget, not the case.
_BUDGET_PARAMS = ("width", "heads", "depth", "seed")


def case_id(cfg: RunConfig) -> str:
    """A readable, stable name of what a case trains, e.g.
    'multiply/baseconv/depth1/conv_kind=long,prenorm=False/adam/float32'."""
    def params(d: dict, skip=()) -> str:
        return ",".join(f"{k}={d[k]}" for k in sorted(d) if k not in skip)

    task = cfg.task.name + (f"[{params(cfg.task.params)}]" if cfg.task.params else "")
    extra = params(cfg.model.params, _BUDGET_PARAMS)
    depth = cfg.model.params.get("depth")
    parts = [task, cfg.model.name] + ([f"depth{depth}"] if depth is not None else []) + ([extra] if extra else [])
    return "/".join(parts + [cfg.optimizer.name, cfg.dtype])


# ---- benchmark JSON ---------------------------------------------------------------


def read_cases(path: str | Path) -> tuple[dict[str, dict], dict]:
    """{case_id: extra_info} of the precision cases in a pytest-benchmark JSON, and its machine_info."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise SystemExit(f"error: cannot read benchmark JSON {str(path)!r}: {err}")
    cases = {}
    for bench in data.get("benchmarks", []):
        info = bench.get("extra_info") or {}
        if "case_id" in info:
            cases[info["case_id"]] = info
    return cases, data.get("machine_info", {})


def _finite(x) -> Optional[float]:
    return float(x) if isinstance(x, (int, float)) and math.isfinite(x) else None


# ---- the check --------------------------------------------------------------------


@dataclass
class Verdict:
    case: str
    outcome: str  # ok | worse | diverged | missing | no floor
    measured: Optional[float]
    floor: Optional[float]
    note: str = ""

    @property
    def failed(self) -> bool:
        return self.outcome in ("worse", "diverged", "missing")


def check(floors: dict, measured: dict[str, dict]) -> list[Verdict]:
    """One verdict per case in the floors file, and one per measured case that has none."""
    verdicts = []
    for case, entry in floors["cases"].items():
        floor = entry["floor_mse"]
        info = measured.get(case)
        if info is None:
            verdicts.append(Verdict(case, "missing", None, floor, "not in the benchmark run"))
            continue
        mse = _finite(info.get("eval_mse"))
        note = ""
        if info.get("config_hash") and entry.get("config_hash") and info["config_hash"] != entry["config_hash"]:
            note = f"config changed ({entry['config_hash']} -> {info['config_hash']}); consider --update"
        if info.get("status") != "ok" or mse is None:
            verdicts.append(Verdict(case, "diverged", mse, floor, f"status {info.get('status')!r}"))
        elif mse > floor:
            verdicts.append(Verdict(case, "worse", mse, floor, f"{mse / floor:.3g}x its floor. {note}".strip()))
        else:
            verdicts.append(Verdict(case, "ok", mse, floor, note))
    for case in sorted(set(measured) - set(floors["cases"])):
        verdicts.append(Verdict(case, "no floor", _finite(measured[case].get("eval_mse")), None,
                                "new case; python -m bench floors --update to give it one"))
    return verdicts


def verdict_table(verdicts: list[Verdict]) -> str:
    import pandas as pd

    def fmt(x):
        return "—" if x is None else f"{x:.3e}"

    df = pd.DataFrame([{"case": v.case, "outcome": v.outcome, "eval MSE": fmt(v.measured), "floor": fmt(v.floor),
                        "note": v.note} for v in verdicts])
    return df.to_markdown(index=False, disable_numparse=True)


# ---- update -----------------------------------------------------------------------


def case_margin(case: str, info: dict, spread: Optional[dict]) -> tuple[float, str]:
    """The margin of one case and where it comes from (MARGIN_RULE)."""
    from bench.benchmarks.sharp import MARGINS

    if info.get("kind") in MARGINS:
        return MARGINS[info["kind"]], f"sharp case ({info['kind']})"
    ratio = ((spread or {}).get(case) or {}).get("ratio")
    if ratio:
        return 2 * ratio - 1, f"2r - 1, measured spread r = {ratio:.4g}"
    return MARGIN, "default: no measured spread"


def make_floors(measured: dict[str, dict], machine: dict, *, margin: Optional[float] = None,
                spread: Optional[dict] = None, source: str = "") -> dict:
    """The floors file for a measured run: floor = measured MSE x the case's margin for every finished
    case (`margin`: one margin for every case instead)."""
    bad = [c for c, info in measured.items() if info.get("status") != "ok" or _finite(info.get("eval_mse")) is None]
    if bad:
        raise SystemExit(f"error: cannot set floors from a run whose cases did not finish: {', '.join(bad)}")
    if not measured:
        raise SystemExit("error: the benchmark JSON has no precision cases (extra_info.case_id); "
                         "run pytest bench/benchmarks/test_precision.py --profile smoke --benchmark-json OUT.json")
    margins = {case: (margin, "--margin") if margin is not None else case_margin(case, info, spread)
               for case, info in measured.items()}
    return {
        "profile": next(iter(measured.values())).get("profile", machine.get("profile")),
        "margin_rule": MARGIN_RULE if margin is None else f"one margin for every case: {margin:g} (--margin)",
        "spread": spread or {},
        "measured_on": {k: machine.get(k) for k in ("cpu", "machine", "torch", "torch_threads", "python_version")
                        if k in machine} | {"date": _dt.date.today().isoformat(), "source": source},
        "cases": {case: {"floor_mse": info["eval_mse"] * margins[case][0], "measured_mse": info["eval_mse"],
                         "margin": margins[case][0], "margin_from": margins[case][1],
                         "config_hash": info.get("config_hash"), "budget": info.get("budget")}
                  for case, info in sorted(measured.items())},
    }


def load_floors(path: str | Path = FLOORS_PATH) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise SystemExit(f"error: no floors file at {str(path)!r}; create it with python -m bench floors --update OUT.json")


def write_floors(floors: dict, path: str | Path = FLOORS_PATH) -> None:
    from bench.harness.records import atomic_write_text

    atomic_write_text(path, json.dumps(floors, indent=1, sort_keys=False) + "\n")


# ---- the margin -------------------------------------------------------------------


def measure_spread(configs: list[RunConfig], seeds=(0, 1, 2, 3), results_dir: Optional[str | Path] = None) -> dict:
    """Train each case at every seed (1 thread) and at seed 0 with 2 threads; per case the MSEs
    and the ratio max/min, the run-to-run noise the margin must cover."""
    import tempfile

    import torch

    from bench.grids import with_fields
    from bench.harness.train import run

    folder = Path(results_dir or tempfile.mkdtemp(prefix="precision-spread-"))
    before = torch.get_num_threads()
    out = {}
    try:
        for cfg in configs:
            by_seed = {}
            for seed in seeds:
                torch.set_num_threads(1)
                r = run(with_fields(cfg, seed=seed), folder, force=True, progress=False)
                by_seed[seed] = r.eval_mse
            torch.set_num_threads(2)
            two = run(cfg, folder / "threads2", force=True, progress=False).eval_mse
            values = [v for v in [*by_seed.values(), two] if v is not None]
            out[case_id(cfg)] = {"mse_by_seed": by_seed, "mse_seed0_2_threads": two,
                                 "ratio": max(values) / min(values) if values and min(values) > 0 else None}
    finally:
        torch.set_num_threads(before)
    return out


# ---- command line -----------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench floors",
                                description="Check a smoke benchmark run against the precision floors, or set them.")
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--check", type=Path, metavar="OUT.json", help="pytest-benchmark JSON of the smoke profile")
    mode.add_argument("--update", type=Path, metavar="OUT.json", help="rewrite the floors from this measured run")
    mode.add_argument("--measure-spread", type=Path, metavar="SPREAD.json",
                      help="train every smoke case at seeds 0-3 and with 2 threads; write the MSE spread here")
    p.add_argument("--only", metavar="TEXT", help="with --measure-spread: only the cases whose id contains TEXT, "
                                                 "merged into an existing SPREAD.json")
    p.add_argument("--floors", type=Path, default=FLOORS_PATH, help="the floors file")
    p.add_argument("--margin", type=float, default=None,
                   help="with --update: one margin for every case (default: per case, see MARGIN_RULE)")
    p.add_argument("--spread", type=Path, metavar="SPREAD.json",
                   help="with --update: a JSON of measured spread ({case: max/min ratio, ...}) to keep in the file")
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = parser().parse_args(argv)
    if args.measure_spread is not None:
        from bench.grids import primitives

        configs = [c for c in primitives("smoke") if args.only is None or args.only in case_id(c)]
        spread = json.loads(args.measure_spread.read_text()) if args.only and args.measure_spread.exists() else {}
        spread.update(measure_spread(configs))
        args.measure_spread.write_text(json.dumps(spread, indent=1) + "\n")
        worst = max((v["ratio"] for v in spread.values() if v["ratio"]), default=None)
        print(f"wrote {args.measure_spread}; largest max/min ratio over seeds and threads: {worst}")
        return 0
    if args.check is not None:
        floors = load_floors(args.floors)
        measured, _ = read_cases(args.check)
        verdicts = check(floors, measured)
        failed = [v for v in verdicts if v.failed]
        print(verdict_table(verdicts))
        if failed:
            print(f"\nprecision gate: FAILED, {len(failed)} of {len(floors['cases'])} cases worse than their floor, "
                  f"diverged or missing (floor = measured MSE x the case's margin; {args.floors})", file=sys.stderr)
            return 1
        print(f"\nprecision gate: ok, {len(floors['cases'])} cases at or below their floor "
              f"(floor = measured MSE x the case's margin)")
        return 0
    measured, machine = read_cases(args.update)
    previous = json.loads(args.floors.read_text()) if args.floors.exists() else {}
    spread = json.loads(args.spread.read_text()) if args.spread else previous.get("spread")
    floors = make_floors(measured, machine, margin=args.margin, spread=spread, source=str(args.update))
    write_floors(floors, args.floors)
    print(f"wrote {len(floors['cases'])} floors (measured MSE x each case's margin) to {args.floors}")
    return 0
