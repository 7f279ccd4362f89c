"""python -m bench limits: the verdict rule, the evidence's numbers, the table beside the committed rows, bad input."""
from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch

from bench.experiments import limits
from bench.experiments.limits_evidence import (
    ARCHITECTURE,
    AT_FLOOR,
    HELD_OUT_GAIN,
    OPTIMIZER,
    VERDICTS,
    Evidence,
    precision_level,
    predicted_ratio,
    still_gaining,
    verdict,
)

MULTIPLY_FLOOR = 6.4e-16


def ev(**fields) -> Evidence:
    base = dict(status="ok", eval_mse=1e-3, floor=MULTIPLY_FLOOR, level=MULTIPLY_FLOOR, gaining=False,
                train_mse=1e-3, lm_steps=20, damping=1e-9, step_residual=0.999, gn_ratio=0.99, held_out_gain=0.98)
    return Evidence(**{**base, **fields})


# ---- the rule ---------------------------------------------------------------------------------------------------


def test_each_verdict_is_reachable_from_its_evidence():
    assert verdict(ev(eval_mse=6.22e-14))[0] == AT_FLOOR  # grid 7's BaseConv multiply: 97x the floor
    assert verdict(ev(eval_mse=6e-13, train_mse=6e-13))[0] == AT_FLOOR  # 940x
    assert verdict(ev(eval_mse=1e-12, train_mse=1e-12))[0] == ARCHITECTURE  # 1560x, flat, no step helps held-out
    assert verdict(ev(gaining=True))[0] == OPTIMIZER
    assert verdict(ev(gaining=None))[0] == OPTIMIZER  # too short a curve to tell
    assert verdict(ev(lm_steps=0))[0] == OPTIMIZER  # the recipe's second-order phase never ran
    assert verdict(ev(lm_steps=None))[0] == ARCHITECTURE  # a recipe without one (READ's), checked all the same
    assert verdict(ev(held_out_gain=None))[0] == OPTIMIZER  # no final state: no check, cannot tell
    assert verdict(ev(held_out_gain=0.5))[0] == OPTIMIZER  # a second-order step halves the held-out MSE
    assert verdict(ev(held_out_gain=0.5, gn_ratio=1.0))[0] == OPTIMIZER  # the training set's GN ratio does not decide
    assert verdict(ev(eval_mse=2e-2))[0] == OPTIMIZER  # eval 20x train: the training set was fitted, not the task
    # grid 7's softmax attention on multiply: L-BFGS flat at 0.94, then LM fits its 16 problems (0.545) while the
    # eval MSE rises to 2.46: flat on the task, and (here, by hand) no step helps held-out problems
    assert verdict(ev(eval_mse=2.46, train_mse=0.545, gn_ratio=0.887))[0] == ARCHITECTURE
    assert verdict(ev(status="diverged", eval_mse=None)) == ("diverged", "the run did not end ok: no verdict")


def test_the_floor_rule_reads_the_precision_level_not_a_zero_floor():
    assert verdict(ev(floor=0.0, level=1e-16, eval_mse=5e-14))[0] == AT_FLOOR  # 500x the level
    assert verdict(ev(floor=0.0, level=1e-16, eval_mse=5e-13))[0] == ARCHITECTURE


def test_still_gaining_is_the_polish_switchs_stall_rule_on_the_eval_mse():
    def curve(evals, trains=None):
        trains = trains or evals
        return SimpleNamespace(curve=[SimpleNamespace(eval_mse=e, train_loss=t) for e, t in zip(evals, trains)])

    flat = [1.0, 0.4, 0.39, 0.39, 0.39, 0.39, 0.389]  # 0.389 vs 0.4 five evals before: less than 5% lower
    assert still_gaining(curve(flat)) is False
    assert still_gaining(curve(flat[:-1] + [0.37])) is True
    assert still_gaining(curve(flat, trains=[1, 1, 1, 1, 1, 1, 0.5])) is False  # a gain on the training set only
    assert still_gaining(curve([1.0, 0.5, 0.4])) is None


# ---- the evidence's numbers ---------------------------------------------------------------------------------------


def test_predicted_ratio_is_the_linear_least_squares_residual():
    g = torch.Generator().manual_seed(0)
    J = torch.randn(40, 6, generator=g, dtype=torch.float64)
    r = torch.randn(40, generator=g, dtype=torch.float64)
    jtj, jtr, rr = J.T @ J, J.T @ r, r.dot(r).item()
    d = torch.linalg.lstsq(J, -r.unsqueeze(1)).solution.squeeze(1)
    exact = (r + J @ d).pow(2).sum().item() / rr
    assert 0.5 < exact < 1.0  # 6 of 40 directions: most of r is out of J's range
    assert predicted_ratio(jtj, jtr, rr, 1e-12) == pytest.approx(exact, rel=1e-9)
    assert predicted_ratio(jtj, jtr, rr, 1e12) == pytest.approx(1.0, abs=1e-9)  # a huge damping: no step
    r_in_range = J @ torch.randn(6, generator=g, dtype=torch.float64)
    assert predicted_ratio(jtj, J.T @ r_in_range, r_in_range.dot(r_in_range).item(), 1e-12) < 1e-12
    singular = torch.cat([J, J[:, :1]], dim=1)  # a repeated column: J^T J singular, Cholesky needs the damping
    assert predicted_ratio(singular.T @ singular, singular.T @ r, rr, 0.0) == pytest.approx(exact, rel=1e-6)


def test_precision_level_is_the_floor_or_the_rounding_of_representable_targets():
    multiply = limits.cell_config("multiply", "baseconv", {}, 0, 10.0)
    assert precision_level(multiply, 6.4e-16) == 6.4e-16
    read = limits.cell_config("read", "baseconv", {}, 0, 10.0)
    level = precision_level(read, 0.0)
    # Gaussian targets: ulp^2/12 is 1.2e-15 at |y| in [1, 2) and less below; the mean sits below that
    assert 1e-16 < level < 1.2e-15


# ---- the recipe -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("task", limits.TASKS)
def test_every_built_in_fits_the_dense_solver_and_the_lm_set_outnumbers_its_weights(task):
    for model in limits.COMMITTED_MODELS:
        cfg = limits.cell_config(task, model, {}, 0, 10.0)
        task_obj = cfg.build_task()
        weights = sum(p.numel() for p in cfg.build_model(task_obj).parameters())
        assert weights <= limits.MAX_PARAMS
        lm = cfg.polish or cfg.optimizer
        if lm.name == "levenberg_marquardt":
            scored = int(task_obj.sample(1, generator=torch.Generator()).mask.sum()) * task_obj.d_out
            assert lm.train_size * scored >= weights, (model, lm.train_size * scored, weights)
        assert cfg.steps == limits.CELLS[task].steps and cfg.polish_after in (None, limits.CELLS[task].lbfgs_steps)


def test_stem_names_the_model_its_params_and_non_default_seed_and_budget():
    assert limits.stem("baseconv", {}, 0, limits.DEFAULT_BUDGET_S) == "baseconv"
    assert limits.stem("mix.mod:Gated", {"k": 3}, 2, 60.0) == "mix.mod.Gated-k=3-seed2-60s"


# ---- the command ------------------------------------------------------------------------------------------------


def one_line_error(capsys, argv) -> str:
    assert limits.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path):
    assert "unknown model 'nope'" in one_line_error(capsys, ["--model", "nope", "--results", str(tmp_path)])
    assert "nomodule" in one_line_error(capsys, ["--model", "nomodule:Mixer", "--results", str(tmp_path)])
    err = one_line_error(capsys, ["--model", "baseconv", "--tasks", "read", "sort", "--results", str(tmp_path)])
    assert "--tasks: unknown task 'sort'" in err
    assert "--budget-s" in one_line_error(capsys, ["--model", "baseconv", "--budget-s", "0"])
    assert "--jobs" in one_line_error(capsys, ["--model", "baseconv", "--jobs", "0"])
    assert "--model-param" in one_line_error(capsys, ["--model", "baseconv", "--model-param", "width"])
    # too many weights for the dense solver: refused before anything trains
    err = one_line_error(capsys, ["--model", "baseconv", "--model-param", "width=64", "--tasks", "multiply",
                                  "--results", str(tmp_path)])
    assert "max_params=8000" in err
    assert not list((tmp_path / "runs").glob("*.json"))


def committed_file(folder, model: str, task: str, eval_mse: float) -> None:
    row = {"task": task, "model": model, "config_hash": f"{abs(hash(model)):016x}"[:16], "eval_mse": eval_mse,
           "train_mse": eval_mse, "floor": 9.38e-14, "level": 9.38e-14, "gaining": False, "lm_steps": 12,
           "damping": 1e-9, "step_residual": 1.0, "gn_ratio": 0.99, "params": 2500, "train_time_s": 60.0,
           "verdict": AT_FLOOR}
    (folder / f"{model}.json").write_text(json.dumps({"rows": [row]}))


def test_the_table_puts_the_committed_rows_beside_the_model(tmp_path, monkeypatch, capsys):
    committed = tmp_path / "committed"
    committed.mkdir()
    for model, mse in zip(limits.COMMITTED_MODELS, (1.5e-11, 2.5e-12, 3.5e-13)):
        committed_file(committed, model, "linear", mse)
    monkeypatch.setattr(limits, "COMMITTED", committed)
    results = tmp_path / "results"
    argv = ["--model", "linear_attention", "--tasks", "linear", "--budget-s", "0.5", "--jobs", "1",
            "--results", str(results)]
    threads = torch.get_num_threads()
    try:
        assert limits.main(argv) == 0  # --jobs 1 trains in this process, at one thread
    finally:
        torch.set_num_threads(threads)
    text = (results / "limits" / "linear_attention-0.5s.md").read_text()
    assert text in capsys.readouterr().out
    lines = [line for line in text.splitlines() if line.startswith("| linear ")]
    assert [line.split("|")[2].strip() for line in lines] == [
        "linear_attention", "attention (committed)", "linear_attention (committed)", "baseconv (committed)"]
    assert "1.50e-11" in lines[1] and "3.50e-13" in lines[3]
    data = json.loads((results / "limits" / "linear_attention-0.5s.json").read_text())
    (row,) = data["rows"]
    assert row["verdict"] == OPTIMIZER and row["lm_steps"] == 0  # half a second: L-BFGS only
    # one L-BFGS step in, a Gauss-Newton step on 64 of its problems brings fresh problems closer; on those 64
    # (2,560 residuals for 2,509 weights) the linear model promises far more than fresh problems give
    assert 0 < row["held_out_gain"] < HELD_OUT_GAIN and row["gn_ratio"] < row["held_out_gain"] / 100
    assert (results / "runs" / f"{row['config_hash']}.json").exists()
    assert data["command"] == "python -m bench limits " + " ".join(argv)


def test_the_committed_tables_hold_every_cell_of_the_three_built_ins():
    for model in limits.COMMITTED_MODELS:
        data = json.loads((limits.COMMITTED / f"{model}.json").read_text())
        assert [r["task"] for r in data["rows"]] == list(limits.TASKS), model
        for row in data["rows"]:
            cfg = limits.cell_config(row["task"], model, {}, 0, limits.DEFAULT_BUDGET_S)
            assert row["config_hash"] == cfg.hash  # the recipe still builds the runs the rows came from
            assert (limits.REPO_ROOT / "results" / "runs" / f"{cfg.hash}.json").exists()
            assert row["verdict"] in VERDICTS and row["eval_mse"] > 0
