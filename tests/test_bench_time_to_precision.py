"""Time-to-precision training (bench/harness/time_to_precision.py): stopping at the target, the budget,
and switching to a polishing optimizer once the first one stalls."""
from __future__ import annotations

import json
import math

import pytest
import torch

from bench.harness.config import AdamConfig, LBFGSConfig, RunConfigError, make_run_config
from bench.solvers.optimizers import LevenbergMarquardt
from bench.harness.time_to_precision import train_until
from bench.harness.train import Trainer, stalled

pytestmark = pytest.mark.usefixtures("one_thread")

# a one-layer gated conv that can express MULTIPLY exactly (small enough for Levenberg-Marquardt)
SMALL = dict(
    task={"name": "multiply", "params": {"width": 4, "length": 8}},
    model={"name": "baseconv", "params": {"width": 4, "depth": 1, "mlp": False, "prenorm": False,
                                          "final_norm": False, "pos_emb": False}},
    batch_size=16,
    eval_size=64,
    steps=10**9,
)


def trainer(tmp_path, **overrides) -> Trainer:
    return Trainer(make_run_config(**{**SMALL, **overrides}), tmp_path, progress=False)


def test_stalled_compares_with_the_eval_window_ago():
    falling = [0.5**i for i in range(8)]
    flat = [1.0 - 0.001 * i for i in range(8)]
    assert not stalled(falling)
    assert stalled(flat)
    assert not stalled(flat[:5])  # too few evals to tell


def test_target_met_stops_at_once_and_budget_ends_an_unreached_target(tmp_path):
    easy = train_until(trainer(tmp_path), target=1e6, budget_s=60.0, eval_every=3)
    assert easy["reached"] and easy["steps_to_target"] == 3 and easy["switched_at"] is None
    hard = train_until(trainer(tmp_path / "b"), target=1e-30, budget_s=0.5, eval_every=2)
    assert not hard["reached"] and hard["steps_run"] >= 2 and hard["best_mse"] > 1e-30
    assert hard["seconds_run"] >= 0.5 and hard["seconds_to_target"] is None


def test_polish_switches_once_the_first_optimizer_stalls(tmp_path):
    # Adam at LR 1e-12 does not move the model: stalled after 5 evals, then Levenberg-Marquardt
    t = trainer(tmp_path, optimizer={"name": "adam", "lr": 1e-12},
                polish={"name": "levenberg_marquardt", "train_size": 8})
    start = t.evaluate()["mse"]
    out = train_until(t, target=1e-30, budget_s=3.0, eval_every=1)
    assert out["switched_at"] is not None and out["switched_at"][0] == 6
    assert isinstance(t.optimizer, LevenbergMarquardt) and t.full_batch and len(t.train_set.inputs) == 8
    assert t.current_lr() == 1.0  # its own LR, not the first optimizer's schedule
    assert out["best_mse"] < 0.5 * start  # the second-order steps make progress where Adam made none


def test_switch_draws_from_the_train_stream_and_rejects_bad_configs(tmp_path):
    t = trainer(tmp_path)
    t.switch_optimizer(LBFGSConfig(train_size=12))
    assert isinstance(t.optimizer, torch.optim.LBFGS) and t.train_set.inputs.shape[0] == 12
    assert not torch.equal(t.train_set.inputs[:1], t.eval_batch.inputs[:1])
    t.switch_optimizer(AdamConfig(lr=1e-3))
    assert not t.full_batch and t.train_set is None
    with pytest.raises(RunConfigError, match="train_size"):
        make_run_config(**{**SMALL, "polish": {"name": "levenberg_marquardt", "train_size": 0}})
    with pytest.raises(ValueError, match="eval_every"):
        train_until(t, target=1e-8, budget_s=1.0, eval_every=0)


@pytest.mark.parametrize("optimizer,why,steps", [
    ({"name": "adam", "lr": 1e30}, "eval MSE is nan at step 1", 1),  # finite weights, outputs overflow
    ({"name": "lbfgs", "lr": 1e8}, "non-finite training loss or weights at step 1", 0),  # inside the first step
])
def test_a_diverging_run_is_reported_not_raised(tmp_path, optimizer, why, steps):
    """Before, the first case raised TypeError from min(best, None) and the second Diverged."""
    t = trainer(tmp_path, optimizer=optimizer)
    start = t.evaluate()["mse"]
    out = train_until(t, target=1e-8, budget_s=30.0, eval_every=1)
    assert not out["reached"] and out["diverged"] == why
    assert out["steps_run"] == steps and out["seconds_run"] < 30.0  # stopped at the divergence, not the budget
    assert out["best_mse"] is None and out["curve"] == [(steps, out["curve"][0][1], None)]
    assert math.isfinite(start)


def test_time_to_precision_benchmark_runs_on_one_thread_whatever_the_session_says(tmp_path):
    """`tox -e bench` runs with torch's default threads (2 on the CI machine); there exact_small's
    L-BFGS diverged at step 12, while its recorded numbers are from one thread. The benchmark
    pins one thread itself."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parent.parent
    out = tmp_path / "ttp.json"
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "bench/benchmarks/test_bench_training.py", "-q", "-p", "no:cacheprovider",
         "-k", "time_to_precision and exact_small and not adam and not polished", "--profile", "ci",
         "--threads", "2", "--benchmark-json", str(out)],
        cwd=repo, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(repo), "PB_TTP_BUDGET_S": "1", "OMP_NUM_THREADS": "2"})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (case,) = json.loads(out.read_text())["benchmarks"]
    info = case["extra_info"]
    assert info["torch_threads"] == 1 and info["diverged"] is None and info["best_mse"] > 0 and info["steps_run"] >= 1


def test_the_figure_and_table_of_benchmark_jsons(tmp_path, capsys):
    from bench.harness import time_to_precision as ttp

    curve = [[1, 10.0, 1e-3], [2, 20.0, 1e-9], [3, 30.0, 1e-13]]
    info = dict(curve=curve, seconds_to={"1e-08": 20.0, "1e-12": 30.0}, best_mse=1e-13, steps_to_target=3,
                seconds_to_target=30.0, target_mse=1e-12, floor=6e-16, load_avg=[1.0, 1.0, 1.0])
    for name in ("a", "b"):  # the same case measured twice
        (tmp_path / f"{name}.json").write_text(json.dumps({"benchmarks": [
            {"name": "test_time_to_precision_paper_model[cg_lm]", "extra_info": info},
            {"name": "test_other", "extra_info": {}}]}))
    out = tmp_path / "fig.png"
    assert ttp.main([str(tmp_path / "a.json"), str(tmp_path / "b.json"), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| cg_lm (a) | 20 s | 30 s | 1.00e-13 | 3 | 30 | 1.0 | a.json |" in text and "cg_lm (b)" in text
    assert out.stat().st_size > 10_000 and "test_other" not in text
    with pytest.raises(SystemExit):
        ttp.main([str(tmp_path / "missing.json")])
    assert "no such file" in capsys.readouterr().err
