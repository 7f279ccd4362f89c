"""Sweeps: grids from MODULE:NAME, local processes, Ray and submitit; finished runs skipped, failed
runs recorded and retried, one line per finished run, SIGTERM stops a multi-worker sweep."""
from __future__ import annotations

import sys
import textwrap
from typing import Optional

import pytest

from bench.harness.records import checkpoint_path, is_finished, load_result
from bench.harness.sweep import REPO_ROOT, resolve_grid, run_sweep

GRID_MODULE = textwrap.dedent('''
    from bench.harness.config import RunConfig

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


def test_ray_sweep(grid_module, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    try:
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": {"PYTHONPATH": str(REPO_ROOT)}})
    except Exception as err:  # no shared memory, no ports, ...
        pytest.skip(f"a local Ray instance cannot start here: {err}")
    try:
        configs = resolve_grid(f"{grid_module}:lr_grid") + resolve_grid(f"{grid_module}:GRID")[:1]
        unsavable(configs[2], tmp_path)  # a run that raises on its worker: recorded, the others go on
        outcomes = run_sweep(configs, tmp_path, executor="ray", force=True)
        assert [o.status for o in outcomes] == ["ok", "ok", "failed"], [o.error for o in outcomes]
        assert all(load_result(c, tmp_path).eval_mse == o.eval_mse for c, o in zip(configs[:2], outcomes))
        assert load_result(configs[2], tmp_path).message.startswith("IsADirectoryError")
        assert [o.status for o in run_sweep(configs, tmp_path, executor="ray")] == ["skipped", "skipped", "ok"]
    finally:
        ray.shutdown()


def test_an_interrupted_run_stops_a_local_sweep(grid_module, tmp_path, monkeypatch):
    # SIGINT/SIGTERM reach the run in progress (it checkpoints and says "interrupted"); the sweep must
    # then stop rather than start the next run
    import bench.harness.sweep as sweep

    calls = []

    def interrupted(config_json, results_dir, force, threads, log_path=None):
        calls.append(config_json)
        return {"status": "interrupted", "eval_mse": None}

    monkeypatch.setattr(sweep, "_run_one", interrupted)
    outcomes = run_sweep(resolve_grid(f"{grid_module}:GRID"), tmp_path / "results", workers=1)
    assert len(calls) == 1
    assert [o.status for o in outcomes] == ["interrupted", "not started"]


# ---- failed runs, progress lines, submitit, SIGTERM ------------------------------------------


def fail_at_step(monkeypatch, step: int, seed: Optional[int] = None):
    """Make Trainer.step_once raise before `step` (only for runs of `seed`, if given): a run that
    raises, in this process."""
    from bench.harness.train import Trainer

    original = Trainer.step_once

    def step_once(self):
        if self.state.step + 1 == step and (seed is None or self.cfg.seed == seed):
            raise RuntimeError("boom in the optimizer")
        return original(self)

    monkeypatch.setattr(Trainer, "step_once", step_once)


def unsavable(cfg, results):
    """A folder where the run's checkpoint goes: the run trains, then cannot save, and raises
    (IsADirectoryError) in whatever process trains it. Needs force=True (a run not forced sets
    the unreadable checkpoint aside and trains)."""
    path = checkpoint_path(cfg, results)
    path.mkdir(parents=True)
    (path / "keep").write_text("")


def test_a_run_that_raises_writes_a_failed_record_and_is_trained_again(grid_module, tmp_path, monkeypatch,
                                                                        one_thread):
    from bench.reporting.frames import done_note, grid_frame, records_by_hash
    from bench.harness.train import run

    cfg = resolve_grid(f"{grid_module}:GRID")[0]
    with monkeypatch.context() as m:
        fail_at_step(m, 3)
        with pytest.raises(RuntimeError, match="boom"):
            run(cfg, tmp_path, progress=False)
    failed = load_result(cfg, tmp_path)
    assert failed.status == "failed" and failed.message == "RuntimeError: boom in the optimizer"
    assert failed.steps_done == 2 and failed.eval_mse is None and failed.curve[0].step == 0
    assert "step_once" in failed.traceback and failed.floor > 0
    assert not is_finished(cfg, tmp_path)
    df = grid_frame([cfg], records_by_hash(tmp_path))  # tables show it as failed, not a number
    assert list(df["status"]) == ["failed"] and "1 failed" in done_note(df)

    again = run(cfg, tmp_path, progress=False)  # a failed run is not finished: trained again
    assert again.status == "ok" and again.steps_done == 4
    fail_at_step(monkeypatch, 1)
    with pytest.raises(RuntimeError):
        run(cfg, tmp_path, force=True, progress=False)
    assert load_result(cfg, tmp_path).finished_at == again.finished_at  # a finished record is never replaced


def test_a_failed_run_does_not_stop_a_sweep_and_the_exit_status_says_so(grid_module, tmp_path, monkeypatch,
                                                                         capsys, one_thread):
    from bench.cli import main

    fail_at_step(monkeypatch, 2, seed=0)
    results = tmp_path / "results"
    code = main(["sweep", f"{grid_module}:GRID", "--results", str(results), "--progress", "off"])
    out, err = capsys.readouterr()
    assert code == 1
    assert "sweep: 2 runs: 0 done already (skipped), 2 to train locally, 1 at a time" in out
    lines = [line for line in out.splitlines() if line.startswith("[")]
    assert len(lines) == 2
    assert lines[0].startswith("[1/2] failed") and lines[0].endswith("RuntimeError: boom in the optimizer")
    assert lines[1].startswith("[2/2] ok          mse ") and " s  " in lines[1] and "seed1" in lines[1]
    assert "sweep: 1 failed, 1 ok" in out and "Traceback" in err and "boom in the optimizer" in err
    configs = resolve_grid(f"{grid_module}:GRID")
    assert [load_result(c, results).status for c in configs[:2]] == ["failed", "ok"]

    monkeypatch.undo()
    assert main(["sweep", f"{grid_module}:GRID", "--results", str(results), "--progress", "off"]) == 0
    out, _ = capsys.readouterr()
    assert "2 runs: 1 done already (skipped), 1 to train" in out and "[1/1] ok" in out


def test_local_processes_a_failed_run_then_its_retry(grid_module, tmp_path):
    configs = resolve_grid(f"{grid_module}:GRID")
    results = tmp_path / "results"
    unsavable(configs[1], results)
    outcomes = run_sweep(configs, results, workers=2, force=True)
    assert [o.status for o in outcomes] == ["ok", "failed"], [o.error for o in outcomes]
    record = load_result(configs[1], results)
    assert record.status == "failed" and record.message.startswith("IsADirectoryError")
    assert record.steps_done == 4 and outcomes[1].message == record.message
    assert (results / "logs" / f"{configs[0].hash}.log").exists()
    again = run_sweep(configs, results, workers=2)  # the unreadable checkpoint is set aside, the run trains
    assert [o.status for o in again] == ["skipped", "ok"]


def test_submitit_local_executor_sweep(grid_module, tmp_path, capsys):
    pytest.importorskip("submitit")
    configs = resolve_grid(f"{grid_module}:lr_grid") + resolve_grid(f"{grid_module}:GRID")[:1]
    results = tmp_path / "results"
    unsavable(configs[1], results)
    outcomes = run_sweep(configs, results, executor="submitit", cluster="local", workers=2, force=True, echo=True)
    assert [o.status for o in outcomes] == ["ok", "failed", "ok"], [o.error for o in outcomes]
    assert [load_result(c, results).status for c in configs] == ["ok", "failed", "ok"]
    assert load_result(configs[1], results).message.startswith("IsADirectoryError")
    assert outcomes[0].eval_mse == load_result(configs[0], results).eval_mse
    out = capsys.readouterr().out
    assert "3 to train as submitit local jobs" in out
    assert sorted(line.split()[1] for line in out.splitlines() if line.startswith("[")) == ["failed", "ok", "ok"]
    assert list((results / "logs" / "submitit").glob("*_log.out"))  # each job's log


def test_sigterm_stops_a_multi_worker_sweep_with_checkpoints(grid_module, tmp_path):
    import os
    import signal
    import threading
    import time

    from bench.harness.config import make_run_config

    base = resolve_grid(f"{grid_module}:GRID")[0].model_dump()
    configs = [make_run_config(**{**base, "seed": s, "steps": 100_000, "checkpoint_every": 1}) for s in range(3)]
    results = tmp_path / "results"
    started = [checkpoint_path(c, results) for c in configs[:2]]

    def terminate_once_training():
        deadline = time.monotonic() + 240
        while not all(p.exists() for p in started) and time.monotonic() < deadline:
            time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=terminate_once_training, daemon=True).start()
    outcomes = run_sweep(configs, results, workers=2)
    assert [o.status for o in outcomes] == ["interrupted", "interrupted", "not started"], [o.message for o in outcomes]
    for c in configs[:2]:
        record = load_result(c, results)
        assert record.status == "interrupted" and 0 < record.steps_done < 100_000
    assert load_result(configs[2], results) is None


def test_submitit_asks_slurm_for_what_the_flags_say(tmp_path, monkeypatch):
    """With sbatch on PATH the submitit executor is Slurm's, and its batch script carries the
    partition, time limit, CPUs, GPUs and extra parameters (nothing is submitted here)."""
    pytest.importorskip("submitit")
    import os

    from bench.harness.sweep import SlurmOptions, _Submitit

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("sbatch", "srun"):
        (bin_dir / name).write_text("#!/bin/sh\nexit 1\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    backend = _Submitit(tmp_path / "logs", None, 4, 2, 1, SlurmOptions("gpu", 30, {"account": "proj"}))
    assert backend.cluster == "slurm" and backend.limit is None  # Slurm queues the array itself
    script = backend.executor._executor._make_submission_file_text("python -m x", "uid")
    for line in ("--partition=gpu", "--time=30", "--cpus-per-task=2", "--gpus-per-node=1", "--account=proj",
                 "--signal=USR2@90"):
        assert f"#SBATCH {line}\n" in script
    assert backend.executor._executor.parameters["array_parallelism"] == 4


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
    monkeypatch.setattr(ray, "wait", lambda refs, num_returns, timeout=None: (refs[:num_returns], refs[num_returns:]))
    monkeypatch.setattr(ray, "get", lambda ref: ref.value)
    assert cmd_sweep([f"{grid_module}:lr_grid", "--executor", "ray", "--gpus-per-run", "0.25",
                      "--cpus-per-run", "0.5", "--results", str(tmp_path)]) == 0
    assert seen == {"num_cpus": 0.5, "num_gpus": 0.25}
    assert all(load_result(c, tmp_path).status == "ok" for c in resolve_grid(f"{grid_module}:lr_grid"))
