"""Every committed record in results/runs/ loads and keeps the hash it is stored under; the retired fields of the
runs that set them are kept, and those runs tabulate and are not trained again."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.harness.config import RunConfigError, config_hash, load_stored_config, make_run_config
from bench.harness.records import load_result, load_results, read_record

RESULTS = Path(__file__).resolve().parents[1] / "results"
RECORDS = sorted((RESULTS / "runs").glob("*.json"))
# the committed runs whose Levenberg-Marquardt set an option since retired to a value the solver no longer computes
RETIRED_RUNS = {"19d4a0d905312531": {"recycle": 300}, "5dade19a467191c0": {"plane_damping": "slice_fidelity"},
                "d504b0e98224ddf8": {"plane_gradient": True}}


def test_every_committed_record_loads_under_its_stored_hash():
    assert len(RECORDS) > 200
    for path in RECORDS:
        raw = json.loads(path.read_text())
        record = read_record(path)
        assert record.config_hash == raw["config_hash"] == path.stem
        assert record.config.hash == path.stem, path.name  # RunConfig.hash of the loaded config
        assert config_hash(raw["config"]) == path.stem, path.name  # the stored dict as it is
        # the loaded config written out and read back names the same run
        assert config_hash(json.loads(record.config.model_dump_json())) == path.stem, path.name


def test_the_runs_that_set_a_retired_option_keep_it_and_no_other_run_has_one():
    found = {}
    for record in load_results(RESULTS, on_bad=pytest.fail):
        for opt in (record.config.optimizer, record.config.polish):
            if getattr(opt, "retired", None):
                found[record.config_hash] = opt.retired
    assert found == RETIRED_RUNS


def test_a_run_with_a_retired_option_tabulates_and_is_refused_for_training():
    from bench.reporting.frames import budget_text, run_row
    from bench.solvers.optimizers import make_optimizer

    record = load_result("19d4a0d905312531", RESULTS)
    row = run_row(record.config, record)
    assert row["optimizer"] == "adam" and record.eval_mse == pytest.approx(5.0e-10, rel=0.05)
    assert budget_text(record.config).startswith("adam 24000 steps x batch 64, then Levenberg-Marquardt on 16384")
    with pytest.raises(RunConfigError, match=r"recycle: retired \(docs/optimizers.md\); this stored run set it to 300"):
        make_optimizer(record.config.polish, record.config.build_model())
    # the same config as a user would write it is refused before anything is built
    with pytest.raises(RunConfigError, match=r"polish.recycle: retired \(gained ~1% a step"):
        make_run_config(**json.loads(record.config.model_dump_json()))


def test_a_stored_config_in_the_record_layout_did_what_its_retired_fields_defaulted_to():
    """A record written before plane_damping existed ran the plane with mu by the slice's fidelity (its default
    then); the same dict in today's layout (with `cg`) means today's solver, mu by rho."""
    raw = json.loads((RESULTS / "runs" / "5dade19a467191c0.json").read_text())["config"]
    assert "plane_damping" not in raw["polish"] and raw["polish"]["whole_set_plane"]
    assert load_stored_config(raw).polish.retired == {"plane_damping": "slice_fidelity"}
    today = load_stored_config(raw).model_dump()
    today["polish"] = {k: v for k, v in today["polish"].items() if k != "plane_damping"}
    assert load_stored_config(today).polish.retired == {} and config_hash(today) != "5dade19a467191c0"
    assert config_hash(today) == make_run_config(**today).hash
