"""Sweeps: grids from MODULE:NAME, a local process pool and Ray; finished runs skipped."""
from __future__ import annotations

import sys
import textwrap

import pytest

from bench.records import load_result
from bench.sweep import REPO_ROOT, resolve_grid, run_sweep

GRID_MODULE = textwrap.dedent('''
    from bench.config import RunConfig

    def tiny(seed, lr=3e-3):
        return RunConfig(task={"name": "multiply", "params": {"width": 4, "length": 8}},
                         model={"name": "baseconv", "params": {"width": 8, "depth": 1}},
                         optimizer={"name": "adam", "lr": lr}, steps=4, batch_size=8, eval_size=16, seed=seed)

    GRID = [tiny(0), tiny(1), tiny(0)]        # a duplicate: trained once

    def lr_grid():
        return [tiny(2, lr) for lr in (1e-3, 1e-2)]
''')


@pytest.fixture
def grid_module(tmp_path, monkeypatch):
    (tmp_path / "tiny_grids.py").write_text(GRID_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "tiny_grids"
    sys.modules.pop("tiny_grids", None)


def test_resolve_grid_list_and_function(grid_module):
    assert len(resolve_grid(f"{grid_module}:GRID")) == 3
    assert [c.optimizer.lr for c in resolve_grid(f"{grid_module}:lr_grid")] == [1e-3, 1e-2]
    with pytest.raises(ValueError, match="MODULE:NAME"):
        resolve_grid(grid_module)
    with pytest.raises(ValueError, match="no attribute 'nope'"):
        resolve_grid(f"{grid_module}:nope")


def test_process_pool_sweep_then_everything_is_skipped(grid_module, tmp_path):
    configs = resolve_grid(f"{grid_module}:GRID")
    results = tmp_path / "results"
    outcomes = run_sweep(configs, results, workers=2)
    assert [o.status for o in outcomes] == ["ok", "ok"]  # deduplicated by hash
    for c in configs:
        assert load_result(c, results).status == "ok"
    again = run_sweep(configs, results, workers=2)
    assert [o.status for o in again] == ["skipped", "skipped"]


def test_ray_sweep(grid_module, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    try:
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(REPO_ROOT)}})
    except Exception as err:  # no shared memory, no ports, ...
        pytest.skip(f"a local Ray instance cannot start here: {err}")
    try:
        configs = resolve_grid(f"{grid_module}:lr_grid")
        outcomes = run_sweep(configs, tmp_path, executor="ray")
        assert [o.status for o in outcomes] == ["ok", "ok"], [o.error for o in outcomes]
        assert all(load_result(c, tmp_path).eval_mse == o.eval_mse for c, o in zip(configs, outcomes))
        assert [o.status for o in run_sweep(configs, tmp_path, executor="ray")] == ["skipped", "skipped"]
    finally:
        ray.shutdown()


def test_an_interrupted_run_stops_a_local_sweep(grid_module, tmp_path, monkeypatch):
    # SIGINT/SIGTERM reach the run in progress (it checkpoints and says "interrupted"); the sweep must
    # then stop rather than start the next run
    import bench.sweep as sweep

    calls = []

    def interrupted(config_json, results_dir, force, threads):
        calls.append(config_json)
        return {"status": "interrupted", "eval_mse": None}

    monkeypatch.setattr(sweep, "_run_one", interrupted)
    outcomes = run_sweep(resolve_grid(f"{grid_module}:GRID"), tmp_path / "results", workers=1)
    assert len(calls) == 1
    assert [o.status for o in outcomes] == ["interrupted", "skipped"]


def test_fractional_gpus_per_run_reach_ray(grid_module, tmp_path, monkeypatch):
    # `--gpus-per-run 0.25` packs four runs on one GPU: the fraction must reach ray.remote as is
    ray = pytest.importorskip("ray")
    from bench.cli import cmd_sweep

    seen = {}

    class Ref:  # an object ref: hashable, holding the run's outcome
        def __init__(self, value):
            self.value = value

    def fake_remote(**options):
        seen.update(options)

        def wrap(fn):
            class Task:
                @staticmethod
                def remote(*args):
                    return Ref(fn(*args))
            return Task
        return wrap

    monkeypatch.setattr(ray, "is_initialized", lambda: True)
    monkeypatch.setattr(ray, "remote", fake_remote)
    monkeypatch.setattr(ray, "wait", lambda refs, num_returns: (refs[:num_returns], refs[num_returns:]))
    monkeypatch.setattr(ray, "get", lambda ref: ref.value)
    assert cmd_sweep([f"{grid_module}:lr_grid", "--executor", "ray", "--gpus-per-run", "0.25",
                      "--cpus-per-run", "0.5", "--results", str(tmp_path)]) == 0
    assert seen == {"num_cpus": 0.5, "num_gpus": 0.25}
    assert all(load_result(c, tmp_path).status == "ok" for c in resolve_grid(f"{grid_module}:lr_grid"))
