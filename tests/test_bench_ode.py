"""bench.experiments.ode_application: the comparison harness on a tiny size (trained rows from a few-step grid run), the
Newton-Schulz construction's map, the paper's collocation and its initial condition, the ratios."""
import math

import pytest
import torch

from architectures.constructions import baseconv_newton_schulz
from bench import grids
from bench.experiments import ode_application as ode
from bench.experiments import ode_report
from bench.grids import with_fields
from bench.harness.train import run as train
from primitives import algorithms as alg
from primitives import make_task, stream_generator


def test_settings_are_in_distribution_and_one_axis_at_a_time():
    keys = [s.key for s in ode.settings()]
    assert len(keys) == len(set(keys)) == 12 and keys[0] == ode.IN_DISTRIBUTION
    assert [k for _, k in ode.axis_points("operator_scale")] == [
        "operator_scale=0.0625", "operator_scale=0.25", ode.IN_DISTRIBUTION, "operator_scale=4", "operator_scale=16"]
    assert [v for v, _ in ode.axis_points("gp_length")] == [0.1, 0.2, 0.5, 1.0]


def test_chebyshev_matrix_differentiates_polynomials_exactly():
    x, Dm = ode.chebyshev(40)
    assert torch.allclose(Dm @ x**5, 5 * x**4, atol=1e-11) and torch.allclose(Dm @ torch.ones(41, dtype=torch.float64),
                                                                              torch.zeros(41, dtype=torch.float64), atol=1e-12)


def test_papers_collocation_loses_the_initial_condition_as_a3_goes_to_zero():
    rows = ode.collocation_initial_condition((0.5, 0.05, 1e-4))
    err = [r["u(0) error, paper's collocation"] for r in rows[:3]]
    cond = [r["condition number"] for r in rows[:3]]
    assert 1e-9 < err[0] < 1e-6 and err[2] > 1e-5 and err[2] / err[0] > 1000  # grows like 1 / a3
    assert cond[2] > 1e8 and cond[2] / cond[0] > 1000
    assert rows[-1]["a3"] == 0.0 and rows[-1]["u(0) error, paper's collocation"] == "singular"
    # ours: the initial condition is exact for every a3, a3 = 0 included
    task = make_task("ode_operator", query_time=0.0, n_examples=2, operator_scale=1e-4)
    batch = task.sample(8, generator=stream_generator(0, "eval"))
    assert torch.equal(batch.exact_targets[:, -1, 0], batch.inputs[:, -1, -3])


def test_newton_schulz_map_is_gd_step_2_to_the_k_and_the_constructions_output():
    task = make_task("ode_operator", n_points=3, n_examples=7)
    p = ode.draw(task, 4, 0, torch.float64)
    eta, K = ode.step_size(p.A), 4
    ns = ode.newton_schulz_map(p.A, p.b, eta, K)
    x = torch.zeros(4, 5, dtype=torch.float64)
    for _ in range(2**K):
        x = alg.gd_step(p.A, p.b, x, eta)
    assert torch.allclose(ns, x, rtol=1e-10, atol=1e-12)
    model = baseconv_newton_schulz(5, 6, eta, K).model
    from primitives.least_squares import gd_tokens

    out = model(gd_tokens(p.A, p.b, torch.zeros(4, 5, dtype=torch.float64)))[:, -1]
    assert torch.allclose(out, ns, rtol=1e-10, atol=1e-12)


def test_newton_schulz_size_at_the_prompt_size():
    size = ode.newton_schulz_size(22, 25, 14)
    assert size["width"] == 6050 and size["layers"] == 18 and size["weights"] > 1e9


def test_stats_and_ratios():
    s = ode.stats(torch.tensor([1.0, 2.0, 3.0, math.nan, 5.0], dtype=torch.float64))
    assert s["median"] == 3.0 and s["nonfinite"] == 1 and s["mean"] is None
    rows = []
    for method, label, by_setting in (("transformer", "T", {ode.IN_DISTRIBUTION: 1e-3, "u0_scale=16": 1e-1}),
                                      ("gd", "GD", {ode.IN_DISTRIBUTION: 1e-7, "u0_scale=16": 2e-7})):
        for key, median in by_setting.items():
            rows.append({"method": method, "label": label, "dtype": "float32", "iterations": None, "setting": key,
                         "median": median})
    r = {m["label"]: m for m in ode_report.ratios(rows)["methods"]}
    assert r["GD"]["mse_ratio"] == pytest.approx(1e4) and r["GD"]["ood_gap"] == pytest.approx(2.0)
    assert r["GD"]["ood_gap_ratio"] == pytest.approx(50.0)
    assert r["GD"]["ood_gap_difference_ratio"] == pytest.approx((1e-1 - 1e-3) / 1e-7)


def test_bad_comparison_config_is_named(capsys):
    with pytest.raises(Exception, match="prompts"):
        ode.ODEComparisonConfig(prompts=0)
    assert ode.main(["--gd-steps", "0"]) == 2
    with pytest.raises(Exception, match="learned_steps"):
        ode.ODEComparisonConfig(learned_steps=0)
    assert ode.ODEComparisonConfig(gd_steps=50).learned_iterations == 50
    assert "gd_steps: Input should be greater than or equal to 1, got 0" in capsys.readouterr().err


def tiny(cfg):
    return with_fields(cfg, steps=3, eval_size=4, eval_every=3, batch_size=4, checkpoint_every=0, extends=None)


def test_harness_end_to_end_on_a_tiny_size_with_the_grid_trained_a_few_steps(tmp_path, one_thread):
    configs = [tiny(c) for c in grids.ode("ci")]
    for c in configs[:1] + configs[2:]:  # the BaseConv step is left untrained: its row says so
        assert train(c, tmp_path, progress=False).status == "ok"
    cfg = ode.ODEComparisonConfig(prompts=4, gd_steps=3, learned_steps=2, construction_steps=2, grid=None)
    result = ode.run(cfg, tmp_path, configs=configs, log=lambda m: None)
    rows = ode_report.final_rows(result["rows"])
    # GD runs gd_steps, the learned steps their own (cheaper) count
    assert set(rows[rows["method"] == "gd"]["iterations"].dropna()) >= {3}
    assert set(rows[rows["method"] == "learned_step"]["iterations"]) == {2}
    for method in ("transformer", "learned_step", "gd", "least_squares", "construction"):
        got = rows[rows["method"] == method]
        assert set(got["setting"]) == {s.key for s in ode.settings()} or method == "construction"
        assert got["median"].notna().all()
    assert {e["status"] for e in result["learned"]} == {"ok", "not trained"}
    ls = rows[(rows["method"] == "least_squares") & (rows["setting"] == ode.IN_DISTRIBUTION)]
    assert ls["median"].iloc[0] < 1e-25  # the prompt's least-squares problem is consistent
    assert any(m.get("mse_ratio") for m in result["ratios"]["methods"])
    written = ode_report.write(result, tmp_path / "ode", tmp_path / "figures", ode.collocation_initial_condition((0.5,)))
    assert {p.name for p in written} >= {"comparison.json", "comparison.csv", "comparison.md", "ratios.md",
                                        "floors.md", "collocation.md", "ode_ood.png"}
    md = (tmp_path / "ode" / "comparison.md").read_text()
    assert "Transformer (softmax attention, end to end)" in md and "not trained" in md


def test_models_loads_only_the_runs_it_names(tmp_path, one_thread):
    configs = [tiny(c) for c in grids.ode("ci")]
    assert train(configs[2], tmp_path, progress=False).status == "ok"
    cfg = ode.ODEComparisonConfig(prompts=2, gd_steps=2, construction_steps=1, grid=None, models=("linear_attention",))
    result = ode.run(cfg, tmp_path, configs=configs, log=lambda m: None)
    assert [e["hash"] for e in result["learned"]] == [configs[2].hash]
    assert set(ode_report.final_rows(result["rows"])["method"]) == {"learned_step", "gd", "least_squares", "construction"}
    with pytest.raises(Exception, match="models"):
        ode.ODEComparisonConfig(models=("transformer",))


def test_gd_in_exact_arithmetic_is_float64_gd():
    task = make_task("ode_operator", n_points=6, n_examples=10)
    p = ode.draw(task, 8, 0, torch.float64)
    eta = ode.step_size(p.A)
    x = ode.gd_final(ode.true_gd_step, p.A, p.b, torch.full((8,), eta, dtype=torch.float64), 300)[300]
    assert torch.allclose(ode.gd_exact_arithmetic(p.A, p.b, eta, 300), x, rtol=1e-11, atol=1e-13)
    assert not torch.allclose(ode.gd_exact_arithmetic(p.A, p.b, eta, 299), x, rtol=1e-6, atol=0)
