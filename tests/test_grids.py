"""bench.grids: the experiment grids have the axes the paper (and the issue) name, at every budget."""
from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

import architectures
import primitives

from bench import grids
from bench.harness.sweep import resolve_grid


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Validating a config runs its model once; tiny forwards are fastest (and on a busy
    machine, far faster) on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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


def test_registry_and_sweep_names():
    assert set(grids.GRIDS) == {"primitives", "attention_multiply", "gd_step", "gd_k_least_squares",
                                "dtype_optimizer", "added_mixers", "second_order", "to_the_limit", "to_the_limit_extended",
                                "to_the_limit_slice", "to_the_limit_whole_set", "to_the_limit_broadcast", "to_the_limit_float64",
                                "to_the_limit_float64_variants", "ode", "ode_whole_set"}
    for name in grids.GRIDS:
        for budget in grids.grid_budgets(name):
            assert callable(getattr(grids, f"{name}_{budget}"))
    assert callable(grids.all_ci) and callable(grids.all_paper)
    configs = resolve_grid("bench.grids:primitives_smoke")
    assert [c.hash for c in configs] == [c.hash for c in grids.primitives("smoke")]


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


def test_the_extended_grid_is_grid_8s_warm_started_gd_step_given_longer():
    for budget in ("ci", "paper"):
        base = grids.to_the_limit(budget)[-1]
        [longer] = grids.to_the_limit_extended(budget)
        assert longer.extends == base.hash and longer.time_limit_s > base.time_limit_s
        # nothing else differs: its steps are the base run's, so it can go on from the base's checkpoint
        assert longer.model_copy(update={"time_limit_s": base.time_limit_s, "extends": None}).hash == base.hash


def test_the_slice_grid_is_grid_8s_gd_steps_with_the_slice_s_own_lm_step():
    for budget in ("ci", "paper"):
        warm, *cold = grids.to_the_limit_slice(budget)
        grid8 = grids.to_the_limit(budget)
        for c in cold + [warm]:
            lm = c.polish or c.optimizer
            assert lm.solver == "cg" and (lm.gradient, lm.warm_start) == ("slice", False)
            assert (lm.train_size, lm.curvature_size) == (16384, 2048)
        # the random-start runs are grid 8's GD-step rows but for the LM's gradient
        for c in cold:
            [twin] = [g for g in grid8 if g.task.name == "gd_step" and g.model == c.model and g.dtype == "float32"
                      and g.polish is None]
            assert c.model_copy(update={"optimizer": twin.optimizer}).hash == twin.hash
        adam_steps, seconds = grids.GD_SLICE_WARM_START[budget]
        assert warm.polish_after == adam_steps and warm.time_limit_s == seconds and warm.optimizer.name == "adam"
        assert warm.schedule.every == adam_steps // 30  # its Adam phase decays 30 times, as grid 8's


def test_the_float64_grid_goes_on_from_the_float32_recipe_in_float64():
    from bench.benchmarks.test_bench_training import PAPER_MODEL, paper_model_recipes

    for budget in ("ci", "paper"):
        first, *chain = grids.to_the_limit_float64(budget)
        assert first.dtype == "float32" and first.keep_final_state and first.starts_from is None
        # the time-to-precision recipe that reached 8.2e-13 in float32, on the same model
        recipe = paper_model_recipes()["cg_lm_512_then_2048_line_search"]
        assert first.polish.model_dump() == first.polish.model_validate(recipe["polish"]).model_dump()
        assert first.polish_after == recipe["polish_after"] and first.optimizer.train_size == 512
        assert {k: first.model.params[k] for k in PAPER_MODEL["params"]} == PAPER_MODEL["params"]
        assert all(c.dtype == "float64" and c.starts_from == first.hash and c.keep_final_state for c in chain)
        assert [c.extends for c in chain] == [None] + [c.hash for c in chain[:-1]]
        assert first.time_limit_s < chain[0].time_limit_s
        assert [c.time_limit_s for c in chain] == sorted({c.time_limit_s for c in chain})
        for c in chain:  # all but the dtype and the time limit are the float32 run's, as starts_from asks
            assert c.model_copy(update={"dtype": "float32", "time_limit_s": first.time_limit_s, "starts_from": None,
                                        "extends": None}).hash == first.hash
    with pytest.raises(Exception, match="smoke"):
        grids.to_the_limit_float64("smoke")


def test_the_float64_variants_go_on_from_the_chain_with_one_change_each():
    for budget, start in (("ci", -2), ("paper", -1)):
        first, *chain = grids.to_the_limit_float64(budget)
        wider, larger, longer_cg, plane, plane_by_rho, longer, gradient, twice = grids.to_the_limit_float64_variants(budget)
        parent = chain[start]
        for c in (wider, larger):
            assert c.starts_from == parent.hash and c.time_limit_s > parent.time_limit_s and c.dtype == "float64"
            same = c.model_copy(update={"polish": parent.polish, "time_limit_s": parent.time_limit_s,
                                        "starts_from": first.hash})
            assert same.hash == parent.hash  # only the LM and the time differ from the run it goes on from
        changed = {k for c in (wider, larger) for k, v in c.polish.model_dump().items() if v != getattr(parent.polish, k)}
        assert changed == {"curvature_size", "train_size"}
        assert wider.polish.curvature_size == 2 * parent.polish.curvature_size == 512
        assert larger.polish.train_size == 4 * parent.polish.train_size == 8192
        # then the larger training set's run goes on from its end with four times CG's products
        assert longer_cg.starts_from == larger.hash and longer_cg.time_limit_s > larger.time_limit_s
        assert longer_cg.polish == larger.polish.model_copy(update={"cg_max_iter": 4 * larger.polish.cg_max_iter})
        assert longer_cg.model_copy(update={"polish": larger.polish, "time_limit_s": larger.time_limit_s,
                                            "starts_from": larger.starts_from}).hash == larger.hash
        # and, as long, with the whole set's model choosing the step in the plane of the solved and the last one
        assert (plane.starts_from, plane.time_limit_s) == (larger.hash, longer_cg.time_limit_s)
        assert plane.polish == larger.polish.model_copy(update={"whole_set_plane": True})
        assert plane_by_rho.polish == plane.polish.model_copy(update={"plane_damping": "rho"})
        assert (plane_by_rho.starts_from, plane_by_rho.time_limit_s) == (larger.hash, plane.time_limit_s)
        # then mu by rho gone on further, as it is and, from its end, with the gradient in the plane
        assert longer.extends == plane_by_rho.hash and longer.time_limit_s > plane_by_rho.time_limit_s
        assert longer.model_copy(update={"time_limit_s": plane_by_rho.time_limit_s, "extends": None}) == plane_by_rho
        assert (gradient.starts_from, gradient.time_limit_s) == (plane_by_rho.hash, longer.time_limit_s)
        assert gradient.polish == plane_by_rho.polish.model_copy(update={"plane_gradient": True})
        # and from the extension's end on twice the training problems
        assert twice.starts_from == longer.hash and twice.time_limit_s > longer.time_limit_s
        assert twice.polish == longer.polish.model_copy(update={"train_size": 2 * longer.polish.train_size})
    assert grids.ROWS_OF["to_the_limit_float64_variants"] == "to_the_limit_float64"


def test_the_whole_set_grid_goes_on_from_the_slice_run_then_as_a_damped_chain():
    for budget in ("ci", "paper"):
        start = grids.to_the_limit_slice(budget)[0]
        first, *chain = grids.to_the_limit_whole_set(budget)
        assert first.starts_from == start.hash and first.time_limit_s > start.time_limit_s
        assert all(c.starts_from == first.hash and c.keep_final_state for c in chain)
        assert [c.time_limit_s for c in chain] == sorted({c.time_limit_s for c in chain})
        assert chain[0].time_limit_s > first.time_limit_s
        assert [c.extends for c in chain] == [None] + [c.hash for c in chain[:-1]]
        for c in [first] + chain:
            assert (c.polish.curvature_size, c.polish.train_size, c.polish.gradient) == (16384, 16384, "whole")
            # all but the polish and the time limit are the slice run's, as RunConfig.starts_from asks
            same = c.model_copy(update={"polish": start.polish, "time_limit_s": start.time_limit_s, "starts_from": None,
                                        "extends": None})
            assert same.hash == start.hash
        assert first.polish.min_damping == 1e-15
        assert all((c.polish.min_damping, c.polish.damping_up, c.polish.line_search) == (1e-8, 10.0, True) for c in chain)


def test_the_broadcast_grid_is_the_warm_started_gd_step_in_liu_et_al_s_layout_then_whole_set_steps():
    for budget in ("ci", "paper"):
        *runs, plane, plane_longer, plane_longest, recycled, more_problems = grids.to_the_limit_broadcast(budget)
        first, *chain = runs
        slice_run = grids.to_the_limit_slice(budget)[0]
        assert first.task.params == {"layout": "broadcast"} and first.polish_after == slice_run.polish_after
        assert first.model.params == slice_run.model.params and first.build_model().num_parameters() == 43_653
        assert (first.polish.curvature_size, first.polish.train_size, first.polish.gradient) == (16384, 16384, "whole")
        assert (first.polish.line_search, first.polish.damping, first.polish.warm_start) == (True, 1e-6, False)
        # the same Adam phase as the first_token run: only the layout and the LM differ
        assert first.model_copy(update={"task": slice_run.task, "polish": slice_run.polish,
                                        "time_limit_s": slice_run.time_limit_s}).hash == slice_run.hash
        assert [c.extends for c in runs] == [None] + [c.hash for c in runs[:-1]]
        assert [c.time_limit_s for c in runs] == sorted({c.time_limit_s for c in runs})
        assert all(c.keep_final_state for c in runs)
        # beside the chain's end, the plane of the solved and the last step, mu by rho: one change to the LM
        start = runs[-2] if budget == "ci" else runs[-1]
        assert plane.starts_from == start.hash and plane.time_limit_s >= runs[-1].time_limit_s and plane.time_limit_s > start.time_limit_s
        assert plane.polish == start.polish.model_copy(update={"whole_set_plane": True, "plane_damping": "rho"})
        assert plane_longer.extends == plane.hash and plane_longer.time_limit_s > plane.time_limit_s
        assert plane_longer.model_copy(update={"time_limit_s": plane.time_limit_s, "extends": None}) == plane
        # from the plane run's end, side by side: it extended once more, and the same with CG's directions recycled
        assert plane_longest.extends == plane_longer.hash and plane_longest.time_limit_s > plane_longer.time_limit_s
        assert plane_longest.model_copy(update={"time_limit_s": plane_longer.time_limit_s,
                                                "extends": plane.hash}) == plane_longer
        assert recycled.starts_from == plane_longer.hash and recycled.extends is None
        assert recycled.time_limit_s == plane_longest.time_limit_s and recycled.keep_final_state
        assert recycled.polish == plane_longer.polish.model_copy(update={"recycle": 300})
        assert more_problems.starts_from == plane_longest.hash and more_problems.time_limit_s > recycled.time_limit_s
        assert more_problems.polish == plane_longest.polish.model_copy(update={"train_size": 32768,
                                                                               "curvature_size": 16384})
    assert grids.ROWS_OF["to_the_limit_broadcast"] == "to_the_limit"


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
    # each goes on from a run half as long (the linear-attention step 20 minutes, BaseConv 40)
    ci = grids.get_budget("ci")
    slice_run = grids.ode_gd_step(ci, "baseconv", 4800.0, extends=grids.ode_gd_step(ci, "baseconv").hash)
    for c in (linear_attention, slice_run):
        base = grids.ode_gd_step(ci, c.model.name)
        assert c.extends == base.hash and base.time_limit_s == c.time_limit_s / 2
        assert c.model_copy(update={"time_limit_s": base.time_limit_s, "extends": None}).hash == base.hash
    assert linear_attention.time_limit_s == 2400 and slice_run.time_limit_s == 4800
    # BaseConv then goes on from the 80-minute run's end with the curvature of its whole training set, in a
    # chain of runs each extending the one before
    assert baseconv.starts_from == slice_run.hash and baseconv.time_limit_s > slice_run.time_limit_s
    whole_set, *links = grids.ode_whole_set("ci")
    assert links[-1] == baseconv and whole_set.extends is None and whole_set.starts_from == slice_run.hash
    for before, link in zip([whole_set] + links, links):
        assert link.extends == before.hash and link.time_limit_s > before.time_limit_s
        assert link.model_copy(update={"time_limit_s": whole_set.time_limit_s, "extends": None}).hash == whole_set.hash
    assert baseconv.time_limit_s == grids.ODE_WHOLE_SET_SECONDS[-1] and whole_set.checkpoint_every == 1
    assert baseconv.polish.curvature_size == baseconv.polish.train_size == 8192 and baseconv.polish.line_search
    assert slice_run.polish.curvature_size == 4096
    same = baseconv.model_copy(update={"polish": slice_run.polish, "time_limit_s": 4800.0, "starts_from": None})
    assert same.hash == slice_run.hash  # all else is the 80-minute run's, as starts_from asks
    assert grids.exact_gd_step_model() == grids.exact_gd_step_model(5) and grids.exact_gd_step_model()["width"] == 18
    paper = grids.ode("paper")[0]
    assert (paper.model.params["depth"], paper.model.params["width"], paper.model.params["heads"]) == (12, 256, 8)
    assert (paper.optimizer.lr, paper.batch_size) == (1e-4, 64)
    assert grids.grid_budgets("ode_whole_set") == ("ci",) and grids.ROWS_OF["ode_whole_set"] == "ode"
    with pytest.raises(ValueError, match="ode_whole_set has a ci budget only"):
        grids.ode_whole_set("paper")
    # a sweep of every grid trains the chain's links in order (ode's BaseConv is the last), each after the one it extends
    assert grids.RUN_ORDER.index("ode_whole_set") < grids.RUN_ORDER.index("ode")
    with pytest.raises(ValueError, match="only 'primitives' has a smoke budget"):
        grids.ode("smoke")
