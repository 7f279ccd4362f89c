"""The main job: cases side by side (--jobs) with the numbers and output of --jobs 1, and the dry run
of every profile (what would run, what is recorded, the time estimate)."""
from __future__ import annotations

import json
import os
import re
import sys
import textwrap

import pytest
import torch

from bench import main as main_job
from bench import profiles
from bench.harness.config import make_run_config
from bench.harness.records import load_checkpoint, load_result
from bench.harness.train import run

STANDINS = textwrap.dedent('''
    import os

    from bench.harness.config import make_run_config
    from bench.main import Case


    def tiny(seed):
        return make_run_config(task={"name": "multiply", "params": {"width": 4, "length": 8}},
                               model={"name": "baseconv", "params": {"width": 8, "depth": 1}},
                               optimizer={"name": "adam", "lr": 3e-3}, steps=40, batch_size=8, eval_size=16,
                               eval_every=10, seed=seed)


    def train(seed):
        def do(job):
            from bench.harness.train import run

            r = run(tiny(seed), job.results, force=job.force, progress=False)
            job.done["runs"] = {**job.done.get("runs", {}), r.config_hash: r}
            job.done[f"pid {seed}"] = os.getpid()
            job.done[f"table {seed}"] = "x" * 500_000  # more than a pipe holds: read while it is written
            print(f"case of seed {seed} ran")  # to its log
            return f"seed {seed}: eval MSE {r.eval_mse!r}"
        return do


    def total(job):
        runs = job.done["runs"]
        return f"{len(runs)} runs, eval MSE summed {sum(r.eval_mse for r in runs.values())!r}"


    def broken(job):
        raise ValueError("this case fails")


    CASES = [Case("a", "seed 0", train(0)), Case("b", "seed 1", train(1)), Case("bad", "a failing case", broken),
             Case("c", "seed 2", train(2), start_first=True),
             Case("sum", "the sum", total, needs=("a", "b", "c"), in_driver=True)]
''')


@pytest.fixture
def standins(tmp_path, monkeypatch):
    (tmp_path / "main_standins.py").write_text(STANDINS)
    monkeypatch.syspath_prepend(str(tmp_path))  # the spawned workers get the same sys.path
    yield "main_standins:CASES"
    sys.modules.pop("main_standins", None)


def without_times(lines: list[str]) -> list[str]:
    """The output without the times and the results folder's name."""
    return [re.sub(r"\(\d+ more after this; \d+ s so far\)|^ +\d+ s: |/jobs\d/", "", line) for line in lines]


def test_cases_side_by_side_give_the_numbers_and_output_of_one_at_a_time(tmp_path, standins):
    before = torch.get_num_threads()
    out = {}
    jobs = {}
    try:
        for n in (1, 2):
            out[n] = []
            jobs[n] = main_job.run_quick(tmp_path / f"jobs{n}", jobs=n, cases=standins, echo=out[n].append)
    finally:
        torch.set_num_threads(before)
    assert without_times(out[1]) == without_times(out[2])
    assert [line.split("]")[0] for line in out[2] if line.startswith("[")] == [f"[{i}/5" for i in range(1, 6)]
    assert "FAILED: ValueError: this case fails" in out[2][5]  # a failed case is reported, the others go on
    assert jobs[2].done["failed"] == ["a failing case"]
    assert "3 runs, eval MSE summed" in out[2][-1]
    # side by side, in worker processes; one at a time, here
    assert {jobs[1].done[f"pid {s}"] for s in range(3)} == {os.getpid()}
    assert os.getpid() not in {jobs[2].done[f"pid {s}"] for s in range(3)}
    assert len(jobs[2].done["table 0"]) == 500_000
    from main_standins import tiny

    for seed in range(3):
        cfg = tiny(seed)
        one, two = load_result(cfg, tmp_path / "jobs1"), load_result(cfg, tmp_path / "jobs2")
        assert one.environment["torch_threads"] == two.environment["torch_threads"] == 1
        assert [p.eval_mse for p in one.curve] == [p.eval_mse for p in two.curve] and one.eval_mse == two.eval_mse
        a, b = load_checkpoint(cfg, tmp_path / "jobs1")["model"], load_checkpoint(cfg, tmp_path / "jobs2")["model"]
        assert all(torch.equal(a[k], b[k]) for k in a)
    log = (tmp_path / "jobs2" / "main.log").read_text()  # the cases' logs in case order
    assert log.index("case of seed 0 ran") < log.index("case of seed 1 ran") < log.index("this case fails") \
        < log.index("case of seed 2 ran")
    timings = json.loads((tmp_path / "jobs2" / "main.json").read_text())
    assert timings["jobs"] == 2 and set(timings["cases"]) == {"a", "b", "bad", "c", "sum"}


def test_the_main_jobs_cases_wait_only_for_cases_before_them():
    keys = [c.key for c in main_job.CASES]
    assert len(set(keys)) == len(keys)
    for i, case in enumerate(main_job.CASES):
        assert all(keys.index(k) < i for k in case.needs), case.key
        if case.in_driver:  # they read what the others made
            assert all(c.in_driver or c.key in case.needs or any(c.key in d.needs for d in main_job.CASES[:i])
                       for c in main_job.CASES[:i])
    assert [c.key for c in main_job.CASES if c.start_first] == ["gd_step"]  # it heads the longest chain


def test_jobs_must_be_positive():
    with pytest.raises(SystemExit):
        main_job.main(["--jobs", "0"])


# ---- the dry run ---------------------------------------------------------------------------------


def tiny_run(seed: int, **fields):
    return make_run_config(task={"name": "multiply", "params": {"width": 4, "length": 8}},
                           model={"name": "baseconv", "params": {"width": 8, "depth": 1}},
                           optimizer={"name": "adam", "lr": 3e-3}, steps=10, batch_size=8, eval_size=16, seed=seed,
                           **fields)


def test_the_quick_dry_run_counts_what_is_recorded_and_estimates_the_rest(tmp_path, monkeypatch, capsys, one_thread):
    import bench.grids

    recorded, capped, unknown = tiny_run(0), tiny_run(1, time_limit_s=120.0), tiny_run(2)
    monkeypatch.setattr(bench.grids, "quick", lambda: [recorded, capped, unknown])
    monkeypatch.setattr(profiles, "COMMITTED_MAIN_JOB_TIMING", tmp_path / "none.json")  # no committed timing
    done = run(recorded, tmp_path, progress=False)
    assert main_job.main(["--dry-run", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "3 training runs:" in out and "1 recorded (their records' wall time)" in out
    assert "1 not recorded, time-capped (their caps): 2.0 min" in out
    assert "1 finished in the results folder: not trained again" in out
    assert f"{done.wall_time_s:,.0f} s  training run      {recorded.label()}  (record {recorded.hash})  " \
           "[recorded: skipped]" in out
    assert "estimate: 2.0 min for 1 of the 7 things to run, one after another; 6 not estimated" in out
    assert not (tmp_path / "main.json").exists() and not (tmp_path / "tables").exists()  # nothing ran


def test_a_fresh_folder_times_the_cases_from_the_committed_whole_job(tmp_path, capsys):
    timing = json.loads(profiles.COMMITTED_MAIN_JOB_TIMING.read_text())
    assert main_job.main(["--dry-run", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"{timing['cases']['constructions']:,.0f} s  main job case" in out
    assert "not estimated" not in out.split("estimate:")[1].split("\n")[0]


def test_the_smoke_dry_run_lists_what_pytest_runs(capsys):
    assert main_job.main(["--profile", "smoke", "--dry-run"]) == 0
    out = capsys.readouterr().out
    from bench.grids import primitives

    assert f"{len(primitives('smoke'))} training runs:" in out
    assert re.search(r"\d+ timing benchmarks:", out) and "estimate: " in out
    assert "time-to-precision" not in out  # smoke has no budget for them: they skip themselves


def test_each_profiles_description_says_what_it_runs():
    from bench.benchmarks import test_bench_training as training
    from bench.grids import primitives

    text = profiles.PROFILE_HELP
    assert f"{len(primitives('smoke'))} short precision runs" in text["smoke"]
    assert f"each recipe up to {training.TTP_BUDGET_S['ci'] / 60:g} minutes" in text["ci"]
    assert f"each method up to {training.PAPER_MODEL_BUDGET_S['ci'] / 60:g} minutes" in text["ci"]
    assert f"{training.PAPER_MODEL_BUDGET_S['paper'] / 3600:g}-hour budgets" in text["paper"]
    quick_runs = [c for c in main_job.CASES if c.do.__qualname__.startswith("train_case")]
    assert len(quick_runs) == 3 and "three training runs" in text["quick"]


# ---- Ctrl-C to a job whose cases run side by side --------------------------------------------------

LONG_STANDINS = textwrap.dedent('''
    import os
    import sys
    from pathlib import Path

    from bench.harness.config import make_run_config
    from bench.main import Case, Interrupted, run_quick


    def endless(seed):
        return make_run_config(task={"name": "multiply", "params": {"width": 4, "length": 8}},
                               model={"name": "baseconv", "params": {"width": 8, "depth": 1}},
                               optimizer={"name": "adam", "lr": 3e-3}, steps=10**6, batch_size=8, eval_size=16,
                               eval_every=1000, checkpoint_every=1, seed=seed)


    def train(seed):
        def do(job):
            from bench.harness.train import run
            from bench.main import Interrupted

            (job.results / f"pid-{seed}").write_text(str(os.getpid()))
            r = run(endless(seed), job.results, force=job.force, progress=False)
            if r.status == "interrupted":
                if os.environ.get("SLOW_STOP"):  # what comes after the run is slow: the job is still stopping
                    import time

                    time.sleep(20)
                raise Interrupted(r.message)
            return r.status
        return do


    CASES = [Case("a", "seed 0", train(0)), Case("b", "seed 1", train(1))]

    if __name__ == "__main__":
        try:
            run_quick(Path(sys.argv[1]), jobs=2, cases="main_long_standins:CASES")
        except Interrupted as why:
            print(f"interrupted: {why}", flush=True)
            sys.exit(130)
''')


def start_job(tmp_path, results, **env_vars):
    import subprocess

    (tmp_path / "main_long_standins.py").write_text(LONG_STANDINS)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(main_job.REPO_ROOT)]),
           "OMP_NUM_THREADS": "1", **env_vars}
    # its own session: the test sends the terminal's Ctrl-C to the job's process group, not to pytest's
    return subprocess.Popen([sys.executable, str(tmp_path / "main_long_standins.py"), str(results)], env=env,
                            cwd=main_job.REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def wait_until_training(job, results, timeout=240):
    import time

    from bench.harness.records import checkpoint_path

    sys.path.insert(0, str(results.parent))
    try:
        from main_long_standins import endless
    finally:
        sys.path.pop(0)
    ckpts = [checkpoint_path(endless(s), results) for s in range(2)]
    deadline = time.monotonic() + timeout
    while not all(p.exists() for p in ckpts) and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(p.exists() for p in ckpts), job.communicate()
    return [endless(s) for s in range(2)], [int((results / f"pid-{s}").read_text()) for s in range(2)]


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its parent to reap it has ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


@pytest.mark.skipif(not hasattr(os, "killpg"), reason="POSIX process groups")
def test_ctrl_c_once_checkpoints_every_case_in_flight_and_twice_exits_at_once(tmp_path):
    import signal
    import time

    results = tmp_path / "once"
    job = start_job(tmp_path, results)
    cfgs, pids = wait_until_training(job, results)
    os.killpg(job.pid, signal.SIGINT)  # Ctrl-C: the job's process group
    out, err = job.communicate(timeout=60)
    assert job.returncode == 130 and "interrupted" in out, err
    for cfg in cfgs:  # each worker was asked once, and checkpointed
        record = load_result(cfg, results)
        assert record.status == "interrupted" and 0 < record.steps_done < 10**6
        assert load_checkpoint(cfg, results)["step"] == record.steps_done
    sys.modules.pop("main_long_standins", None)

    results = tmp_path / "twice"
    job = start_job(tmp_path, results, SLOW_STOP="1")
    cfgs, pids = wait_until_training(job, results)
    os.killpg(job.pid, signal.SIGINT)
    deadline = time.monotonic() + 60
    while not all(load_result(c, results) for c in cfgs) and time.monotonic() < deadline:
        time.sleep(0.01)  # until both runs have stopped (the job is still stopping)
    sent = time.monotonic()
    os.killpg(job.pid, signal.SIGINT)
    job.wait(timeout=60)
    exited_s = time.monotonic() - sent
    job.communicate(timeout=60)  # the workers hold its output pipes until they end
    while any(alive(p) for p in pids) and time.monotonic() - sent < 30:
        time.sleep(0.01)
    print(f"second Ctrl-C: the job exited in {exited_s:.3f} s, its workers were gone in "
          f"{time.monotonic() - sent:.2f} s")
    assert job.returncode == 130 and exited_s < 2, f"the job took {exited_s:.2f} s to exit"
    assert not any(alive(p) for p in pids)  # each was passed the stop on (a step, at most, to end it)
    for cfg in cfgs:  # the last checkpoints stay loadable
        assert load_checkpoint(cfg, results)["step"] > 0
    sys.modules.pop("main_long_standins", None)


def test_the_estimate_side_by_side_starts_cases_as_the_job_does():
    # baseconv, attention, gd_step, iterate (after gd_step), constructions, kernels; tables and report after all
    seconds = [352.0, 417.0, 492.0, 18.0, 121.0, 134.0, 1.0, 0.0]
    assert profiles.side_by_side(seconds, 1) == sum(seconds)
    # gd_step and baseconv first; attention after baseconv (352 + 417); iterate, constructions, kernels after
    # gd_step (492 + 18 + 121 + 134 = 765); then tables and report
    assert profiles.side_by_side(seconds, 2) == 352 + 417 + 1
    assert profiles.side_by_side(seconds, 8) == 492 + 18 + 1  # every case at once but iterate, after gd_step
