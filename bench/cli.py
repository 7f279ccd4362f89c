"""Command line: python -m bench SUBCOMMAND (`python -m bench --help` lists them; each has its own --help).

    python -m bench main                                      # the main job: minutes, then the report
    python -m bench report --results results                  # results/report.html and report.md

    python -m bench run --task multiply --model baseconv --model-param depth=2 \\
        --optimizer adam --optim-param eps=1e-16 --lr 1e-3 --schedule step \\
        --schedule-param every=10000 --steps 100 --batch-size 256
    python -m bench run --config run.json --steps 500        # flags override the file
    python -m bench run ... --print-config                    # show the JSON and hash, train nothing
    python -m bench sweep bench.grids:primitives_paper --workers 2
    python -m bench sweep mygrids:lr_grid --executor ray
    python -m bench sweep bench.grids:primitives_ci --model mymixer:MyMixer   # your own mixer, every run
    python -m bench sweep mygrids:lr_grid --executor submitit --slurm-partition gpu --gpus-per-run 1
    python -m bench compare old.json new.json                 # two benchmark JSONs or two results folders

Exit status: 0 finished (ok or diverged: both are results), 1 a run failed (run, sweep: its record
says why) or a regression was flagged (compare), 2 invalid input, 130 interrupted (checkpointed;
rerun the same command to resume).
"""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from pathlib import Path
from typing import Any, Optional



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
    g.add_argument("--task", help="task name (primitives.TASKS), e.g. multiply, or your own task class as "
                                  "package.module:Class (on PYTHONPATH; docs/plugins.md)")
    g.add_argument("--task-param", action="append", metavar="K=V", help="task parameter (repeatable)")
    g.add_argument("--model", help="model name (architectures.MODELS), e.g. baseconv, or your own mixer class "
                                   "as package.module:Class (on PYTHONPATH)")
    g.add_argument("--model-param", action="append", metavar="K=V", help="model parameter (repeatable)")
    g = p.add_argument_group("how to train")
    g.add_argument("--optimizer", help="adam | adamw | sgd | lbfgs | levenberg_marquardt | gauss_newton")
    g.add_argument("--optim-param", action="append", metavar="K=V",
                   help="optimizer parameter, e.g. eps=1e-16, momentum=0.9 (repeatable)")
    g.add_argument("--lr", type=float, help="learning rate")
    g.add_argument("--schedule", help="constant | step | adaptive")
    g.add_argument("--schedule-param", action="append", metavar="K=V", help="e.g. gamma=0.9 every=10000")
    from bench.harness.config import RunConfig

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
    from bench.harness.config import RunConfigError, make_run_config

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
    from bench.harness.config import RunConfig

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
    from bench.harness.config import RunConfigError
    from bench.harness.records import ResultsDirError, record_path

    try:
        cfg = config_from_args(args)
    except RunConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.print_config:
        print(json.dumps({"config_hash": cfg.hash, **cfg.model_dump(mode="json")}, indent=1))
        return 0
    from bench.harness.train import run

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
                                description="Run a grid (a Python list of RunConfig), skipping finished runs. "
                                            "Exit status: 0 every run finished (ok or diverged), 1 a run failed "
                                            "(its record says why), 2 invalid input, 130 interrupted (rerun to resume).",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("grid", help="MODULE:NAME, a list of RunConfig or a function returning one "
                                "(e.g. bench.grids:primitives_paper)")
    p.add_argument("--executor", choices=("local", "ray", "submitit"), default="local",
                   help="local processes; Ray (RAY_ADDRESS, else a local Ray instance); submitit: a Slurm job "
                        "array where sbatch is on PATH, else submitit's local processes")
    p.add_argument("--workers", type=int, help="runs at once: local processes, submitit's local jobs, or the Slurm "
                                               "array's parallelism when not given: 1 on this machine, no limit on Slurm")
    p.add_argument("--threads-per-run", type=int, help="torch threads per run (when not given: cores / workers locally, "
                                                       "else --cpus-per-run)")
    p.add_argument("--cpus-per-run", type=float, default=1.0, help="Ray / Slurm: CPUs reserved per run")
    p.add_argument("--gpus-per-run", type=float, default=0.0, help="Ray / Slurm: GPUs reserved per run")
    g = p.add_argument_group("Slurm (--executor submitit with sbatch on PATH)")
    g.add_argument("--slurm-partition", help="partition of the job array (default: the cluster's)")
    g.add_argument("--slurm-time-min", type=int, default=240,
                   help="time limit of each run's job in minutes (at the limit Slurm's SIGTERM checkpoints the run; "
                        "a rerun resumes it)")
    g.add_argument("--slurm-param", action="append", metavar="K=V",
                   help="another submitit slurm parameter, e.g. account=myproj, qos=high, mem_gb=16 (repeatable)")
    p.add_argument("--results", type=Path, default=Path("results"), help="results folder")
    p.add_argument("--force", action="store_true", help="retrain finished runs too")
    p.add_argument("--dry-run", action="store_true", help="list the runs and whether they are done; train nothing")
    p.add_argument("--model", help="put this model in place of every run's model, e.g. your own mixer class as "
                                   "package.module:Class; the backbone's parameters are kept, the replaced mixer's "
                                   "dropped, and runs that become identical merged")
    p.add_argument("--model-param", action="append", metavar="K=V", help="with --model: a parameter of it (repeatable)")
    p.add_argument("--progress", choices=("auto", "on", "off"), default="auto",
                   help="the sweep's tqdm bar on stderr (auto: when stderr is a terminal)")
    return p


def cmd_sweep(argv: list[str]) -> int:
    args = sweep_parser().parse_args(argv)
    from bench.harness.config import RunConfigError, unique_configs
    from bench.harness.records import ResultsDirError, is_finished
    from bench.harness.sweep import SlurmOptions, resolve_grid, run_sweep, with_model

    if args.model_param and not args.model:
        print("error: --model-param needs --model", file=sys.stderr)
        return 2
    try:
        configs = resolve_grid(args.grid)
    except (ImportError, ValueError, RunConfigError) as err:
        print(f"error: {args.grid}: {err}", file=sys.stderr)
        return 2
    if args.model:
        n_grid = len(unique_configs(configs))
        try:
            configs = with_model(configs, args.model, parse_params(args.model_param, "--model-param"))
        except (ValueError, RunConfigError) as err:
            print(f"error: --model {args.model}: {err}", file=sys.stderr)
            return 2
        print(f"{args.grid} with {args.model} in place of every model: {n_grid} runs -> {len(configs)} "
              "(runs that differed only in the replaced mixer are merged)")
    if args.dry_run:
        for c in configs:
            print(f"{c.hash}  {'done' if is_finished(c, args.results) else 'todo':<4}  {c.label()}  "
                  f"{json.dumps(c.model.params, sort_keys=True)}")
        return 0
    slurm = SlurmOptions(partition=args.slurm_partition, time_min=args.slurm_time_min,
                         params=parse_params(args.slurm_param, "--slurm-param"))
    try:
        outcomes = run_sweep(configs, args.results, workers=args.workers, executor=args.executor, force=args.force,
                             threads_per_run=args.threads_per_run, cpus_per_run=args.cpus_per_run,
                             gpus_per_run=args.gpus_per_run, slurm=slurm, echo=True,
                             progress={"auto": None, "on": True, "off": False}[args.progress])
    except (ResultsDirError, RunConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    counts: dict[str, int] = {}
    for o in outcomes:
        counts[o.status] = counts.get(o.status, 0) + 1
    failed = [o for o in outcomes if o.status == "failed"]
    for o in failed:
        print(f"--- {o.config_hash} {o.label} failed: {o.message}\n{o.error or ''}".rstrip(), file=sys.stderr)
    print("sweep: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())))
    if counts.get("interrupted") or counts.get("not started"):
        return 130
    if failed:
        print(f"sweep: {len(failed)} failed (records with status 'failed' under {args.results}/runs; a rerun "
              "trains them again)", file=sys.stderr)
        return 1
    return 0


# Every subcommand but run and sweep is a module with main(argv); its --help is its own parser's.
# name -> (module, one line for `python -m bench --help`)
MODULES = {
    "main": ("bench.main", "the main job: the suite's question in minutes, then the report"),
    "tables": ("bench.reporting.tables", "tables and figures from the run records in results/"),
    "report": ("bench.reporting.report", "one self-contained HTML page and its Markdown twin of a results folder"),
    "floors": ("bench.reporting.floors", "the precision gate: check or update results/floors.json"),
    "compare": ("bench.reporting.compare", "two benchmark JSONs or results folders side by side, regressions flagged"),
    "ode": ("bench.experiments.ode_application", "the in-context ODE operator: every method on the same prompts"),
    "constructions": ("bench.experiments.construction_report", "the exact constructions' error curves and table"),
    "kernel-floor": ("bench.experiments.kernel_error_floor", "each conv backend's error against the float64 oracle"),
    "kernel-crossover": ("bench.experiments.kernel_crossover", "where the FFT conv overtakes the direct one here"),
    "kernel-plot": ("bench.experiments.kernel_plot_bench", "plot and tabulate a conv benchmark JSON"),
    "gpu-check": ("bench.experiments.gpu_check", "the prepared GPU check within a hard time budget"),
    "time-to-precision": ("bench.harness.time_to_precision", "train until an eval-MSE target, timing the training"),
    "lm-choices": ("bench.studies.lm_choices", "study: what each matrix-free Levenberg-Marquardt choice gives"),
    "eval-spread": ("bench.studies.eval_spread", "study: how a run's eval MSE depends on its held-out set"),
    "step-model": ("bench.studies.step_model", "study: where the matrix-free LM's step model fails"),
    "limits": ("bench.experiments.limits", "an architecture's precision limits on the primitives, verdict per cell"),
    "evaluate": ("bench.experiments.evaluate", "compute once what the tables read of runs' weights, store it"),
}
SUBCOMMANDS = ("run", "sweep", *MODULES)


def dispatch(command: str, argv: list[str]) -> int:
    module = importlib.import_module(MODULES[command][0])
    code = module.main(argv)
    return code if isinstance(code, int) else 0


def main(argv: Optional[list[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    # warnings of the harness (a bad file set aside, a run another process holds): one line each
    logging.basicConfig(format="%(levelname)s: %(message)s", level=logging.WARNING)
    top = argparse.ArgumentParser(prog="python -m bench", description="precision-bench: how precisely sequence "
                                  "models learn linear-algebra primitives. Each subcommand has its own --help.")
    sub = top.add_subparsers(dest="command", metavar="SUBCOMMAND")
    sub.add_parser("run", help="train one run (or return its finished record)", add_help=False)
    sub.add_parser("sweep", help="run a grid of runs, skipping finished ones", add_help=False)
    for name, (_, help_line) in MODULES.items():
        sub.add_parser(name, help=help_line, add_help=False)
    if not argv or argv[0] not in SUBCOMMANDS:
        top.parse_args(argv or ["--help"])
        return 2
    command, rest = argv[0], argv[1:]
    if command == "run":
        return cmd_run(rest)
    if command == "sweep":
        return cmd_sweep(rest)
    return dispatch(command, rest)
