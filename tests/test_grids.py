"""bench.grids: the product grids have the axes the paper (and the issue) name, at every budget, and the
registry says which grid and which table each run belongs to."""
from __future__ import annotations

import itertools
from pathlib import Path

import pytest

import architectures
import primitives

from bench import grids
from bench.grids import registry
from bench.harness.sweep import resolve_grid
from bench.studies import chains


# tiny forwards (validating a config runs its model once) are fastest on one thread
pytestmark = pytest.mark.usefixtures("one_thread_module")


def axes(configs, *getters):
    return {tuple(g(c) for g in getters) for c in configs}


def task(c):
    return c.task.name


def model(c):
    return c.model.name


def param(name, default=None):
    return lambda c: c.model.params.get(name, default)


def test_paper_budget_is_the_papers_recipe():
    cfg = grids.PAPER.run("multiply", "attention")
    assert (cfg.batch_size, cfg.steps, cfg.dtype) == (1024, 1_000_000, "float32")
    assert (cfg.optimizer.name, cfg.optimizer.lr, cfg.optimizer.eps) == ("adam", 1e-3, 1e-16)
    assert (cfg.schedule.name, cfg.schedule.gamma, cfg.schedule.every) == ("step", 0.9, 10_000)
    assert (cfg.model.params["width"], cfg.model.params["heads"]) == (64, 2)


def test_ci_budget_is_small():
    cfg = grids.CI.run("multiply", "attention")
    assert cfg.batch_size <= 128 and cfg.steps <= 1000 and cfg.model.params["width"] <= 64
    assert cfg.schedule.every * grids.CI.decays == cfg.steps  # the same decay count over any run length


PRODUCT_GRIDS = {"primitives", "attention_multiply", "gd_step", "gd_k_least_squares", "dtype_optimizer", "added_mixers",
                 "second_order", "to_the_limit", "ode"}


def test_registry_and_sweep_names():
    assert set(grids.GRIDS) == set(registry.GRIDS) == PRODUCT_GRIDS
    for name, fn in grids.GRIDS.items():
        assert fn.__doc__.split("\n\n")[0].rstrip().endswith("?"), name  # each opens with the question it answers
        for budget in grids.grid_budgets(name):
            assert callable(getattr(grids, f"{name}_{budget}"))
    for name in chains.CHAINS:  # a study's chain sweeps at ci, the budget it was run at
        assert grids.grid_budgets(name) == ("ci",)
        assert [c.hash for c in getattr(grids, f"{name}_ci")()] == [lk.record for lk in chains.chain(name)]
        with pytest.raises(ValueError, match=f"{name} is a study's chain of runs .* not 'paper'"):
            registry.grid_configs(name, "paper")
    assert callable(grids.all_ci) and callable(grids.all_paper)
    configs = resolve_grid("bench.grids:primitives_smoke")
    assert [c.hash for c in configs] == [c.hash for c in grids.primitives("smoke")]
    with pytest.raises(ValueError, match="no grid or study chain named 'primitive'"):
        registry.grid_configs("primitive")


def test_tables_read_each_grid_with_the_study_links_it_shows():
    ci = registry.table_grids("ci")
    assert set(ci) == PRODUCT_GRIDS
    limit = [c.hash for c in ci["to_the_limit"]]
    own = [c.hash for c in grids.to_the_limit("ci")]
    folded = [lk.record for name in ("to_the_limit_extended", "to_the_limit_slice", "to_the_limit_whole_set",
                                     "to_the_limit_broadcast") for lk in chains.chain(name)]
    assert limit == own + folded  # grid 8's own rows first, then the study links, in the order they ran
    # the float64 chains are tabulated by their findings page alone; grid 9's BaseConv row is its chain's last link
    assert not {lk.record for lk in chains.links("float64").values()} & {c.hash for cs in ci.values() for c in cs}
    assert [c.hash for c in ci["ode"]] == [c.hash for c in grids.ode("ci")] + [lk.record for lk in chains.chain("ode_whole_set")[:-1]]
    paper = registry.table_grids("paper")
    assert all([c.hash for c in paper[name]] == [c.hash for c in grids.GRIDS[name]("paper")] for name in paper)
    assert registry.grids_of("185451d5689189a2") == ["to_the_limit_extended"]
    assert registry.grids_of(grids.to_the_limit("ci")[-1].hash) == ["to_the_limit"]
    assert registry.grids_of("bbbbfdab1352a578") == ["ode", "ode_whole_set"]
    assert registry.profile_runs("quick") == grids.quick()
    assert [c.hash for c in registry.profile_runs("ci")] == [c.hash for c in grids.all_ci()]


def test_every_ci_grid_and_study_chain_is_in_all_ci_once():
    all_ci = [c.hash for c in grids.all_grids("ci")]
    assert len(all_ci) == len(set(all_ci))
    assert {c.hash for name in PRODUCT_GRIDS for c in grids.GRIDS[name]("ci")} <= set(all_ci)
    # the study chains a sweep of every grid trains: grid 9's, which ode's BaseConv needs, and grid 8's two first
    for name in ("ode_whole_set", "to_the_limit_extended", "to_the_limit_slice"):
        assert {lk.record for lk in chains.chain(name)} <= set(all_ci)
    assert not {lk.record for lk in chains.chain("to_the_limit_broadcast")} & set(all_ci)
    all_paper = {c.hash for c in grids.all_grids("paper")}
    assert all_paper == {c.hash for name in PRODUCT_GRIDS for c in grids.GRIDS[name]("paper")}


def test_primitives_grid_is_the_full_product_at_ci():
    configs = grids.primitives("ci")
    assert len(configs) == len({c.hash for c in configs}) == 74
    bare = grids.exact_multiply_model()
    pair = [c for c in configs if all(c.model.params.get(k) == v for k, v in bare.items())]
    assert {model(c) for c in pair} == {"baseconv", "attention"}
    configs = [c for c in configs if c not in pair]
    got = axes(configs, task, model, param("prenorm"), param("depth"))
    want = set(itertools.product(grids.PRIMITIVE_TASKS, grids.PAPER_MIXERS, (True, False), (1, 2, 4, 8)))
    assert got == want
    assert all(c.model.params.get("conv_kind") == "long" for c in configs if c.model.name == "baseconv")


def test_smoke_grid_has_the_expressivity_pair():
    configs = grids.primitives("smoke")
    bare = grids.exact_multiply_model()
    pair = [c for c in configs if all(c.model.params.get(k) == v for k, v in bare.items())]
    assert {model(c) for c in pair} == {"baseconv", "attention"}
    a, b = pair
    assert (a.steps, a.optimizer, a.schedule, a.batch_size) == (b.steps, b.optimizer, b.schedule, b.batch_size)
    assert all(task(c) == "multiply" and c.model.params["depth"] == 1 for c in pair)


def test_gd_step_grid_paper_is_the_full_product():
    configs = grids.gd_step("paper")
    got = axes(configs, model, lambda c: c.schedule.name, lambda c: c.ema_lambda > 0, lambda c: c.optimizer.lr)
    want = set(itertools.product(("baseconv", "linear_attention", "attention"), ("step", "adaptive"),
                                 (False, True), (3e-4, 1e-3, 3e-3)))
    assert got == want and len(configs) == 36
    assert {c.model.params["depth"] for c in configs} == {grids.GD_DEPTH}
    adaptive = next(c for c in configs if c.schedule.name == "adaptive")
    assert adaptive.schedule.max_lr == adaptive.optimizer.lr  # capped: it cannot climb until it blows up


def test_gd_step_grid_ci_varies_one_axis_at_a_time():
    configs = grids.gd_step("ci")
    base_lr = grids.gd_budget("ci").lr
    assert sorted(c.steps for c in configs if c.steps != grids.gd_budget("ci").steps) == [15000] * 3
    configs = [c for c in configs if c.steps == grids.gd_budget("ci").steps]
    for m in ("baseconv", "linear_attention"):
        mine = [c for c in configs if model(c) == m]
        changed = [sum([c.schedule.name != "step", c.ema_lambda > 0, c.optimizer.lr != base_lr]) for c in mine]
        assert sorted(changed) == [0, 1, 1, 1]
    assert [model(c) for c in configs].count("attention") == 1


def test_gd_k_and_least_squares_grid():
    configs = grids.gd_k_least_squares("ci")
    gd_k = [c for c in configs if task(c) == "gd_k"]
    assert {model(c) for c in gd_k} == {"baseconv", "linear_attention", "attention"}
    assert all(c.task.params == {"k": 4} for c in gd_k)
    ls = [c for c in configs if task(c) == "least_squares"]
    depths = {c.model.params["depth"] for c in ls}
    assert depths <= set(grids.LEAST_SQUARES_DEPTHS) and {1, 2, 4, 8, 16} <= depths
    assert {model(c) for c in ls} == {"attention", "baseconv"}
    assert grids.LEAST_SQUARES_DEPTHS == (1, 2, 4, 8, 12, 16, 24, 32, 48, 64)


def test_twins_differ_only_where_they_should():
    pairs = grids.twins("ci")
    kinds = {k for k, _, _ in pairs}
    assert kinds == {"float64", "lbfgs"}
    for kind, base, twin in pairs:
        if kind == "float64":
            assert twin.dtype == "float64" and base.dtype == "float32"
            assert twin.model_dump(exclude={"dtype"}) == base.model_dump(exclude={"dtype"})
        else:
            assert twin.optimizer.name == "lbfgs" and base.optimizer.name == "adam"
            assert (twin.task, twin.model, twin.dtype) == (base.task, base.model, base.dtype)
    assert {t.hash for _, _, t in pairs} == {c.hash for c in grids.dtype_optimizer("ci")}


def test_added_mixers_grid():
    configs = grids.added_mixers("ci")
    prim = [c for c in configs if task(c) in grids.PRIMITIVE_TASKS]
    assert axes(prim, task, model) == set(itertools.product(grids.PRIMITIVE_TASKS, grids.ADDED_MIXERS))
    kappas = {c.task.params.get("kappa") for c in configs if task(c) == "gd_step"}
    assert kappas == {1.0, 10.0, 100.0}


def test_second_order_grid_trains_one_exact_model_three_ways():
    configs = grids.second_order("ci")
    polished = [c for c in configs if c.polish is not None]
    assert {(task(c), model(c)) for c in polished} == {("multiply", "baseconv"), ("multiply", "attention")}
    a, b = polished
    assert (a.optimizer, a.polish, a.steps, a.model.params["width"]) == (b.optimizer, b.polish, b.steps, 32)
    assert all(c.optimizer.name == "lbfgs" and c.polish.name == "levenberg_marquardt" for c in polished)
    configs = [c for c in configs if c.polish is None]
    bare = grids.exact_gd_step_model()
    assert all(task(c) == "gd_step" and model(c) == "linear_attention" for c in configs)
    assert all(all(c.model.params[k] == v for k, v in bare.items()) for c in configs)
    assert axes(configs, lambda c: c.optimizer.name, lambda c: c.dtype) == {
        ("adam", "float32"), ("lbfgs", "float32"), ("lbfgs", "float64"),
        ("levenberg_marquardt", "float32"), ("levenberg_marquardt", "float64")}
    lm = [c for c in configs if c.optimizer.name == "levenberg_marquardt"]
    # more residuals (5 per problem) than weights, or the fit is underdetermined
    params = architectures.build_model("linear_attention", primitives.make_task("gd_step"), **bare).num_parameters()
    assert all(5 * c.optimizer.train_size > params and c.optimizer.max_params >= params for c in lm)
    assert len({c.seed for c in configs}) == 1  # one random start


def test_main_job_runs_are_grid_7s_recipes_with_12_lm_steps_each():
    from bench.harness.records import load_result

    quick = grids.quick()
    second = {(task(c), model(c), c.optimizer.name, c.dtype): c for c in grids.second_order("ci")}
    pair, gd = quick[:2], quick[2]
    assert gd.hash == second[("gd_step", "linear_attention", "levenberg_marquardt", "float32")].hash
    for c in pair:
        grid7 = second[("multiply", model(c), "lbfgs", "float32")]
        assert c.model_dump(exclude={"steps", "polish_after"}) == grid7.model_dump(exclude={"steps", "polish_after"})
        # L-BFGS stalled, and Levenberg-Marquardt took over, at this step in grid 7's committed record:
        # the main job switches there at the latest
        switched = load_result(grid7, Path(__file__).resolve().parent.parent / "results").switched_at
        assert c.steps - switched == 12 and c.polish_after == switched, (model(c), switched)
    assert [c.steps for c in pair] == [88, 44]


def test_bad_budgets_are_named():
    with pytest.raises(ValueError, match="smoke, ci, paper"):
        grids.primitives("huge")
    with pytest.raises(ValueError, match="only 'primitives' has a smoke budget"):
        grids.gd_step("smoke")


def test_to_the_limit_grid_is_the_papers_models_under_a_time_cap():
    configs = grids.to_the_limit("ci")
    assert len(configs) == len({c.hash for c in configs}) == 41
    *configs, warm = configs  # the GD step warm-started by Adam comes last
    assert (warm.task.name, warm.optimizer.name, warm.polish.solver, warm.polish_after) == ("gd_step", "adam", "cg", 96_000)
    assert warm.polish.train_size == 16384 and warm.polish_eval_every == 1 and warm.steps > warm.polish_after
    prim = [c for c in configs if c.task.name in grids.PRIMITIVE_TASKS and c.dtype == "float32"]
    got = axes(prim, task, model, param("depth"), param("prenorm"))
    want = {(t, m, d, False) for t in grids.PRIMITIVE_TASKS for m in grids.PAPER_MIXERS for d in (1, 2, 4)}
    want |= {(t, m, 2, True) for t in grids.PRIMITIVE_TASKS for m in grids.PAPER_MIXERS}
    assert got == want
    for c in configs:
        assert c.optimizer.name == "levenberg_marquardt" and c.optimizer.solver == "cg"
        assert c.time_limit_s is not None and c.steps >= 10_000
    assert all(c.model.params["width"] == 64 and c.model.params["mlp_factor"] == 4 for c in prim)
    assert sum(c.time_limit_s for c in configs + [warm]) <= 2 * 2 * 3600  # 2 hours of 2 cores
    gd = {(c.model.name, c.dtype) for c in configs if c.task.name == "gd_step"}
    assert gd == {("baseconv", "float32"), ("linear_attention", "float32"), ("baseconv", "float64")}
    paper = [c for c in grids.to_the_limit("paper") if c.task.name == "gd_step" and c.model.name == "linear_attention"]
    assert paper[0].model.params["width"] == 256 and paper[0].model.params["heads"] == 16


def test_ode_grid_trains_the_transformer_end_to_end_and_the_prompt_sized_gd_step():
    for budget in ("ci", "paper"):
        configs = grids.ode(budget)
        assert [(task(c), model(c)) for c in configs] == [
            ("ode_operator", "attention"), ("gd_step", "baseconv"), ("gd_step", "linear_attention")]
        ode_task = primitives.make_task("ode_operator", **configs[0].task.params)
        # the least-squares problem of a prompt (n_examples - 1 equations in n_points + 2 unknowns) is the
        # gd_step problem the steps are trained on: 25 equations, 22 unknowns
        assert (ode_task.n_examples - 1, ode_task.n_points + 2) == (25, 22)
        # BaseConv reads the problems in Liu et al.'s layout (x in every token), linear attention in gd_step's
        assert [c.task.params for c in configs[1:]] == [{"D": 22, "N": 25, "layout": "broadcast"}, {"D": 22, "N": 25}]
    # ci: each step in the architecture of its construction at D = 22, Adam and then the matrix-free LM;
    # linear attention given 40 minutes, going on from the 20-minute run
    _, baseconv, linear_attention = grids.ode("ci")
    assert linear_attention.model.params == grids.exact_gd_step_model(22) and linear_attention.model.params["width"] == 68
    assert (baseconv.model.params["width"], baseconv.model.params["depth"]) == (89, 3)
    assert baseconv.build_model().num_parameters() == 87_064  # the broadcast construction's 3 layers, width 4D + 1
    for c in (baseconv, linear_attention):
        assert c.polish.solver == "cg" and c.polish.train_size == 8192
        assert c.polish_after == grids.ODE_GD_STEP_RECIPE[c.model.name][0] and c.optimizer.name == "adam"
    # the BaseConv's curvature slice has more residuals (22 a problem) than it has weights
    assert baseconv.polish.curvature_size * 22 > 87_064 and linear_attention.polish.curvature_size == 2048
    # linear attention goes on from its 20-minute run; BaseConv is the last link of the study chain ode_whole_set
    ci = grids.get_budget("ci")
    base = grids.ode_gd_step(ci, "linear_attention")
    assert linear_attention.extends == base.hash and (base.time_limit_s, linear_attention.time_limit_s) == (1200, 2400)
    assert linear_attention.model_copy(update={"time_limit_s": base.time_limit_s, "extends": None}).hash == base.hash
    assert baseconv == chains.run_configs("ode_whole_set")[-1] and baseconv.hash == "bbbbfdab1352a578"
    assert grids.exact_gd_step_model() == grids.exact_gd_step_model(5) and grids.exact_gd_step_model()["width"] == 18
    paper = grids.ode("paper")[0]
    assert (paper.model.params["depth"], paper.model.params["width"], paper.model.params["heads"]) == (12, 256, 8)
    assert (paper.optimizer.lr, paper.batch_size) == (1e-4, 64)
    # a sweep of every grid trains the chain's links in order, before ode's BaseConv
    assert grids.RUN_ORDER.index("ode_whole_set") < grids.RUN_ORDER.index("ode")
    with pytest.raises(ValueError, match="only 'primitives' has a smoke budget"):
        grids.ode("smoke")
