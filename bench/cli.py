"""Command line: python -m bench main | run | sweep | tables | report | floors  (each has --help).

    python -m bench main                                      # the main job: minutes, then the report
    python -m bench report --results results                  # results/report.html and report.md

    python -m bench run --task multiply --model baseconv --model-param depth=2 \\
        --optimizer adam --optim-param eps=1e-16 --lr 1e-3 --schedule step \\
        --schedule-param every=10000 --steps 100 --batch-size 256
    python -m bench run --config run.json --steps 500        # flags override the file
    python -m bench run ... --print-config                    # show the JSON and hash, train nothing
    python -m bench sweep bench.grids:primitives_paper --workers 2
    python -m bench sweep mygrids:lr_grid --executor ray

Exit status: 0 finished (ok or diverged: both are results), 2 invalid input,
130 interrupted (checkpointed; rerun the same command to resume).
"""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from pathlib import Path
from typing import Any, Optional

SUBCOMMANDS = ("main", "run", "sweep", "tables", "report", "floors")


def parse_value(text: str) -> Any:
    """'3' -> 3, '1e-3' -> 0.001, 'true' -> True, 'null' -> None, '[1,2]' -> [1, 2], else the string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def parse_params(items: Optional[list[str]], flag: str) -> dict[str, Any]:
    params = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"error: {flag} takes KEY=VALUE, got {item!r}")
        params[key.strip()] = parse_value(value.strip())
    return params


# RunConfig fields with their own flags above (--task/--model NAME with --*-param K=V, ...); every
# other field gets --field-name VALUE, and --set reaches any of them, nested ones included.
NESTED_FIELDS = ("task", "model", "optimizer", "schedule", "polish")
FIELD_HELP = {
    "steps": "optimizer steps", "batch_size": "minibatch size", "dtype": "float32 | float64",
    "device": "cpu | cuda | cuda:N", "seed": "seed of data streams and initialisation",
    "eval_size": "held-out samples", "eval_every": "steps between evals",
    "checkpoint_every": "steps between checkpoints", "ema_lambda": "gradient filter g + lambda * EMA(g)",
    "ema_decay": "EMA decay", "grad_clip": "clip the total gradient norm",
    "skip_grad_norm": "skip steps whose gradient norm exceeds this",
    "max_consecutive_skips": "this many skipped steps in a row = diverged",
    "polish_patience": "evals without a 5%% gain before the polish optimizer takes over",
}


def set_path(data: dict, item: str) -> None:
    """Apply one --set FIELD.SUB=VALUE to the config dict `data`."""
    key, sep, value = item.partition("=")
    path = [k.strip() for k in key.split(".")]
    if not sep or not all(path):
        raise SystemExit(f"error: --set takes FIELD.SUB=VALUE (e.g. polish.name=lbfgs), got {item!r}")
    node = data
    for k in path[:-1]:
        if not isinstance(node.get(k), dict):
            node[k] = {}
        node = node[k]
    node[path[-1]] = parse_value(value.strip())


def run_parser(prog: str = "python -m bench run") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description="Train one run (or return its finished record).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--config", type=Path, help="a RunConfig as JSON; the flags below override its fields")
    g = p.add_argument_group("what to train")
    g.add_argument("--task", help="task name (primitives.TASKS), e.g. multiply")
    g.add_argument("--task-param", action="append", metavar="K=V", help="task parameter (repeatable)")
    g.add_argument("--model", help="model name (architectures.MODELS), e.g. baseconv")
    g.add_argument("--model-param", action="append", metavar="K=V", help="model parameter (repeatable)")
    g = p.add_argument_group("how to train")
    g.add_argument("--optimizer", help="adam | adamw | sgd | lbfgs | levenberg_marquardt | gauss_newton")
    g.add_argument("--optim-param", action="append", metavar="K=V",
                   help="optimizer parameter, e.g. eps=1e-16, momentum=0.9 (repeatable)")
    g.add_argument("--lr", type=float, help="learning rate")
    g.add_argument("--schedule", help="constant | step | adaptive")
    g.add_argument("--schedule-param", action="append", metavar="K=V", help="e.g. gamma=0.9 every=10000")
    from .config import RunConfig

    for name in RunConfig.model_fields:  # one flag per plain field of RunConfig, derived, not listed
        if name not in NESTED_FIELDS:
            g.add_argument("--" + name.replace("_", "-"), dest=name, type=parse_value, metavar="VALUE",
                           help=FIELD_HELP.get(name, f"RunConfig.{name}"))
    g.add_argument("--set", action="append", metavar="FIELD.SUB=VALUE", default=[],
                   help="set any field of RunConfig, nested ones included, e.g. --set polish.name=lbfgs "
                        "--set polish.train_size=512 --set model.params.depth=2 (repeatable; applied last)")
    g = p.add_argument_group("output")
    g.add_argument("--results", type=Path, default=Path("results"), help="results folder")
    g.add_argument("--force", action="store_true", help="retrain even if a finished record exists")
    g.add_argument("--print-config", action="store_true", help="print the config JSON and hash; train nothing")
    g.add_argument("--progress", choices=("auto", "on", "off"), default="auto", help="tqdm bar on stderr")
    return p


def config_from_args(args: argparse.Namespace):
    from .config import RunConfigError, make_run_config

    data: dict[str, Any] = {}
    if args.config:
        try:
            data = json.loads(args.config.read_text())
        except (OSError, ValueError) as err:
            raise RunConfigError(f"--config {str(args.config)!r}: {err}")
        data.pop("config_hash", None)

    def named(key: str, name: Optional[str]) -> dict:
        spec = dict(data.get(key) or {})
        if name is not None and name != spec.get("name"):
            spec = {"name": name}  # a different optimizer/schedule: the file's parameters do not apply
        return spec

    for key, name, items, flag in (("task", args.task, args.task_param, "--task-param"),
                                   ("model", args.model, args.model_param, "--model-param")):
        spec = named(key, name)
        params = parse_params(items, flag)
        if params:
            spec["params"] = {**spec.get("params", {}), **params}
        if spec:
            data[key] = spec
    for key, name, items, flag, default in (("optimizer", args.optimizer, args.optim_param, "--optim-param", "adam"),
                                            ("schedule", args.schedule, args.schedule_param, "--schedule-param",
                                             "constant")):
        spec = {**named(key, name), **parse_params(items, flag)}
        if key == "optimizer" and args.lr is not None:
            spec["lr"] = args.lr
        if spec:
            spec.setdefault("name", default)
            data[key] = spec
    from .config import RunConfig

    for field in RunConfig.model_fields:
        value = getattr(args, field, None) if field not in NESTED_FIELDS else None
        if value is not None:
            data[field] = value
    for item in args.set:
        set_path(data, item)
    for needed in ("task", "model"):
        if needed not in data:
            raise RunConfigError(f"{needed}: missing; give --{needed} NAME or a --config file with a {needed!r} entry")
    return make_run_config(**data)


def cmd_run(argv: list[str]) -> int:
    args = run_parser().parse_args(argv)
    from .config import RunConfigError
    from .records import ResultsDirError, record_path

    try:
        cfg = config_from_args(args)
    except RunConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.print_config:
        print(json.dumps({"config_hash": cfg.hash, **cfg.model_dump(mode="json")}, indent=1))
        return 0
    from .train import run

    progress = {"auto": None, "on": True, "off": False}[args.progress]
    try:
        result = run(cfg, args.results, force=args.force, progress=progress)
    except (ResultsDirError, RunConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    summary = {
        "config_hash": result.config_hash, "status": result.status, "message": result.message,
        "steps_done": result.steps_done, "eval_mse": result.eval_mse, "floor": result.floor,
        "best_eval_mse": result.best_eval_mse, "steps_per_s": result.steps_per_s,
        "wall_time_s": round(result.wall_time_s, 3), "record": str(record_path(cfg, args.results)),
    }
    print(json.dumps(summary))
    return 130 if result.status == "interrupted" else 0


def sweep_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench sweep",
                                description="Run a grid (a Python list of RunConfig), skipping finished runs.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("grid", help="MODULE:NAME, a list of RunConfig or a function returning one "
                                "(e.g. bench.grids:primitives_paper)")
    p.add_argument("--executor", choices=("local", "ray"), default="local",
                   help="local process pool, or Ray (RAY_ADDRESS, else a local Ray instance)")
    p.add_argument("--workers", type=int, default=1, help="local processes at once")
    p.add_argument("--threads-per-run", type=int, help="torch threads per run (default: cores / workers)")
    p.add_argument("--cpus-per-run", type=float, default=1.0, help="Ray: CPUs reserved per run")
    p.add_argument("--gpus-per-run", type=float, default=0.0, help="Ray: GPUs reserved per run")
    p.add_argument("--results", type=Path, default=Path("results"), help="results folder")
    p.add_argument("--force", action="store_true", help="retrain finished runs too")
    p.add_argument("--dry-run", action="store_true", help="list the runs and whether they are done; train nothing")
    return p


def cmd_sweep(argv: list[str]) -> int:
    args = sweep_parser().parse_args(argv)
    from .config import RunConfigError
    from .records import ResultsDirError, is_finished
    from .sweep import resolve_grid, run_sweep

    try:
        configs = resolve_grid(args.grid)
    except (ImportError, ValueError, RunConfigError) as err:
        print(f"error: {args.grid}: {err}", file=sys.stderr)
        return 2
    if args.dry_run:
        for c in configs:
            print(f"{c.hash}  {'done' if is_finished(c, args.results) else 'todo':<4}  {c.label()}")
        return 0
    try:
        outcomes = run_sweep(configs, args.results, workers=args.workers, executor=args.executor, force=args.force,
                             threads_per_run=args.threads_per_run, cpus_per_run=args.cpus_per_run,
                             gpus_per_run=args.gpus_per_run, echo=True)
    except (ResultsDirError, RunConfigError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.status] = counts.get(o.status, 0) + 1
        if o.error:
            print(f"--- {o.config_hash} {o.label} failed:\n{o.error}", file=sys.stderr)
    print("sweep: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    return 1 if counts.get("error") else 0


def dispatch(module_name: str, argv: list[str]) -> int:
    """main / tables / report / floors live in bench.<name> with a main(argv) each."""
    try:
        module = importlib.import_module(f"bench.{module_name}")
    except ModuleNotFoundError as err:
        if err.name != f"bench.{module_name}":
            raise
        print(f"error: 'python -m bench {module_name}' needs bench/{module_name}.py, which is not in this "
              f"checkout yet", file=sys.stderr)
        return 2
    code = module.main(argv)
    return int(code or 0)


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # warnings of the harness (a bad file set aside, a run another process holds): one line each
    logging.basicConfig(format="%(levelname)s: %(message)s", level=logging.WARNING)
    top = argparse.ArgumentParser(prog="python -m bench", description="precision-bench harness.")
    sub = top.add_subparsers(dest="command", metavar="{" + ",".join(SUBCOMMANDS) + "}")
    sub.add_parser("main", help="the main job: the suite's question in minutes, then the report (bench/main.py)",
                   add_help=False)
    sub.add_parser("run", help="train one run", add_help=False)
    sub.add_parser("sweep", help="run a grid of runs", add_help=False)
    sub.add_parser("tables", help="tables and figures from results/ (bench/tables.py)", add_help=False)
    sub.add_parser("report", help="one self-contained HTML page and a Markdown twin of a results folder "
                   "(bench/report.py)", add_help=False)
    sub.add_parser("floors", help="precision floors (bench/floors.py)", add_help=False)
    if not argv or argv[0] not in SUBCOMMANDS:
        top.parse_args(argv or ["--help"])
        return 2
    command, rest = argv[0], argv[1:]
    if command == "run":
        return cmd_run(rest)
    if command == "sweep":
        return cmd_sweep(rest)
    return dispatch(command, rest)
