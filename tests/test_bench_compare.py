"""python -m bench compare: two benchmark JSONs or two results folders, case by case, with
regressions flagged past the thresholds and in the exit status."""
from __future__ import annotations

import datetime as dt
import json
import math

import pytest

from bench.reporting.compare import benchmark_cases, compare, main, ratio
from bench.harness.config import make_run_config
from bench.harness.records import RunResult, write_result


def bench_json(path, cases: dict[str, tuple]) -> str:
    """A pytest-benchmark JSON: name -> (mean seconds, extra_info)."""
    benchmarks = [{"name": name, "fullname": f"bench/test_x.py::{name}", "stats": {"mean": mean},
                   "extra_info": info} for name, (mean, info) in cases.items()]
    path.write_text(json.dumps({"machine_info": {}, "benchmarks": benchmarks}))
    return str(path)


A_CASES = {
    "test_precision[multiply]": (2.0, {"status": "ok", "eval_mse": 1e-6}),
    "test_precision[linear]": (1.0, {"status": "ok", "eval_mse": 1e-4}),
    "test_precision[read]": (1.0, {"status": "ok", "eval_mse": 1e-3}),
    "test_conv[fft-1024]": (0.010, {"shape": [4, 1024]}),  # a speed benchmark: no MSE
    "test_sharp[exact]": (0.001, {"status": "ok", "eval_mse": 0.0}),
    "test_precision[gone]": (1.0, {"status": "ok", "eval_mse": 1e-2}),
}
B_CASES = {
    "test_precision[multiply]": (2.1, {"status": "ok", "eval_mse": 2e-5}),  # 20x worse MSE
    "test_precision[linear]": (1.5, {"status": "ok", "eval_mse": 1e-4}),  # 1.5x slower
    "test_precision[read]": (1.0, {"status": "diverged", "eval_mse": None}),
    "test_conv[fft-1024]": (0.011, {"shape": [4, 1024]}),  # 1.1x: within 1.25
    "test_sharp[exact]": (0.001, {"status": "ok", "eval_mse": 0.0}),
    "test_precision[new]": (1.0, {"status": "ok", "eval_mse": 1e-2}),
}


def test_benchmark_jsons_ratios_flags_and_one_sided_cases(tmp_path, capsys):
    a = bench_json(tmp_path / "a.json", A_CASES)
    b = bench_json(tmp_path / "b.json", B_CASES)
    rows, only_a, only_b = compare(benchmark_cases(tmp_path / "a.json"), benchmark_cases(tmp_path / "b.json"))
    by_name = {r.a.label: r for r in rows}
    assert by_name["test_precision[multiply]"].mse_ratio == pytest.approx(20.0)
    assert by_name["test_precision[multiply]"].time_ratio == pytest.approx(1.05)
    assert by_name["test_precision[multiply]"].regressions == ["MSE 20x worse"]
    assert by_name["test_precision[linear]"].regressions == ["1.5x slower"]
    assert by_name["test_precision[read]"].regressions == ["diverged (no MSE)"]
    assert by_name["test_conv[fft-1024]"].mse_ratio is None and by_name["test_conv[fft-1024]"].regressions == []
    assert by_name["test_sharp[exact]"].mse_ratio == 1.0 and by_name["test_sharp[exact]"].regressions == []
    assert [c.label for c in only_a] == ["test_precision[gone]"] and [c.label for c in only_b] == ["test_precision[new]"]

    assert main([a, b]) == 1
    out = capsys.readouterr().out
    assert "MSE 20x worse" in out and "1.5x slower" in out and "ok -> diverged" in out
    assert "only in A (1):\n  test_precision[gone]" in out and "only in B (1):\n  test_precision[new]" in out
    assert "5 cases compared, 3 regressions, 1 only in A, 1 only in B" in out
    # looser thresholds: only the diverged case is left, and it still fails
    assert main([a, b, "--mse-threshold", "30", "--speed-threshold", "2"]) == 1
    assert "1 regressions" in capsys.readouterr().out
    assert main([a, a]) == 0  # a file against itself: nothing flagged, one-sided cases do not fail


def test_ratio_of_exact_zeros():
    assert ratio(0.0, 0.0) == 1.0 and math.isinf(ratio(1e-30, 0.0)) and ratio(None, 1.0) is None
    assert ratio(3e-6, 1e-6) == pytest.approx(3.0)


def record(cfg, mse, status="ok", train_time_s=1.0) -> RunResult:
    now = dt.datetime.now(dt.timezone.utc).isoformat()
    return RunResult(config=cfg, config_hash=cfg.hash, status=status, steps_done=cfg.steps, eval_mse=mse,
                     floor=1e-15, curve=[], param_count=1, wall_time_s=train_time_s + 0.5, train_time_s=train_time_s,
                     environment={}, started_at=now, finished_at=now, message=None if status == "ok" else "boom")


def test_results_folders_by_config_hash(tmp_path, capsys):
    def cfg(seed):
        return make_run_config(task={"name": "multiply", "params": {"width": 4, "length": 8}},
                               model={"name": "baseconv", "params": {"width": 8, "depth": 1}}, steps=100, seed=seed)

    a, b = tmp_path / "a", tmp_path / "b"
    write_result(record(cfg(0), 1e-6, train_time_s=10.0), a)  # 0.1 s/step
    write_result(record(cfg(0), 1.5e-6, train_time_s=20.0), b)  # MSE 1.5x (ok), 2x slower per step
    write_result(record(cfg(1), 1e-6), a)
    write_result(record(cfg(1), None, status="failed"), b)
    write_result(record(cfg(2), 1e-6), a)  # only in A
    write_result(record(cfg(3), 1e-6), b)  # only in B
    assert main([str(a), str(b)]) == 1
    out = capsys.readouterr().out
    line0 = next(line for line in out.splitlines() if line.startswith(cfg(0).hash))
    assert "seed0" in line0 and " 1.5 " in line0 and line0.endswith("  2x slower")  # MSE 1.5x: within 10x
    line1 = next(line for line in out.splitlines() if line.startswith(cfg(1).hash))
    assert "ok -> failed" in line1 and "failed (no MSE)" in line1
    assert f"only in A (1):\n  {cfg(2).hash}" in out and f"only in B (1):\n  {cfg(3).hash}" in out
    assert "s/step A" in out
    assert main([str(a), str(b), "--speed-threshold", "3"]) == 1  # the failed run still counts
    assert main([str(a), str(a)]) == 0


def test_invalid_inputs_exit_2(tmp_path, capsys):
    j = bench_json(tmp_path / "a.json", A_CASES)
    (tmp_path / "runs").mkdir()
    assert main([j, str(tmp_path)]) == 2
    assert "compare two of a kind" in capsys.readouterr().err
    assert main([j, str(tmp_path / "missing.json")]) == 2
    assert main([j, j, "--speed-threshold", "0.8"]) == 2
    assert "must be >= 1, got 0.8" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text("{")
    assert main([j, str(tmp_path / "bad.json")]) == 2
    assert "not a readable benchmark JSON" in capsys.readouterr().err
    assert main([str(tmp_path / "bad"), j]) == 2
