"""Stopping a run: the first SIGINT/SIGTERM is honoured within seconds, in the middle of a long
Levenberg-Marquardt step too, and the run resumes to the same result; a second one exits at once."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bench.harness import interrupt
from bench.harness.config import make_run_config
from bench.harness.records import load_checkpoint, load_result
from bench.harness.train import Trainer, run

REPO = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX signals")]


def numbers(result) -> dict:
    keep = ("status", "steps_done", "eval_mse", "eval_rel", "best_eval_mse", "train_loss", "final_lr", "param_count")
    data = result.model_dump()
    return {**{k: data[k] for k in keep}, "curve": [{k: v for k, v in p.items()} for p in data["curve"]]}


def same_weights(cfg, dir_a, dir_b) -> bool:
    a = load_checkpoint(cfg, dir_a)["model"]
    b = load_checkpoint(cfg, dir_b)["model"]
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# ---- the flag ---------------------------------------------------------------------------------


def test_a_signal_asks_for_a_stop_that_check_stop_raises():
    before = signal.getsignal(signal.SIGTERM)
    with interrupt.handling_signals():
        assert not interrupt.stop_requested()
        interrupt.check_stop()  # nothing asked: nothing raised
        os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.monotonic() + 5
        while not interrupt.stop_requested() and time.monotonic() < deadline:
            time.sleep(0.01)
        with pytest.raises(interrupt.StopRequested):
            interrupt.check_stop()
        with interrupt.handling_signals():  # a nested context (a run inside a job) keeps the request
            assert interrupt.stop_requested()
    assert signal.getsignal(signal.SIGTERM) == before  # the handlers are given back
    with interrupt.handling_signals():  # the next outermost one starts afresh
        assert not interrupt.stop_requested()


# ---- a step dropped mid-way --------------------------------------------------------------------

LM = dict(task={"name": "multiply", "params": {"width": 4, "length": 8}},
          model={"name": "baseconv", "params": {"width": 8, "depth": 1}},
          optimizer={"name": "levenberg_marquardt", "train_size": 16}, eval_size=32, eval_every=1)


def test_a_stop_inside_a_full_batch_step_checkpoints_the_last_completed_step(tmp_path, monkeypatch):
    """Whatever a step had changed when the stop came (the weights moved to a trial point), the
    checkpoint is that of the step before, and the run resumes to the uninterrupted result."""
    cfg = make_run_config(**LM, steps=5)
    reference = run(cfg, tmp_path / "ref", progress=False)
    solver = type(Trainer(cfg, tmp_path / "probe", progress=False).optimizer)
    real_step = solver.step

    def stopped_midway(self, *args, **kwargs):
        if self.model.training and trainer_steps[0] == 3:
            with torch.no_grad():
                for p in self.model.parameters():
                    p.add_(1.0)  # a trial point, then the stop
            self.damping *= 1e3
            interrupt.request_stop()
            interrupt.check_stop()
        trainer_steps[0] += 1
        return real_step(self, *args, **kwargs)

    trainer_steps = [0]
    with monkeypatch.context() as m:
        m.setattr(solver, "step", stopped_midway)
        first = run(cfg, tmp_path / "int", progress=False)
    assert first.status == "interrupted" and first.steps_done == 3 and first.message == "interrupted at step 3"
    assert load_checkpoint(cfg, tmp_path / "int")["step"] == 3
    resumed = run(cfg, tmp_path / "int", progress=False)
    assert resumed.status == "ok" and resumed.resumed_at == [3]
    assert numbers(resumed) == numbers(reference) and same_weights(cfg, tmp_path / "ref", tmp_path / "int")


# ---- signals to a run in another process, mid-step -----------------------------------------------

# a matrix-free Levenberg-Marquardt step of 100 Gauss-Newton products on 25k weights: seconds on one core
LONG_STEP = dict(task={"name": "multiply", "params": {"width": 8, "length": 16}},
                 model={"name": "baseconv", "params": {"width": 32, "depth": 2}},
                 optimizer={"name": "levenberg_marquardt", "solver": "cg", "train_size": 64, "cg_max_iter": 100,
                            "cg_tol": 1e-12},
                 steps=2, eval_size=64, eval_every=1, checkpoint_every=1)

CHILD = """
import os, sys, time, torch
torch.set_num_threads(1)
from bench.harness import interrupt
from bench.harness.config import load_run_config
from bench.harness.train import Trainer, run

marker = sys.argv[3]
real = Trainer.step_once

def step_once(self):  # says when each step starts
    with open(marker, "a") as f:
        f.write(f"{self.state.step + 1} {time.time()}\\n")
    return real(self)

Trainer.step_once = step_once

if os.environ.get("SLOW_LAST_CHECKPOINT"):  # a stopped run's last checkpoint takes seconds to write
    real_save = Trainer.save_checkpoint

    def slow_save(self, *args, **kwargs):
        if interrupt.stop_requested():
            with open(marker, "a") as f:
                f.write("stopping\\n")
            time.sleep(20)
        return real_save(self, *args, **kwargs)

    Trainer.save_checkpoint = slow_save
print(run(load_run_config(sys.argv[1]), sys.argv[2], progress=False).status, flush=True)
"""


def start_child(cfg, results: Path, marker: Path, **env_vars) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **env_vars}
    return subprocess.Popen([sys.executable, "-c", CHILD, cfg.model_dump_json(), str(results), str(marker)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_step(child: subprocess.Popen, marker: Path, step, timeout: float = 240) -> None:
    """Until the marker file says step `step` started (or, step "stopping", that the run is stopping)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and child.poll() is None:
        if marker.exists() and any(line.split()[0] == str(step) for line in marker.read_text().splitlines()):
            return
        time.sleep(0.01)
    raise AssertionError(f"step {step} never came: {child.communicate()}")


@pytest.fixture(scope="module")
def long_step_reference(tmp_path_factory):
    cfg = make_run_config(**LONG_STEP)
    folder = tmp_path_factory.mktemp("long-step-ref")
    torch.set_num_threads(1)
    return cfg, folder, run(cfg, folder, progress=False)


def test_the_first_signal_is_honoured_mid_step_and_the_run_resumes_to_the_same_result(tmp_path,
                                                                                      long_step_reference):
    cfg, ref_dir, reference = long_step_reference
    step_s = reference.train_time_s / reference.steps_done
    marker = tmp_path / "steps.txt"
    child = start_child(cfg, tmp_path / "int", marker)
    wait_for_step(child, marker, 2)
    time.sleep(0.3)  # inside step 2's Gauss-Newton products
    sent = time.monotonic()
    child.send_signal(signal.SIGTERM)
    out, err = child.communicate(timeout=60)
    honoured_s = time.monotonic() - sent
    assert child.returncode == 0 and out.strip() == "interrupted", err
    print(f"first signal honoured in {honoured_s:.2f} s; a step takes {step_s:.1f} s")
    assert honoured_s < 10, f"the stop took {honoured_s:.1f} s (a step takes {step_s:.1f} s)"
    record = load_result(cfg, tmp_path / "int")
    # step 2 had started (the marker) and is not in the record: it was dropped in flight
    assert record.status == "interrupted" and record.steps_done == 1
    assert load_checkpoint(cfg, tmp_path / "int")["step"] == 1
    resumed = run(cfg, tmp_path / "int", progress=False)
    assert resumed.status == "ok" and resumed.resumed_at == [1]
    assert numbers(resumed) == numbers(reference) and same_weights(cfg, ref_dir, tmp_path / "int")


def test_a_second_signal_exits_at_once_and_the_last_checkpoint_loads(tmp_path, long_step_reference):
    cfg = long_step_reference[0]
    marker = tmp_path / "steps.txt"
    child = start_child(cfg, tmp_path / "run", marker, SLOW_LAST_CHECKPOINT="1")
    wait_for_step(child, marker, 2)
    time.sleep(0.3)  # inside step 2's Gauss-Newton products
    child.send_signal(signal.SIGTERM)
    wait_for_step(child, marker, "stopping")  # the first was honoured; its checkpoint is slow to write
    sent = time.monotonic()
    child.send_signal(signal.SIGTERM)
    child.communicate(timeout=60)
    exited_s = time.monotonic() - sent
    assert child.returncode == interrupt.EXIT_STATUS
    print(f"second signal: exited in {exited_s:.3f} s")
    assert exited_s < 2, f"the second signal took {exited_s:.2f} s to end the process"
    assert load_checkpoint(cfg, tmp_path / "run")["step"] == 1  # the last one written (step 1's), whole
    assert load_result(cfg, tmp_path / "run") is None  # gone before it could write a record
