"""The harness: typed run configs, the train loop, run records, sweeps and benchmarks.

    from bench import RunConfig
    from bench import run
    result = run(RunConfig(task={"name": "multiply"}, model={"name": "baseconv"}, steps=100))

Command line: `python -m bench main|run|sweep|tables|report|floors --help`.
"""
from __future__ import annotations

__all__ = ["RunConfig", "RunResult", "run", "run_sweep", "load_result", "load_results"]


def __getattr__(name):  # lazy: `python -m bench --help` should not pay for importing torch
    if name == "RunConfig":
        from bench.harness.config import RunConfig

        return RunConfig
    if name in ("RunResult", "load_result", "load_results"):
        from bench.harness import records

        return getattr(records, name)
    if name == "run":
        from bench.harness.train import run

        return run
    if name == "run_sweep":
        from bench.harness.sweep import run_sweep

        return run_sweep
    raise AttributeError(f"module 'bench' has no attribute {name!r}")
