"""bench.studies.eval_spread: a run's final weights scored on its own eval set (the record's number again), on fresh
sets and on a large one; its files and its refusals."""
from __future__ import annotations

import pytest
import torch

from bench.harness.config import RunConfigError, make_run_config
from bench.studies.eval_spread import main, per_problem_mse, spread
from bench.harness.records import checkpoint_path, load_model
from bench.harness.train import run
from primitives import stream_generator

pytestmark = pytest.mark.usefixtures("one_thread")

MODEL = {"name": "baseconv", "params": {"width": 6, "depth": 1, "mlp": False, "conv_kind": "long"}}
MULTIPLY = {"name": "multiply", "params": {"width": 4, "length": 5}}
GD_STEP = {"name": "gd_step", "params": {"D": 3, "N": 6}}


@pytest.mark.parametrize("task", [MULTIPLY, GD_STEP], ids=["multiply", "gd_step"])
def test_the_per_problem_mse_averages_to_the_tasks_own_mse(tmp_path, task):
    cfg = make_run_config(task=task, model=MODEL, steps=2, eval_size=64, keep_final_state=True)
    run(cfg, tmp_path, progress=False)
    model, t = load_model(cfg, tmp_path), cfg.build_task()
    errors = per_problem_mse(model, t, 300, 7, chunk=128)  # chunks of 128: the last one short
    batch = t.sample(300, generator=stream_generator(7, "eval"), dtype=torch.float32)
    assert errors.shape == (300,) and (errors >= 0).all()
    assert errors.mean().item() == pytest.approx(t.metrics(model(batch.inputs), batch)["mse"], rel=1e-5)


def test_the_spread_of_a_run_reproduces_its_eval_mse_and_scores_fresh_sets(tmp_path):
    cfg = make_run_config(task=MULTIPLY, model=MODEL, steps=3, eval_size=64, keep_final_state=True)
    result = run(cfg, tmp_path, progress=False)
    c = spread(cfg.hash, tmp_path, fresh=3, large=500)
    assert c["own_set_mse"] == pytest.approx(result.eval_mse, rel=1e-5)
    assert len(c["fresh_set_mse"]) == 3 and len(set(c["fresh_set_mse"])) == 3  # three other sets, three numbers
    assert c["own_set_mse"] not in c["fresh_set_mse"]
    assert 0.01 <= c["large_top_1pct_share"] <= 1 and c["large_median_problem"] <= c["large_mse"] * 10


def test_the_spread_is_a_stored_evaluation_that_tables_format(tmp_path):
    """eval-spread stores each run's spread keyed by its record, weights and parameters; `tables` formats every
    stored one, and marks it once the run's record changes."""
    from bench.harness import evaluations
    from bench.harness.records import load_result, write_result
    from bench.reporting import tables

    cfg = make_run_config(task=MULTIPLY, model=MODEL, steps=3, eval_size=64, keep_final_state=True)
    run(cfg, tmp_path, progress=False)
    assert main([cfg.hash, "--results", str(tmp_path), "--fresh", "2", "--large", "0"]) == 0
    s = evaluations.spec("eval_spread", fresh=2, large=0)
    record = load_result(cfg, tmp_path)
    found = evaluations.lookup(tmp_path, cfg.hash, s, record=record,
                               weights=evaluations.current_weights(cfg.hash, tmp_path))
    assert found.status == "ok" and len(found.result["fresh_set_mse"]) == 2 and "large_mse" not in found.result
    out = tables.Output(tmp_path / "tables", tmp_path / "figures")
    tables.build(tmp_path, out, "ci", only=["eval_spread"], log=lambda m: None)
    table = (tmp_path / "tables" / "eval_spread.md").read_text()
    assert cfg.hash in table and "2 fresh sets of 64" in table and "| ok " in table
    write_result(record.model_copy(update={"eval_mse": 1.0}), tmp_path)
    tables.build(tmp_path, out, "ci", only=["eval_spread"], log=lambda m: None)
    assert f"stale (the record changed since): `python -m bench eval-spread {cfg.hash}`" in \
        (tmp_path / "tables" / "eval_spread.md").read_text()


def test_the_spread_refuses_a_run_it_cannot_score(tmp_path):
    with pytest.raises(RunConfigError, match="no record of run 0123456789abcdef"):
        spread("0123456789abcdef", tmp_path)
    cfg = make_run_config(task=MULTIPLY, model=MODEL, steps=2, eval_size=64)
    run(cfg, tmp_path, progress=False)
    checkpoint_path(cfg, tmp_path).unlink()  # as on a fresh clone: checkpoints are not committed
    with pytest.raises(RunConfigError, match="no kept final state or checkpoint"):
        spread(cfg.hash, tmp_path)
    with pytest.raises(SystemExit):
        main([cfg.hash, "--fresh", "-1"])
