"""bench.reporting.tables and bench.harness.iterate: tables and figures from records, the learned-GD iteration.

Table tests use synthetic records (made-up MSEs written with bench.harness.records, so the
layout can be checked against known numbers); the iteration tests measure real curves.
"""
from __future__ import annotations

import datetime as dt
import json
import math

import pandas as pd
import pytest
import torch

from bench import grids
from bench.harness import evaluations, iterate
from bench.reporting import tables
from bench.harness.records import CurvePoint, RunResult, write_result
from primitives import algorithms as alg


pytestmark = pytest.mark.usefixtures("one_thread_module")


def fake_result(cfg, mse, status="ok") -> RunResult:
    """A synthetic record of `cfg` whose final eval MSE is `mse` (None when diverged)."""
    now = dt.datetime.now(dt.timezone.utc).isoformat()
    curve = [CurvePoint(step=0, eval_mse=1.0, lr=1e-3), CurvePoint(step=cfg.steps, eval_mse=mse, lr=1e-4)]
    return RunResult(config=cfg, config_hash=cfg.hash, status=status, steps_done=cfg.steps,
                     eval_mse=mse if status == "ok" else None, best_eval_mse=mse if status == "ok" else None,
                     eval_rel=1e-3, floor=1e-15, curve=curve, param_count=1, wall_time_s=1.0, train_time_s=1.0,
                     steps_per_s=float(cfg.steps), environment={}, started_at=now, finished_at=now)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Synthetic records for part of the ci grids, tables built from them (no iteration)."""
    root = tmp_path_factory.mktemp("results")
    prim = grids.primitives("ci")
    mse = {}
    for i, cfg in enumerate(prim):
        if cfg.task.name == "multiply" and cfg.model.params["depth"] in (1, 2) and cfg.model.params.get("mlp", True):
            value = 10.0 ** -(3 + i % 5)
            if cfg.model.name == "linear_attention" and cfg.model.params["depth"] == 1 and cfg.model.params["prenorm"]:
                write_result(fake_result(cfg, None, status="diverged"), root)
                continue
            write_result(fake_result(cfg, value), root)
            mse[(cfg.model.name, cfg.model.params["depth"], cfg.model.params["prenorm"])] = value
    ls = [c for c in grids.gd_k_least_squares("ci") if c.task.name == "least_squares" and c.model.name == "attention"]
    for j, cfg in enumerate(ls):
        write_result(fake_result(cfg, 10.0 ** -(2 + j)), root)
    out = tables.Output(root / "tables", root / "figures")
    tables.build(root, out, "ci", iterate=False)
    return root, out, mse, ls


def test_every_table_has_markdown_csv_and_latex(built):
    root, out, _, _ = built
    for name in ("headline", "primitives", "least_squares_depth", "gd_step", "paper_comparison", "dtype", "optimizer"):
        for ext in ("md", "csv", "tex"):
            assert (root / "tables" / f"{name}.{ext}").stat().st_size > 0, f"{name}.{ext}"
    for fig in ("mse_vs_depth_multiply", "mse_vs_depth_least_squares", "mse_vs_optimizer", "training_curves_multiply"):
        assert (root / "figures" / f"{fig}.png").stat().st_size > 1000
    assert "Budget: ci budget" in (root / "tables" / "primitives.md").read_text()


def test_primitives_table_cells(built):
    root, _, mse, _ = built
    t = pd.read_csv(root / "tables" / "primitives.csv", dtype=str)
    row = t[(t["task"] == "multiply") & (t["model"] == "baseconv") & (t["prenorm"] == "off")].iloc[0]
    assert row["depth 2"] == f"{mse[('baseconv', 2, False)]:.2e}"
    assert row["depth 8"] == "missing"
    la = t[(t["task"] == "multiply") & (t["model"] == "linear_attention") & (t["prenorm"] == "on")].iloc[0]
    assert la["depth 1"] == "diverged"
    assert "12 of 74 runs finished (1 diverged)" in (root / "tables" / "primitives.md").read_text()


def test_headline_is_the_best_over_configs(built):
    root, _, mse, _ = built
    t = pd.read_csv(root / "tables" / "headline.csv", dtype=str).set_index("task")
    for model in ("attention", "linear_attention", "baseconv"):
        best = min(v for (m, _, _), v in mse.items() if m == model)
        assert t.loc["multiply", model] == f"{best:.2e}"


def test_paper_figure_next_to_ours_with_budgets(built):
    root, _, _, ls = built
    t = pd.read_csv(root / "tables" / "paper_comparison.csv", dtype=str)
    row = t[t["quantity"].str.startswith("softmax attention trained end to end")].iloc[0]
    assert row["paper (MSE)"] == "1.00e-09"
    assert row["ours (MSE)"] == f"{10.0 ** -(2 + len(ls) - 1):.2e}"  # the deepest synthetic run is the best
    assert "300 steps x batch 32" in row["our budget"]
    assert "1M steps" in (root / "tables" / "paper_comparison.md").read_text()


def test_benchmark_json_table(tmp_path):
    path = tmp_path / "out.json"
    path.write_text(json.dumps({"machine_info": {"profile": "smoke"}, "benchmarks": [
        {"name": "x", "stats": {"mean": 2.5}, "extra_info": {"case_id": "multiply/baseconv", "status": "ok",
                                                            "eval_mse": 3.8e-5, "floor": 1e-15, "steps_per_s": 30.0,
                                                            "budget": "smoke: adam 400 steps"}},
        {"name": "not a precision case", "stats": {"mean": 1.0}, "extra_info": {}}]}))
    df = tables.benchmark_frame(path)
    assert df.to_dict("records")[0]["eval MSE"] == "3.80e-05" and len(df) == 1


# ---- bench.harness.iterate -------------------------------------------------------------------


class ExactGradient(torch.nn.Module):
    """Reads x, A, b from the gd_step tokens and outputs A^T (A x - b) / N at every position."""

    def __init__(self, D: int, dtype=torch.float32):
        super().__init__()
        self.D = D
        self.dummy = torch.nn.Parameter(torch.zeros(1, dtype=dtype))

    def forward(self, u):
        D = self.D
        g = alg.gradient(u[:, 1:, :D], u[:, 1:, D], u[:, 0, :D])
        return g.unsqueeze(1).expand(-1, u.shape[1], -1)


def test_learned_iteration_with_an_exact_model_is_true_gd():
    problem = iterate.sample_problems(8, 5, 20, torch.float32)
    learned = iterate.learned_gd_iterates(ExactGradient(5), problem, steps=30)
    true = iterate.true_gd_iterates(problem, 30, torch.float32)
    assert torch.equal(learned, true)


def test_learned_iteration_feeds_the_model_its_own_layout():
    from architectures.constructions import baseconv_gd_step_broadcast, broadcast_tokens

    problem = iterate.sample_problems(8, 5, 20, torch.float64)
    model = baseconv_gd_step_broadcast(5, 20, iterate.ETA, output="gradient", dtype=torch.float64).model
    learned = iterate.learned_gd_iterates(model, problem, steps=20, tokens=broadcast_tokens)
    true = iterate.true_gd_iterates(problem, 20, torch.float64)
    assert (learned - true).abs().max().item() <= 1e-12
    with pytest.raises(Exception, match="expected input of shape"):  # the first_token layout does not fit it
        iterate.learned_gd_iterates(model, problem, steps=1)


def test_gd_curves_iterate_each_learned_step_in_its_own_layout():
    from architectures.constructions import baseconv_gd_step_broadcast, broadcast_tokens

    model = baseconv_gd_step_broadcast(5, 20, iterate.ETA, output="gradient", dtype=torch.float64).model
    df = iterate.gd_iteration_curves([("broadcast", model, broadcast_tokens)], steps=40, batch=8,
                                     constructions=(), dtypes=("float64",))
    learned, true = (df[df["label"] == name].sort_values("iteration")["median_mse"].to_numpy()
                     for name in ("broadcast", "true GD (float64)"))
    assert abs(learned[0] - true[0]) == 0 and learned[-1] < 1e-3 * learned[0]  # it converges, from the same start
    assert abs(learned - true).max() <= 1e-12 * true.max()  # as true GD does, iteration by iteration
    with pytest.raises(Exception, match="expected input of shape"):  # without its layout: first_token
        iterate.gd_iteration_curves([("broadcast", model)], steps=1, batch=8, constructions=(), dtypes=("float64",))


def test_gd_curves_reach_the_float32_floor():
    df = iterate.gd_iteration_curves([("exact", ExactGradient(5))], steps=100, batch=16,
                                     dtypes=("float32",))
    levels = {label: iterate.level(g) for label, g in df.groupby("label")}
    assert levels["true GD (float32)"] < 1e-13  # the paper: about 5e-15 (median over problems)
    assert levels["exact"] == levels["true GD (float32)"]
    for name in ("baseconv construction (float32)", "linear_attention construction (float32)"):
        assert levels[name] < 1e-13  # the constructions iterate to the same floor as true GD
    start = df[(df["iteration"] == 0)]["median_mse"]
    assert (start > 0.1).all()


def test_shifted_metrics_out_of_distribution():
    cfg = grids.gd_step("ci")[0]
    model = ExactGradient(5, torch.float64).double()
    for scale in (0.25, 4.0):
        m = iterate.shifted_metrics(model.to(torch.float64), cfg, eval_size=64, x_scale=scale)
        assert m["mse"] < 1e-25  # float64 exact gradient: exact at any scale

    class Zero(ExactGradient):
        def forward(self, u):
            return torch.zeros(u.shape[0], u.shape[1], self.D, dtype=u.dtype)

    small = iterate.shifted_metrics(Zero(5), cfg, eval_size=64, x_scale=0.5)["mse"]
    large = iterate.shifted_metrics(Zero(5), cfg, eval_size=64, x_scale=2.0)["mse"]
    assert large == pytest.approx(16 * small, rel=0.5)  # the gradient grows with x: MSE of 0 by the square
    assert math.isfinite(small)


def test_learned_steps_are_the_best_run_per_model_and_optimizer():
    configs = [c for c in grids.second_order("ci") if c.task.name == "gd_step"]
    frame = tables.grid_frame(configs, {c.hash: fake_result(c, mse) for c, mse in zip(configs, (1e-4, 1e-7, 1e-13, 1e-9, 1e-20))})
    chosen = tables.learned_step_runs(frame)
    # float32 only: adam, lbfgs, levenberg_marquardt once each; the float64 runs are left out
    assert sorted(chosen["optimizer"]) == ["adam", "lbfgs", "levenberg_marquardt"]
    assert sorted(chosen["eval_mse"]) == [1e-13, 1e-7, 1e-4]
    lm = next(c for c in configs if c.optimizer.name == "levenberg_marquardt" and c.dtype == "float32")
    assert tables.budget_text(lm) == "Levenberg-Marquardt 60 steps on 1024 samples, width 18, float32"
    assert tables.learned_step_label("linear_attention", "adam") == "linear_attention learned step (adam)"
    polished = next(c for c in grids.second_order("ci") if c.polish is not None)
    assert tables.budget_text(polished).endswith("then Levenberg-Marquardt on 16 samples once stalled, width 32, float32")


def test_to_the_limit_table_stands_beside_grid_1_and_says_what_stopped_each_run(tmp_path):
    adam = {c.model.name: c for c in grids.primitives("ci") if c.task.name == "multiply"
            and c.model.params["depth"] == 2 and not c.model.params["prenorm"] and c.model.params.get("mlp", True)}
    lm = {c.model.name: c for c in grids.to_the_limit("ci") if c.task.name == "multiply" and c.dtype == "float32"
          and c.model.params["depth"] == 2 and not c.model.params["prenorm"]}
    for name, value in (("attention", 1e-2), ("baseconv", 1e-3)):
        write_result(fake_result(adam[name], value), tmp_path)
    write_result(fake_result(lm["attention"], 2e-2).model_copy(update={"train_loss": 1e-3}), tmp_path)  # eval >> train
    falling = fake_result(lm["baseconv"], 1e-9)
    falling = falling.model_copy(update={"train_loss": 1e-9, "curve": [
        CurvePoint(step=5 * i, eval_mse=10.0 ** -i, lr=1.0) for i in range(10)]})
    write_result(falling, tmp_path)
    out = tables.Output(tmp_path / "tables", tmp_path / "figures")
    tables.build(tmp_path, out, "ci", iterate=False, only=["to_the_limit"])
    t = pd.read_csv(tmp_path / "tables" / "to_the_limit.csv", dtype=str).set_index(["task", "model"])
    assert t.loc[("multiply", "baseconv"), "depth 2"] == "1.00e-09 / 1.00e-03"
    assert t.loc[("multiply", "attention"), "depth 2"] == "2.00e-02 / 1.00e-02"
    assert t.loc[("multiply", "linear_attention"), "depth 2"] == "missing / missing"
    d = pd.read_csv(tmp_path / "tables" / "to_the_limit_diagnostics.csv", dtype=str)
    verdict = {(r["model"], r["depth"], r["LayerNorm"], r["dtype"]): r["what stopped it"] for _, r in d.iterrows()}
    assert verdict[("baseconv", "2", "off", "float32")] == "time cap (still falling)"
    assert verdict[("attention", "2", "off", "float32")] == "training set (eval >> train)"
    assert verdict[("linear_attention", "2", "off", "float32")] == "missing"


def test_grid8_step_labels_say_how_each_run_was_trained():
    gd = [c for c in grids.to_the_limit("ci") if c.task.name == "gd_step" and c.dtype == "float32" and c.polish is None]
    slice_gd = [c for c in grids.to_the_limit_slice("ci") if c.polish is None]
    labels = [tables.grid8_step_label(c) for c in (gd[0], slice_gd[0])]
    assert labels[0] != labels[1] and "each slice's own step" in labels[1]
    whole = tables.grid8_step_label(grids.to_the_limit_whole_set("ci")[0])
    assert whole == ("baseconv paper model, adam, then matrix-free LM (curvature on the whole set) from the end of run "
                     "0088cf62c978ba1e, float32, 110 min")
    broadcast = tables.grid8_step_label(grids.to_the_limit_broadcast("ci")[1])
    assert broadcast == ("baseconv paper model, broadcast layout, adam, then matrix-free LM (curvature on the whole set), "
                         "float32, 80 min")
    *_, plane, _, _, recycled, more_problems = grids.to_the_limit_broadcast("ci")
    assert tables.grid8_step_label(plane) == (
        "baseconv paper model, broadcast layout, adam, then matrix-free LM (curvature on the whole set) with the whole "
        "set's plane step from the end of run be82b0a72453a9c2, float32, 200 min")
    assert tables.grid8_step_label(recycled) == (
        "baseconv paper model, broadcast layout, adam, then matrix-free LM (curvature on the whole set) with the whole "
        "set's plane step, CG's last 300 directions recycled from the end of run fdd05bbc96850f4a, float32, 290 min")
    assert tables.grid8_step_label(more_problems) == (
        "baseconv paper model, broadcast layout, adam, then matrix-free LM with the whole set's plane step, 32,768 "
        "problems from the end of run 7692966b890ba1f3, float32, 320 min")


# ---- the learned-step tables read stored evaluations (bench.harness.evaluations) -------------


def store_curve(root, run, level_value, record=None, weights=None):
    """A synthetic stored gd_iteration evaluation: 150 iterations at 1.0, then 21 at `level_value`."""
    curve = {"dtype": "float32", "median_mse": [1.0] * 130 + [level_value] * 21,
             "mean_mse": [1.0] * 130 + [2 * level_value] * 21}
    return evaluations.store(root, run, evaluations.spec("gd_iteration"), curve, record=record, weights=weights)


def store_reference(root):
    curves = [{"method": "true_gd", "label": "true GD (float32)", "dtype": "float32", "median_mse": [1.0] + [5e-15] * 150,
               "mean_mse": [1.0] + [5e-9] * 150}]
    evaluations.store(root, evaluations.REFERENCE, evaluations.spec("gd_iteration_reference"), {"curves": curves})


def grid8_runs():
    return [c for c in grids.to_the_limit("ci") if c.task.name == "gd_step" and c.dtype == "float32" and c.polish is None]


def test_learned_step_rows_come_from_stored_evaluations_and_nothing_trains(tmp_path, monkeypatch):
    """tables never trains: a row with a stored evaluation shows it, one without says so and names the command
    that makes it, one whose record changed since its evaluation says it is stale."""
    import bench.harness.train

    monkeypatch.setattr(bench.harness.train, "run", lambda *a, **k: pytest.fail("tables trained a run"))
    monkeypatch.setattr(iterate, "trained_model", lambda *a, **k: pytest.fail("tables retrained a run"))
    evaluated, missing = grid8_runs()[:2]
    record = fake_result(evaluated, 0.3)
    write_result(record, tmp_path)
    write_result(fake_result(missing, 0.5), tmp_path)
    store_curve(tmp_path, evaluated.hash, 3e-4, record=record)
    store_reference(tmp_path)
    out = tables.Output(tmp_path / "tables", tmp_path / "figures")
    warnings = []
    tables.build(tmp_path, out, "ci", only=["to_the_limit_iterated"], log=warnings.append)
    t = pd.read_csv(out.tables / "to_the_limit_gd_iteration.csv", dtype=str, keep_default_na=False).set_index("run")
    assert t.loc[evaluated.hash, "level (median MSE, last 20 iterations)"] == "3.00e-04"
    assert t.loc[evaluated.hash, "mean MSE, last 20"] == "6.00e-04" and t.loc[evaluated.hash, "evaluation"] == "ok"
    assert t.loc[missing.hash, "level (median MSE, last 20 iterations)"] == "—"
    assert t.loc[missing.hash, "evaluation"] == f"not evaluated: `python -m bench evaluate --run {missing.hash}`"
    assert t.loc["—", "level (median MSE, last 20 iterations)"] == "5.00e-15"  # true GD, from the reference
    ood = pd.read_csv(out.tables / "to_the_limit_ood.csv", dtype=str, keep_default_na=False)
    assert set(ood["evaluation"]) == {f"not evaluated: `python -m bench evaluate --run {h}`"
                                      for h in (evaluated.hash, missing.hash)}
    assert len(warnings) == 2 and all("its rows are marked" in w for w in warnings)  # one line per run
    write_result(record.model_copy(update={"eval_mse": 0.25}), tmp_path)  # the run ended otherwise since
    tables.build(tmp_path, out, "ci", only=["to_the_limit_iterated"], log=warnings.append)
    t = pd.read_csv(out.tables / "to_the_limit_gd_iteration.csv", dtype=str, keep_default_na=False).set_index("run")
    assert t.loc[evaluated.hash, "evaluation"].startswith("stale (the record changed since)")
    assert t.loc[evaluated.hash, "level (median MSE, last 20 iterations)"] == "—"


def test_a_truncated_final_state_leaves_tables_at_exit_0_with_the_row_marked(tmp_path, capsys):
    from bench.harness.final_states import save_weights
    from bench.harness.records import final_state_path

    cfg = grid8_runs()[0]
    record = fake_result(cfg, 0.3)
    write_result(record, tmp_path)
    model = cfg.build_model()
    save_weights({"format": 1, "config_hash": cfg.hash, "config": cfg.canonical_json(), "status": "ok",
                  "result": record.model_dump_json(), "model": model.state_dict()}, tmp_path)
    store_curve(tmp_path, cfg.hash, 3e-4, record=record, weights=evaluations.weights_fingerprint(model.state_dict()))
    evaluations.store(tmp_path, cfg.hash, evaluations.SPECS["ood"], [{"shifted": "x_scale", "scale": 2.0, "mse": 1e-3,
                                                                      "rel": 1e-2}], record=record)
    store_reference(tmp_path)
    args = ["--results", str(tmp_path), "--only", "to_the_limit_iterated"]
    assert tables.main(args) == 0
    assert capsys.readouterr().err == ""  # weights, record and evaluations agree: nothing to say
    path = final_state_path(cfg, tmp_path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    assert tables.main(args) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0] and cfg.hash in err[0]
    t = pd.read_csv(tmp_path / "tables" / "to_the_limit_gd_iteration.csv", dtype=str, keep_default_na=False)
    row = t.set_index("run").loc[cfg.hash]
    assert row["level (median MSE, last 20 iterations)"] == "—"
    assert row["evaluation"].startswith(f"its final state is unreadable ({path}: not a readable checkpoint")


def test_a_corrupt_record_is_named_once_and_its_row_marked(tmp_path, capsys):
    cfg = next(c for c in grids.primitives("ci") if c.task.name == "multiply")
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / f"{cfg.hash}.json").write_text('{"config": {"task": ')  # cut short
    assert tables.main(["--results", str(tmp_path), "--only", "primitives"]) == 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"runs/{cfg.hash}.json" in err[0] and "not a readable run record" in err[0]
    t = pd.read_csv(tmp_path / "tables" / "primitives.csv", dtype=str)
    prenorm = "on" if cfg.model.params.get("prenorm", True) else "off"
    row = t[(t["task"] == "multiply") & (t["model"] == cfg.model.name) & (t["prenorm"] == prenorm)].iloc[0]
    assert row[f"depth {cfg.model.params['depth']}"] == "unreadable record"
    assert f"unreadable record: runs/{cfg.hash}.json" in (tmp_path / "tables" / "primitives.md").read_text()


# ---- python -m bench evaluate: what it stores is what the iteration computes ------------------


def test_a_stored_evaluation_is_the_iteration_of_the_runs_weights(tmp_path):
    """evaluate stores, for a run with kept weights, the same curve gd_iteration_curves computes; a later
    change of those weights marks it."""
    from bench.experiments import evaluate
    from bench.harness.config import make_run_config
    from bench.harness.records import load_model, load_result, state_file
    from bench.harness.train import run

    cfg = make_run_config(task={"name": "gd_step", "params": {}}, steps=20, eval_size=64, keep_final_state=True,
                          model={"name": "linear_attention", "params": {"width": 12, "depth": 1, "mlp": False}})
    run(cfg, tmp_path, progress=False)
    record = load_result(cfg, tmp_path)
    args = evaluate.parser().parse_args(["--results", str(tmp_path), "--iterations", "30"])
    specs = [evaluations.spec("gd_iteration", iterations=30), evaluations.SPECS["ood"]]
    assert evaluate.evaluate_run(cfg.hash, specs, {cfg.hash: record}, args, lambda m: None) == 2
    weights = evaluations.current_weights(cfg.hash, tmp_path)
    found = evaluations.lookup(tmp_path, cfg.hash, specs[0], record=record, weights=weights)
    assert found.status == "ok" and found.data["weights"] == weights[0]
    model = load_model(cfg, tmp_path)
    expected = iterate.gd_iteration_curves([("x", model, cfg.build_task().tokens)], steps=30, constructions=(),
                                           dtypes=("float32",))
    expected = expected[expected["method"] == "learned"]
    assert found.result["median_mse"] == expected["median_mse"].tolist()  # to the bit
    ood = evaluations.lookup(tmp_path, cfg.hash, specs[1], record=record, weights=weights).result
    assert [(r["shifted"], r["scale"]) for r in ood][:2] == [("x_scale", 0.25), ("x_scale", 0.5)] and len(ood) == 10
    assert ood[2]["mse"] == pytest.approx(record.eval_mse, rel=0.5)  # scale 1 on 512 problems: its own task
    path = state_file(cfg, tmp_path)  # its checkpoint, here; on a clone, its kept final state
    state = torch.load(path, weights_only=True)
    state["model"] = {k: v + 1e-3 for k, v in state["model"].items()}
    torch.save(state, path)
    changed = evaluations.lookup(tmp_path, cfg.hash, specs[0], record=record,
                                 weights=evaluations.current_weights(cfg.hash, tmp_path))
    assert changed.status == "weights changed" and not changed.usable


def test_evaluate_never_retrains_a_time_capped_run(tmp_path):
    from bench.experiments import evaluate

    capped = grid8_runs()[0]
    said = []
    assert evaluate.retrained_state(fake_result(capped, 0.3), tmp_path, said.append) is None
    assert said == [f"run {capped.hash}: time-capped (900 s): retrained it would be another run; not evaluated"]
