"""bench.studies.step_model: the step's model against the loss at the end of a run, in the run's and in float64
arithmetic, its files, and its refusals."""
from __future__ import annotations

import json

import pytest

from bench.harness.config import RunConfigError, make_run_config
from bench.grids import matrix_free_lm
from bench.harness.records import checkpoint_path
from bench.studies.step_model import check_run, main
from bench.harness.train import run

pytestmark = pytest.mark.usefixtures("one_thread")

TASK = {"name": "multiply", "params": {"width": 4, "length": 5}}
MODEL = {"name": "baseconv", "params": {"width": 6, "depth": 1, "mlp": False, "conv_kind": "long"}}


def test_the_check_at_a_runs_end_in_its_own_and_in_float64_arithmetic(tmp_path):
    cfg = make_run_config(task=TASK, model=MODEL, steps=4, eval_size=64, eval_every=1, keep_final_state=True,
                          optimizer=matrix_free_lm(train_size=32, curvature_size=8))
    run(cfg, tmp_path, progress=False)
    own, wide = check_run(cfg.hash, tmp_path), check_run(cfg.hash, tmp_path, float64=True)
    assert (own["arithmetic"], wide["arithmetic"]) == ("float32", "float64")
    assert (own["curvature_size"], own["train_size"]) == (8, 32)
    for c in (own, wide):
        assert [a["fraction"] for a in c["along"]] == [0.125, 0.25, 0.5, 1.0]
        assert c["d_G_whole_d"] > 0 and c["along"][0]["actual"] > 0
    # at a loss far above float32's rounding the two arithmetics take the same step, to float32's digits
    assert wide["mse"] == pytest.approx(own["mse"], rel=1e-5)
    assert wide["d_G_whole_d"] == pytest.approx(own["d_G_whole_d"], rel=1e-3)
    assert main([cfg.hash, "--results", str(tmp_path), "--out", str(tmp_path / "out"), "--float64"]) == 0
    written = json.loads((tmp_path / "out" / f"{cfg.hash}_float64.json").read_text())
    assert written["along"][-1]["fraction"] == 1.0
    table = (tmp_path / "out" / "step_model.md").read_text()
    assert table.count(cfg.hash) == 4 and "actual / whole-set model" in table


def test_the_check_refuses_a_run_it_cannot_check(tmp_path):
    with pytest.raises(RunConfigError, match="no record of run 0123456789abcdef"):
        check_run("0123456789abcdef", tmp_path)
    adam = make_run_config(task=TASK, model=MODEL, steps=3, eval_size=64, keep_final_state=True)
    run(adam, tmp_path, progress=False)
    with pytest.raises(RunConfigError, match="did not end with the matrix-free LM"):
        check_run(adam.hash, tmp_path)
    no_state = make_run_config(task=TASK, model=MODEL, steps=2, eval_size=64,
                               optimizer=matrix_free_lm(train_size=16))
    run(no_state, tmp_path, progress=False)
    checkpoint_path(no_state, tmp_path).unlink()  # as on a fresh clone: checkpoints are not committed
    with pytest.raises(RunConfigError, match="no kept final state or checkpoint"):
        check_run(no_state.hash, tmp_path)
