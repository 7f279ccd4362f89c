"""python -m bench tables --check: the committed tables are what the code makes of the committed results (a stale
table fails here), in well under a minute of one core; and the check fails when a record changes under them."""
from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import pytest

from bench import grids
from bench.reporting import tables

pytestmark = pytest.mark.usefixtures("one_thread_module")

RESULTS = Path(__file__).resolve().parents[1] / "results"


def test_the_committed_tables_are_what_the_code_makes(capsys):
    t0 = time.process_time()
    code = tables.main(["--results", str(RESULTS), "--check"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert out.strip().endswith(f"{RESULTS / 'tables'} is what the code makes of {RESULTS}")
    assert time.process_time() - t0 < 60  # CPU seconds: the test command runs it


def copy_of_results(target: Path) -> Path:
    """What the tables read, copied (final states linked: they are only read)."""
    target.mkdir()
    for name in ("runs", "evaluations", "tables"):
        shutil.copytree(RESULTS / name, target / name)
    (target / "benchmarks").mkdir()
    for path in (RESULTS / "benchmarks").glob("precision-*.json"):
        shutil.copy(path, target / "benchmarks" / path.name)
    (target / "final_states").symlink_to(RESULTS / "final_states")
    return target


def test_the_check_fails_when_one_record_changed(tmp_path, capsys):
    results = copy_of_results(tmp_path / "results")
    cfg = next(c for c in grids.primitives("ci") if (results / "runs" / f"{c.hash}.json").exists()
               and json.loads((results / "runs" / f"{c.hash}.json").read_text())["status"] == "ok")
    path = results / "runs" / f"{cfg.hash}.json"
    record = json.loads(path.read_text())
    before = record["eval_mse"]
    record["eval_mse"] = before * 3
    path.write_text(json.dumps(record, indent=1) + "\n")
    assert tables.main(["--results", str(results), "--check"]) == 1
    out = capsys.readouterr().out
    assert f"{results / 'tables' / 'primitives.md'}: differs from what the code makes" in out
    assert f"{before * 3:.2e}" in out and f"{before:.2e}" in out  # the cell, as committed and as made
    assert out.strip().splitlines()[-1].startswith("tables --check: ")
    assert "difference(s) from" in out
