"""Sweeps: a grid is a plain Python list of RunConfig; run_sweep trains what is not done.

    # mygrids.py
    def lr_grid():
        return [RunConfig(task={"name": "multiply"}, model={"name": "baseconv"},
                          optimizer={"name": "adam", "lr": lr}, seed=s)
                for lr in (1e-3, 3e-4) for s in range(3)]

    python -m bench sweep mygrids:lr_grid --workers 2             # local process pool
    python -m bench sweep mygrids:lr_grid --executor ray          # Ray (RAY_ADDRESS or a local instance)
    python -m bench sweep bench.grids:primitives_ci --model mymixer:MyMixer   # your mixer in every run

`--model` (`with_model`) swaps the model of every run of a grid and merges the runs that become
identical.

Finished runs (a record with status ok or diverged) are skipped; interrupted ones resume
from their checkpoint. A local sweep first checks every run it will train (bench.train.preflight:
the device, the model's forward pass, an optimizer's size limit) and starts none if one fails;
on Ray each worker checks its own run (the driver may have no GPU). A run that raises is
reported, and the sweep goes on. Two sweeps on one results folder never train the same run at
once (bench.train.run holds the run's file lock).
"""
from __future__ import annotations

import concurrent.futures as cf
import multiprocessing as mp
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Optional

from architectures.plugin import import_object

from .config import RunConfig, RunConfigError, load_run_config, make_run_config, unique_configs
from .records import check_writable, is_finished

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class SweepOutcome:
    config_hash: str
    label: str
    status: str  # ok | diverged | interrupted | skipped | error
    eval_mse: Optional[float] = None
    error: Optional[str] = None


def resolve_grid(spec: str) -> list[RunConfig]:
    """'package.module:NAME' -> the list NAME (or NAME() if it is callable) as RunConfigs."""
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    grid = import_object(spec, example="bench.grids:primitives_paper")
    if callable(grid):
        grid = grid()
    configs = [c if isinstance(c, RunConfig) else load_run_config(c) for c in grid]
    if not configs:
        raise ValueError(f"grid {spec!r} is empty")
    return configs


def with_model(configs: Iterable[RunConfig], name: str, params: Optional[dict[str, Any]] = None) -> list[RunConfig]:
    """Every config with model `name` in place of its own: the backbone's parameters (width, depth,
    mlp, norms, ...: architectures.shared_parameter_names) are kept, those of the replaced mixer are
    dropped and `params` added. Configs that become identical (they differed only in the replaced
    mixer or its parameters) are merged, in the order they first appear."""
    from architectures import shared_parameter_names

    keep = set(shared_parameter_names(name))
    out = []
    for c in configs:
        data = c.model_dump(mode="json")
        kept = {k: v for k, v in c.model.params.items() if k in keep}
        data["model"] = {"name": name, "params": {**kept, **(params or {})}}
        try:
            out.append(make_run_config(**data))
        except RunConfigError as err:
            raise RunConfigError(f"{c.label()} (config {c.hash}) with model {name!r}: {err}") from None
    return unique_configs(out)


def _run_one(config_json: str, results_dir: str, force: bool, threads: Optional[int]) -> dict[str, Any]:
    """Worker entry point (process pool or Ray): train one config, never raise."""
    import torch

    from .train import run

    if threads:
        torch.set_num_threads(threads)
    cfg = RunConfig.model_validate_json(config_json)
    try:
        result = run(cfg, results_dir, force=force, progress=False)
        return {"status": result.status, "eval_mse": result.eval_mse}
    except Exception:
        return {"status": "error", "error": traceback.format_exc(limit=5)}


def run_sweep(configs: Iterable[RunConfig], results_dir: str | Path = "results", *, workers: int = 1,
              executor: str = "local", force: bool = False, threads_per_run: Optional[int] = None,
              cpus_per_run: float = 1.0, gpus_per_run: float = 0.0, echo: bool = False) -> list[SweepOutcome]:
    """Train every config without a finished record; return one outcome per unique config."""
    if executor not in ("local", "ray"):
        raise ValueError(f"executor must be 'local' or 'ray', got {executor!r}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    results_dir = str(Path(results_dir).resolve())  # workers may run elsewhere
    check_writable(results_dir)
    configs = unique_configs(configs)
    outcomes = {c.hash: SweepOutcome(c.hash, c.label(), "skipped") for c in configs}
    todo = [c for c in configs if force or not is_finished(c, results_dir)]
    if executor == "local":
        from .train import preflight

        failed = []
        for c in todo:
            try:
                preflight(c)
            except RunConfigError as err:
                failed.append(f"{c.hash} {c.label()}: {err}")
        if failed:
            raise RunConfigError(f"{len(failed)} of {len(todo)} runs cannot train on this machine, nothing was "
                                 f"started; first: {failed[0]}")
    if threads_per_run is None:
        threads_per_run = (max(1, (os.cpu_count() or 1) // workers) if executor == "local"
                           else max(1, int(cpus_per_run)))

    def record(cfg: RunConfig, out: dict) -> None:
        o = outcomes[cfg.hash]
        o.status, o.eval_mse, o.error = out["status"], out.get("eval_mse"), out.get("error")
        if echo:
            print(f"{o.config_hash}  {o.status:<11}  mse={o.eval_mse}  {o.label}", flush=True)

    if executor == "ray":
        for cfg, out in _run_ray(todo, results_dir, force, cpus_per_run, gpus_per_run, threads_per_run):
            record(cfg, out)
    elif workers == 1 or len(todo) <= 1:
        for cfg in todo:
            out = _run_one(cfg.model_dump_json(), results_dir, force, threads_per_run)
            record(cfg, out)
            if out["status"] == "interrupted":  # Ctrl-C / SIGTERM: the run checkpointed; stop here, a rerun resumes
                break
    else:
        with cf.ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as pool:
            futures = {pool.submit(_run_one, c.model_dump_json(), results_dir, force, threads_per_run): c
                       for c in todo}
            for fut in cf.as_completed(futures):
                record(futures[fut], fut.result())
    return [outcomes[c.hash] for c in configs]


def _run_ray(todo, results_dir, force, cpus_per_run, gpus_per_run, threads):
    import ray

    if not ray.is_initialized():
        address = os.environ.get("RAY_ADDRESS") or None
        pythonpath = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH")) if p)
        kwargs = {"runtime_env": {"env_vars": {"PYTHONPATH": pythonpath}}}
        if address is None:
            kwargs["include_dashboard"] = False
        ray.init(address=address, **kwargs)
    remote = ray.remote(num_cpus=cpus_per_run, num_gpus=gpus_per_run)(_run_one)
    pending = {remote.remote(c.model_dump_json(), results_dir, force, threads): c for c in todo}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            yield pending.pop(ref), ray.get(ref)
