"""bench.floors: the precision gate fails on a worse, diverged or missing case and passes otherwise;
results/floors.json covers every smoke case with a measured MSE times the stated margin."""
from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from bench import floors, grids

REPO = Path(__file__).resolve().parent.parent


pytestmark = pytest.mark.usefixtures("one_thread_module")


def bench_json(path: Path, cases: dict[str, dict]) -> Path:
    """A pytest-benchmark JSON of precision cases (extra_info as bench/test_precision.py writes it)."""
    benchmarks = [{"name": f"test_precision[{c}]", "stats": {"mean": 1.0},
                   "extra_info": {"case_id": c, "status": "ok", "config_hash": "0123456789abcdef", **info}}
                  for c, info in cases.items()]
    path.write_text(json.dumps({"machine_info": {"profile": "smoke", "cpu": {"brand_raw": "test"}},
                                "benchmarks": benchmarks}))
    return path


def floors_file(path: Path, floors_by_case: dict[str, float], margin: float = 10.0) -> Path:
    path.write_text(json.dumps({"margin": margin, "cases": {
        c: {"floor_mse": f, "measured_mse": f / margin, "config_hash": "0123456789abcdef"}
        for c, f in floors_by_case.items()}}))
    return path


def test_case_ids_are_readable_and_distinct():
    configs = grids.primitives("smoke")
    ids = [floors.case_id(c) for c in configs]
    assert len(set(ids)) == len(ids)
    assert "multiply/attention/depth1/prenorm=False/adam/float32" in ids
    assert floors.case_id(configs[0]) == floors.case_id(grids.primitives("smoke")[0])


def test_check_passes_within_and_fails_when_worse(tmp_path, capsys):
    f = floors_file(tmp_path / "floors.json", {"a": 1e-4, "b": 1e-2})
    within = bench_json(tmp_path / "within.json", {"a": {"eval_mse": 9.9e-5}, "b": {"eval_mse": 1e-2}})
    assert floors.main(["--check", str(within), "--floors", str(f)]) == 0
    assert "precision gate: ok" in capsys.readouterr().out

    worse = bench_json(tmp_path / "worse.json", {"a": {"eval_mse": 2e-4}, "b": {"eval_mse": 1e-3}})
    assert floors.main(["--check", str(worse), "--floors", str(f)]) == 1
    out = capsys.readouterr()
    row = next(line for line in out.out.splitlines() if line.startswith("| a "))
    assert "worse" in row and "2.000e-04" in row and "1.000e-04" in row
    assert "FAILED, 1 of 2" in out.err


def test_a_diverged_case_fails_the_gate(tmp_path, capsys):
    f = floors_file(tmp_path / "floors.json", {"a": 1e-4})
    diverged = bench_json(tmp_path / "out.json", {"a": {"eval_mse": None, "status": "diverged"}})
    assert floors.main(["--check", str(diverged), "--floors", str(f)]) == 1
    assert "diverged" in capsys.readouterr().out
    verdicts = floors.check(json.loads(f.read_text()), {"a": {"status": "ok", "eval_mse": math.nan}})
    assert [v.outcome for v in verdicts] == ["diverged"]


def test_a_missing_case_fails_and_a_new_one_does_not(tmp_path, capsys):
    f = floors_file(tmp_path / "floors.json", {"a": 1e-4, "b": 1e-4})
    out = bench_json(tmp_path / "out.json", {"a": {"eval_mse": 1e-5}, "c": {"eval_mse": 1.0}})
    assert floors.main(["--check", str(out), "--floors", str(f)]) == 1
    text = capsys.readouterr().out
    assert "| b " in text and "missing" in text and "no floor" in text
    only_new = bench_json(tmp_path / "new.json", {"a": {"eval_mse": 1e-5}, "b": {"eval_mse": 1e-5},
                                                  "c": {"eval_mse": 1.0}})
    assert floors.main(["--check", str(only_new), "--floors", str(f)]) == 0


def test_update_sets_floor_to_measured_times_margin(tmp_path):
    out = bench_json(tmp_path / "out.json", {"a": {"eval_mse": 3e-6}, "b": {"eval_mse": 0.5}})
    f = tmp_path / "floors.json"
    assert floors.main(["--update", str(out), "--floors", str(f), "--margin", "4"]) == 0
    written = json.loads(f.read_text())
    assert written["margin"] == 4
    assert written["cases"]["a"]["floor_mse"] == pytest.approx(1.2e-5)
    assert written["cases"]["b"]["measured_mse"] == 0.5
    assert floors.main(["--check", str(out), "--floors", str(f)]) == 0  # a run passes its own floors
    with pytest.raises(SystemExit, match="did not finish"):
        floors.make_floors({"a": {"status": "diverged", "eval_mse": None}}, {})


def test_committed_floors_cover_every_smoke_case():
    data = json.loads((REPO / "results" / "floors.json").read_text())
    smoke = {floors.case_id(c): c.hash for c in grids.primitives("smoke")}
    assert set(data["cases"]) == set(smoke)
    margin = data["margin"]
    assert margin > 1 and data["margin_reason"]
    for case, entry in data["cases"].items():
        assert entry["floor_mse"] == pytest.approx(entry["measured_mse"] * margin)
        assert entry["config_hash"] == smoke[case]  # measured with the config the smoke profile runs now
    ratios = [v["ratio"] for v in data["spread"].values() if v.get("ratio")]
    assert ratios and margin >= max(ratios)  # the margin covers the measured seed / thread spread
