"""The product grids: the questions users run, each a function budget -> list[RunConfig] whose docstring
states the question it answers.

    primitives          (1) read, linear, multiply x attention, linear_attention, baseconv x prenorm x depth
    attention_multiply  (2) softmax attention on multiply: width, heads, mlp_factor, training steps
    gd_step             (3) the learned GD step: schedule (step / adaptive), EMA filter, initial LR
    gd_k_least_squares  (4) gd_k with k = 4, and least squares end to end vs depth
    dtype_optimizer     (5) the other grids in float64, and L-BFGS next to Adam
    added_mixers        (6) hyena, s4d, mamba, based, mlp on grid 1; the GD step vs conditioning kappa
    second_order        (7) the GD step with the bare model that expresses it exactly: Adam, L-BFGS,
                        Levenberg-Marquardt, float32 and float64 (how far below the fp32 floor)
    to_the_limit        (8) the paper's own models (40k-100k weights) on read, linear, multiply and the
                        GD step, trained by the matrix-free Levenberg-Marquardt under a time cap
    ode                 (9) the ODE operator in context: a softmax Transformer end to end on ode_operator,
                        BaseConv and linear attention on the prompt-sized GD step
    quick               the main job's runs (`python -m bench main`)

How each finding past these grids was reached (grid 8's GD step given longer, the float64 chain, grid 9's
BaseConv step) is a study: bench.studies.chains, told in docs/studies/.
"""
from __future__ import annotations

import itertools
from typing import Optional

from bench.grids.budgets import CI, Budget, cached, gd_budget, get_budget, no_smoke, with_fields
from bench.grids.recipes import (GD_DEPTH, GD_STEP_PROBLEMS, adaptive_schedule, exact_gd_step_model, exact_multiply_model,
                                 matrix_free_lm, paper_gd_step_model, paper_primitive_model)
from bench.harness.config import RunConfig, unique_configs

PRIMITIVE_TASKS = ("read", "linear", "multiply")
PAPER_MIXERS = ("attention", "linear_attention", "baseconv")
ADDED_MIXERS = ("hyena", "s4d", "mamba", "based", "mlp")
LEAST_SQUARES_DEPTHS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64)


# ---- (1) primitives ------------------------------------------------------------------


@cached
def primitives(budget: str | Budget = "ci") -> list[RunConfig]:
    """(1) Which of the paper's architectures learns READ, LINEAR and MULTIPLY, to what precision, and
    what do depth and pre-norm change?

    read, linear, multiply x {attention, linear_attention, baseconv} x prenorm {on, off}
    x depth {1, 2, 4, 8}, the paper's backbone otherwise (MLP, final LayerNorm).

    paper and ci: the full grid (72 runs) and the expressivity pair. smoke: depth 1, prenorm
    off, attention and baseconv (6 runs), and the expressivity pair.

    The expressivity pair: multiply with the bare one-mixer model (`exact_multiply_model`,
    width 64) for baseconv and softmax attention, same budget (`expressivity_pair`).
    """
    b = get_budget(budget)
    if b.name == "smoke":
        return [b.run(task, model, depth=1, model_params={"prenorm": False})
                for task in PRIMITIVE_TASKS for model in ("attention", "baseconv")] + expressivity_pair(b)
    return [b.run(task, model, depth=depth, model_params={"prenorm": prenorm})
            for task in PRIMITIVE_TASKS for model in PAPER_MIXERS
            for prenorm in (True, False) for depth in (1, 2, 4, 8)] + expressivity_pair(b)


def expressivity_pair(b: Budget) -> list[RunConfig]:
    """Bare one-layer BaseConv and softmax attention on multiply, trained alike.

    smoke and ci: 400 steps at a constant LR 3e-3, width 64 (at width 32, or LR 1e-2, one of
    BaseConv's ten products is left unlearned (MSE 0.1) within 400 steps for some seeds; at
    width 64 none is, seeds 0-3). paper: the paper budget, width 64.
    """
    fields = dict(model_params={**exact_multiply_model(), "width": 64})
    if b.name != "paper":
        fields.update(steps=400, lr=3e-3, schedule={"name": "constant"})
    return [b.run("multiply", model, depth=1, **fields) for model in ("baseconv", "attention")]


# ---- (2) attention on multiply -------------------------------------------------------


@cached
def attention_multiply(budget: str | Budget = "ci") -> list[RunConfig]:
    """(2) Is softmax attention's MULTIPLY error a matter of size or training: does it fall with width,
    heads, MLP size or steps?

    softmax attention (depth 2) on multiply: width {32, 64, 128, 256} x heads {1, 2, 4, 8}
    x mlp_factor {1, 2, 4, 8}, and training steps.

    paper: the full 64-run product at 1M steps, and steps {10k, 100k, 1M} at width 64, 2 heads,
    mlp_factor 4. ci: one axis at a time around width 32, 2 heads, mlp_factor 4: width
    {32, 64} (128 and 256 are too slow for 2 cores), heads {1, 2, 4, 8}, mlp_factor {1, 2, 4, 8},
    steps {1/3, 1, 3} x the ci run length (300 steps).
    """
    b = get_budget(budget)
    no_smoke("attention_multiply", b)

    def one(width, heads, mlp_factor, steps=None):
        return b.run("multiply", "attention", depth=2, steps=steps,
                     model_params={"width": width, "heads": heads, "mlp_factor": mlp_factor})

    if b.name == "paper":
        runs = [one(w, h, m) for w, h, m in itertools.product((32, 64, 128, 256), (1, 2, 4, 8), (1, 2, 4, 8))]
        runs += [one(64, 2, 4, steps=s) for s in (10_000, 100_000)]
        return unique_configs(runs)
    runs = [one(w, 2, 4) for w in (32, 64)]
    runs += [one(32, h, 4) for h in (1, 2, 4, 8)]
    runs += [one(32, 2, m) for m in (1, 2, 4, 8)]
    runs += [one(32, 2, 4, steps=s) for s in (b.steps // 3, b.steps * 3)]
    return unique_configs(runs)


# ---- (3) the learned GD step ---------------------------------------------------------

@cached
def gd_step(budget: str | Budget = "ci") -> list[RunConfig]:
    """(3) How precisely do BaseConv, linear and softmax attention learn one step of gradient descent, and
    what do the LR schedule, an EMA filter and the initial LR change?

    gd_step (the explicit gradient, D=5, N=20) with depth-3 baseconv and
    linear_attention: step vs adaptive LR x EMA filter {off, on (lambda=1)} x initial LR
    {3e-4, 1e-3, 3e-3}; and the softmax-attention version.

    paper: the full product for all three models (36 runs). ci (`gd_budget`: 1500 steps): one
    axis at a time around (step schedule, no EMA, LR 3e-3) for baseconv and linear_attention
    (adaptive LR, EMA on, LR 1e-3), the base config for attention, and the base configs of all
    three trained 10x longer (15000 steps: how the learned step's precision grows with training).
    """
    b = gd_budget(budget)

    def one(model, schedule, ema, lr, budget=b):
        fields = {"ema_lambda": 1.0} if ema else {}
        if schedule == "adaptive":
            fields["schedule"] = adaptive_schedule(budget.steps, lr)
        return budget.run("gd_step", model, depth=GD_DEPTH, lr=lr, **fields)

    if b.name == "paper":
        return [one(m, s, e, lr) for m in ("baseconv", "linear_attention", "attention")
                for s in ("step", "adaptive") for e in (False, True) for lr in (3e-4, 1e-3, 3e-3)]
    runs = []
    for model in ("baseconv", "linear_attention"):
        runs += [one(model, "step", False, 3e-3), one(model, "adaptive", False, 3e-3),
                 one(model, "step", True, 3e-3), one(model, "step", False, 1e-3)]
    runs.append(one("attention", "step", False, 3e-3))
    runs += [one(model, "step", False, 3e-3, budget=b.scaled(10))
             for model in ("linear_attention", "baseconv", "attention")]
    return runs


# ---- (4) gd_k and least squares end to end -------------------------------------------


@cached
def gd_k_least_squares(budget: str | Budget = "ci") -> list[RunConfig]:
    """(4) Do the models learn k GD steps at once as they learn one, and how does least squares trained end
    to end fall with depth?

    gd_k with k = 4 (eta 0.5) for baseconv, linear_attention and attention (3 layers per
    step: depth 12), and least squares end to end vs depth {1, 2, 4, 8, 12, 16, 24, 32, 48, 64}
    for attention and baseconv.

    ci (300-step runs): gd_k at depth 4 (one step's worth of layers and one more); least
    squares at depths {1, 2, 4, 8, 16} (depth 64 costs half a second a step on one core).
    """
    b = get_budget(budget)
    no_smoke("gd_k_least_squares", b)
    if b.name == "ci":
        gd_k_depth, depths = 4, (1, 2, 4, 8, 16)
    else:
        gd_k_depth, depths = 12, LEAST_SQUARES_DEPTHS
    runs = [b.run("gd_k", m, task_params={"k": 4}, depth=gd_k_depth)
            for m in ("baseconv", "linear_attention", "attention")]
    runs += [b.run("least_squares", m, depth=d) for m in ("attention", "baseconv") for d in depths]
    return runs


# ---- (5) float64, and L-BFGS next to Adam --------------------------------------------



def as_lbfgs(cfg: RunConfig, b: Budget) -> RunConfig:
    """The same model and task trained full-batch by L-BFGS (strong Wolfe line search)."""
    data = cfg.model_dump(mode="json", exclude={"ema_lambda", "ema_decay"})
    data.update(optimizer={"name": "lbfgs", "lr": 1.0, "max_iter": b.lbfgs_max_iter, "train_size": b.lbfgs_train_size},
                schedule={"name": "constant"}, steps=b.lbfgs_steps, eval_every=max(1, b.lbfgs_steps // 10))
    return RunConfig(**data)


def twins(budget: str | Budget = "ci") -> list[tuple[str, RunConfig, RunConfig]]:
    """Grid 5 as pairs (kind, base run, twin): kind "float64" (the same run in float64) or
    "lbfgs" (the same model and task trained by L-BFGS).

    paper: grids 1-4 and 6 in float64, and the L-BFGS twin of every float32 and float64 run
    of grids 1, 3 (base LR) and 4. ci: float64 twins of multiply at depth 2 without prenorm, of
    grid 3's base linear_attention config and of least squares at depth 4; float32 L-BFGS
    twins of multiply and linear (attention, baseconv) at depth 2 without prenorm and of grid
    3's base linear_attention config.
    """
    b = get_budget(budget)
    no_smoke("dtype_optimizer", b)
    gd_lr = gd_budget(b).lr
    if b.name == "paper":
        float32 = primitives(b) + attention_multiply(b) + gd_step(b) + gd_k_least_squares(b) + added_mixers(b)
        lbfgs_base = [c for c in primitives(b) + gd_step(b) + gd_k_least_squares(b)
                      if c.optimizer.lr == b.lr and c.ema_lambda == 0 and c.schedule.name == "step"]
        lbfgs_base += [with_fields(c, dtype="float64") for c in lbfgs_base]
    else:
        base_gd = [c for c in gd_step(b) if c.ema_lambda == 0 and c.schedule.name == "step"
                   and c.optimizer.lr == gd_lr and c.model.name == "linear_attention"]
        float32 = [c for c in primitives(b) if c.task.name == "multiply"
                   and c.model.params["depth"] == 2 and not c.model.params["prenorm"]]
        float32 += base_gd
        float32 += [c for c in gd_k_least_squares(b)
                    if c.task.name == "least_squares" and c.model.params["depth"] == 4]
        lbfgs_base = [c for c in primitives(b) if c.task.name in ("multiply", "linear")
                      and c.model.name in ("attention", "baseconv")
                      and c.model.params["depth"] == 2 and not c.model.params["prenorm"]]
        lbfgs_base += base_gd
    return ([("float64", c, with_fields(c, dtype="float64")) for c in float32]
            + [("lbfgs", c, as_lbfgs(c, b)) for c in lbfgs_base])


@cached
def dtype_optimizer(budget: str | Budget = "ci") -> list[RunConfig]:
    """(5) Is the dtype or the optimizer what limits the other grids' runs: does float64 help them, does
    L-BFGS beat Adam on them?

    The runs of the other grids in float64 too, and L-BFGS next to Adam (see `twins`)."""
    return unique_configs(twin for _, _, twin in twins(budget))


# ---- (6) added mixers, conditioning --------------------------------------------------


@cached
def added_mixers(budget: str | Budget = "ci") -> list[RunConfig]:
    """(6) Where do the other mixers land on grid 1's primitives, and does the learned GD step hold as the
    problems' conditioning worsens?

    hyena, s4d, mamba, based, mlp on grid 1 (paper: the full task x prenorm x depth grid; ci:
    prenorm off, depth {1, 2}); and the learned GD step (depth 3; paper: baseconv,
    linear_attention and attention; ci: linear_attention, the one that learns the step at ci)
    on problems of condition number kappa {1, 10, 100} (least-squares kappa:
    singular values of A log-spaced in [1, kappa]). The out-of-distribution input scale of
    the learned step is evaluated from grid 3's trained models (bench.harness.iterate.shifted_mse).
    """
    b = get_budget(budget)
    no_smoke("added_mixers", b)
    if b.name == "paper":
        runs = [b.run(task, model, depth=depth, model_params={"prenorm": prenorm})
                for task in PRIMITIVE_TASKS for model in ADDED_MIXERS
                for prenorm in (True, False) for depth in (1, 2, 4, 8)]
        return runs + [b.run("gd_step", m, task_params={"kappa": k}, depth=GD_DEPTH)
                       for m in ("baseconv", "linear_attention", "attention") for k in (1.0, 10.0, 100.0)]
    runs = [b.run(task, model, depth=depth, model_params={"prenorm": False})
            for task in PRIMITIVE_TASKS for model in ADDED_MIXERS for depth in (1, 2)]
    gd = gd_budget(b)
    return runs + [gd.run("gd_step", m, task_params={"kappa": k}, depth=GD_DEPTH)
                   for k in (1.0, 10.0, 100.0) for m in ("linear_attention",)]


# ---- (7) second-order training of an exactly-expressive model -----------------------



@cached
def second_order(budget: str | Budget = "ci") -> list[RunConfig]:
    """(7) When the model can express the target exactly, what stops training short of the float32 floor:
    the optimizer, the dtype or the architecture?

    The learned GD step (gd_step) with `exact_gd_step_model`, trained from the same random
    start by Adam (grid 3's longest recipe), L-BFGS and Levenberg-Marquardt, in float32 and float64:
    how far below the float32 floor each optimizer takes a model that can express the step. And
    multiply with the bare one-layer BaseConv and softmax attention (width 32), trained by L-BFGS
    and then Levenberg-Marquardt (RunConfig.polish): what each architecture reaches when the
    optimizer is not the limit.

    ci: Adam 15,000 steps x batch 32 from LR 3e-3 (30 decays); L-BFGS 150 steps x 20 iterations on
    1,024 problems; Levenberg-Marquardt 60 steps (float64: 80) on 1,024 problems (5,120 residuals
    for 3,335 weights). paper: Adam at the paper budget, 10x the second-order steps on 4x the problems.
    """
    b = get_budget(budget)
    no_smoke("second_order", b)
    scale, size = (10, 4096) if b.name == "paper" else (1, 1024)
    adam_budget = b if b.name == "paper" else gd_budget(b).scaled(10)
    second = dict(schedule={"name": "constant"}, model_params=exact_gd_step_model())
    runs = [adam_budget.run("gd_step", "linear_attention", model_params=exact_gd_step_model())]
    runs += [polished_multiply(b, model, steps=112 * scale) for model in ("baseconv", "attention")]
    for dtype, lm_steps in (("float32", 60), ("float64", 80)):
        steps = 150 * scale
        runs.append(b.run("gd_step", "linear_attention", steps=steps, dtype=dtype, eval_every=max(1, steps // 30),
                          optimizer={"name": "lbfgs", "lr": 1.0, "max_iter": 20, "train_size": size}, **second))
        runs.append(lm_gd_step(b, dtype, lm_steps * scale, size))
    return runs


def polished_multiply(b: Budget, model: str, steps: int, **fields) -> RunConfig:
    """multiply with the bare one-layer model of grid 1's expressivity pair (width 32): L-BFGS on
    512 problems, then Levenberg-Marquardt on 16 fresh problems once L-BFGS stalls (grid 7)."""
    return b.run("multiply", model, depth=1, schedule={"name": "constant"}, steps=steps, eval_every=4,
                 model_params={**exact_multiply_model(), "width": 32},
                 optimizer={"name": "lbfgs", "lr": 1.0, "max_iter": 20, "train_size": 512},
                 polish={"name": "levenberg_marquardt", "train_size": 16, "max_params": 6000}, **fields)


def lm_gd_step(b: Budget, dtype: str, steps: int, size: int) -> RunConfig:
    """The GD step learned by `exact_gd_step_model` from a random start with dense Levenberg-Marquardt
    on `size` problems (grid 7)."""
    return b.run("gd_step", "linear_attention", steps=steps, dtype=dtype, eval_every=max(1, steps // 30),
                 optimizer={"name": "levenberg_marquardt", "train_size": size}, schedule={"name": "constant"},
                 model_params=exact_gd_step_model())


# ---- the main job: the suite's question in minutes ---------------------------------

# Steps of the main job's bare multiply runs: 12 Levenberg-Marquardt steps after the step where L-BFGS
# stalled in grid 7's records (tests/test_grids.py reads it from them). The switch is also forced there
# (polish_after): the stall is the CPU's to decide, and on a CPU where L-BFGS kept gaining a little the
# main job would run no Levenberg-Marquardt step at all
QUICK_MULTIPLY_STEPS = {"baseconv": 88, "attention": 44}
QUICK_LM_STEPS = 12


def quick() -> list[RunConfig]:
    """The runs of the main job (`python -m bench main`, profile quick): the suite's question
    answered in minutes on one core, by the recipes of grid 7 that reach the float32 floor.

    - multiply with the bare one-layer BaseConv and softmax attention (width 32): L-BFGS until it
      stalls or reaches the step where it stalled in grid 7, then 12 Levenberg-Marquardt steps
      (QUICK_MULTIPLY_STEPS; grid 7 runs the same recipe for 112 steps);
    - the GD step learned by the bare linear attention that can express it, by Levenberg-Marquardt
      (grid 7's float32 run itself: 60 steps on 1,024 problems); the main job applies it iteratively
      next to true GD.
    """
    polished = [polished_multiply(CI, model, steps=steps, polish_after=steps - QUICK_LM_STEPS)
                for model, steps in QUICK_MULTIPLY_STEPS.items()]
    return polished + [lm_gd_step(CI, "float32", 60, 1024)]


# ---- (8) to the limit: the paper's own models, second order ------------------------


TO_THE_LIMIT_SECONDS = {"ci": {"primitive": 240.0, "gd_step": 900.0, "float64": 900.0},
                        "paper": {"primitive": 4 * 3600.0, "gd_step": 8 * 3600.0, "float64": 8 * 3600.0}}


@cached
def to_the_limit(budget: str | Budget = "ci") -> list[RunConfig]:
    """(8) How far do the paper's own models go on the primitives and the GD step when second order trains
    them under a time cap?

    The paper's own models trained by the matrix-free Levenberg-Marquardt (`matrix_free_lm`),
    each run capped by seconds of training (RunConfig.time_limit_s; the record says where it
    stopped): read, linear, multiply x attention, linear_attention, baseconv x depth {1, 2, 4} with
    the paper's primitive model (`paper_primitive_model`: no LayerNorm) and depth 2 with LayerNorm;
    gd_step with the paper's BaseConv and linear-attention GD-step models (`paper_gd_step_model`),
    applied iteratively in the tables; and float64 twins of BaseConv on multiply (depth 2) and of
    the BaseConv GD step.

    ci: 4 minutes per primitive run and 15 per GD-step or float64 run, and 36 for the warm-started
    GD step (`gd_step_warm_started`): 36 x 4 + 4 x 15 + 36 = 240 minutes of one core, 2 hours on 2
    workers. paper: 4 and 8 hours (12 for the warm start).
    """
    b = get_budget(budget)
    no_smoke("to_the_limit", b)
    seconds = TO_THE_LIMIT_SECONDS[b.name]

    def one(task, model, model_params, limit, dtype="float32"):
        # gd_step scores one position per problem (5 residuals): on 512 problems (2,560 residuals for
        # 43,589 weights) the solver fits them without learning the step (docs/studies/to_the_limit.md)
        optimizer = (matrix_free_lm(train_size=GD_STEP_PROBLEMS, curvature_size=2048) if task == "gd_step"
                     else matrix_free_lm())
        return b.run(task, model, model_params=model_params, optimizer=optimizer,
                     schedule={"name": "constant"}, steps=100_000, eval_every=5, eval_size=1024, dtype=dtype,
                     time_limit_s=limit, checkpoint_every=20, depth=model_params["depth"],
                     keep_final_state=task == "gd_step")  # the tables iterate the learned steps

    # in the order a cut-off sweep should have done them: multiply and the GD step first
    prim = {(task, model, depth, layernorm): one(task, model, paper_primitive_model(depth, layernorm),
                                                 seconds["primitive"])
            for task in PRIMITIVE_TASKS for model in PAPER_MIXERS
            for depth, layernorm in ((1, False), (2, False), (4, False), (2, True))}
    runs = [prim.pop(("multiply", model, 2, False)) for model in PAPER_MIXERS]
    runs += [one("gd_step", model, paper_gd_step_model(model, b.name), seconds["gd_step"])
             for model in ("baseconv", "linear_attention")]
    runs += [prim.pop((task, model, 2, False)) for task in ("read", "linear") for model in PAPER_MIXERS]
    runs += list(prim.values())
    runs += [one("multiply", "baseconv", paper_primitive_model(2), seconds["float64"], dtype="float64"),
             one("gd_step", "baseconv", paper_gd_step_model("baseconv"), seconds["float64"], dtype="float64")]
    runs.append(gd_step_warm_started(b))
    return runs


# Adam steps before the matrix-free LM takes over, and the run's seconds of training in all
GD_WARM_START = {"ci": (96_000, 2160.0), "paper": (1_000_000, 12 * 3600.0)}


def gd_step_warm_started(b: Budget, seconds: Optional[float] = None, extends: Optional[str] = None) -> RunConfig:
    """The paper's BaseConv GD step, Adam first, then the matrix-free LM (grid 8's last run).

    From a random start the LM's curvature slice is the problem: gd_step scores 5 residuals a
    problem, so 2,048 problems give 10,240 residuals for 43,589 weights, and the step that fits
    the slice overshoots on the rest. A product on all 16,384 problems costs 8x the slice's, while an
    Adam step at batch 64 is cheap, so Adam takes the bulk (ci: 96,000 steps) and the LM the rest of
    the 36 minutes. `seconds` and `extends`: the same run given longer (RunConfig.extends)."""
    adam_steps, default_seconds = GD_WARM_START[b.name]
    return b.run("gd_step", "baseconv", model_params=paper_gd_step_model("baseconv"), depth=GD_DEPTH, lr=3e-3,
                 steps=adam_steps + 100_000, batch_size=64,
                 schedule={"name": "step", "gamma": 0.9, "every": adam_steps // 30},
                 polish=matrix_free_lm(train_size=GD_STEP_PROBLEMS, curvature_size=2048), polish_after=adam_steps,
                 polish_patience=1000, polish_eval_every=1, eval_every=2000, eval_size=1024, checkpoint_every=4000,
                 time_limit_s=default_seconds if seconds is None else seconds, extends=extends, keep_final_state=True)


# ---- (9) the ODE operator in context -------------------------------------------------

# The prompt size of bench.experiments.ode_application: 25 solved examples and a query (n_examples 26), c at 20 points, so the
# in-context least-squares problem has 25 equations in 22 unknowns (c (20), u0, 1): the size of the
# paper's notebook for least squares and GD, and of its explicit-gradient model (gd_step D=22, N=25).
ODE_TASK = {"n_points": 20, "n_examples": 26}
ODE_GD_TASK = {"D": 22, "N": 25}


@cached
def ode(budget: str | Budget = "ci") -> list[RunConfig]:
    """(9) On the ODE operator in context, does a learned GD step applied to each prompt's least-squares
    problem beat a Transformer trained end to end, in and out of distribution?

    The rows of bench.experiments.ode_application that need training: (a) a softmax Transformer trained end to end on
    ode_operator (`ODE_TASK`), and (b) BaseConv and linear attention trained on gd_step at the prompt's
    least-squares size (`ODE_GD_TASK`: the explicit gradient of Gaussian problems, as the paper trains it),
    which bench.experiments.ode_application applies iteratively as GD to each prompt's problem.

    paper: the paper's recipes: the Transformer with 12 layers, width 256, 8 heads, MLP x4, LR 1e-4, batch
    64; the GD steps with 4 layers, width 256, no MLP, LR 1e-3 (the budget's 1M steps). ci: the Transformer
    at depth 4, width 64, 14,000 Adam steps (20 minutes); for the steps, Adam and then the matrix-free LM
    (`ode_gd_step`), 40 minutes for linear attention and 250 for BaseConv (in the broadcast layout,
    `ODE_GD_LAYOUT`; 80 minutes on curvature slices, then the whole set's: the last link of the study
    chain `ode_whole_set`, bench.studies.chains): 310 minutes of one core.
    """
    b = get_budget(budget)
    no_smoke("ode", b)
    if b.name == "paper":
        runs = [b.run("ode_operator", "attention", task_params=ODE_TASK, depth=12, lr=1e-4, batch_size=64,
                      model_params={"width": 256, "heads": 8, "mlp_factor": 4})]
        return runs + [b.run("gd_step", m, task_params=ode_gd_task(m), depth=4, lr=1e-3,
                             model_params={"width": 256, "mlp": False}) for m in ("baseconv", "linear_attention")]
    # linear attention was still gaining at 20 minutes: it gets 40, going on from the 20-minute run's
    # checkpoint where one is on disk (RunConfig.extends)
    la = ode_gd_step(b, "linear_attention", 2400.0, extends=ode_gd_step(b, "linear_attention").hash)
    # the Transformer: 4 layers, width 64, 4 heads, MLP x4 (203,329 weights), Adam at batch 64 for 14,000 steps
    transformer = b.run("ode_operator", "attention", task_params=ODE_TASK, depth=4, lr=1e-3, steps=14_000,
                        batch_size=64, model_params={"width": 64, "heads": 4}, checkpoint_every=2000,
                        keep_final_state=True)
    # BaseConv: 40 minutes, then 40 more, then the whole set's Gauss-Newton steps, a study's chain of runs
    # (docs/studies/ode_whole_set.md) whose last link is the step bench.experiments.ode_application applies
    from bench.studies import chains

    baseconv = chains.run_configs("ode_whole_set")[-1]
    return [transformer, baseconv, la]


# Adam steps before the matrix-free LM takes over, and the run's seconds of training in all (ci)
ODE_GD_STEP_RECIPE = {"linear_attention": (20_000, 1200.0), "baseconv": (15_000, 2400.0)}
# BaseConv reads the problem in Liu et al.'s layout, x in every token (gd_step layout "broadcast"): in the
# first_token layout its first layer must learn to find x at position 0, and it did not learn the step
# (docs/studies/ode_whole_set.md). 3 layers, the depth of Liu et al.'s construction (87,064 weights); its
# curvature slice is 4,096 problems so that it has more residuals (90,112) than the model has weights.
ODE_GD_LAYOUT = {"linear_attention": "first_token", "baseconv": "broadcast"}
ODE_GD_CURVATURE = {"linear_attention": 2048, "baseconv": 4096}


def ode_gd_task(model: str) -> dict:
    """The gd_step parameters of grid 9's learned step for `model`: the prompt's size, in its layout."""
    layout = ODE_GD_LAYOUT[model]
    return ODE_GD_TASK if layout == "first_token" else {**ODE_GD_TASK, "layout": layout}


def ode_gd_step(b: Budget, model: str, seconds: Optional[float] = None, extends: Optional[str] = None) -> RunConfig:
    """Grid 9's learned GD step at the prompt's size (`ODE_GD_TASK`), in the architecture of its exact
    construction: linear attention as `exact_gd_step_model(22)` (2 layers, width 68, 42,454 weights),
    BaseConv in Liu et al.'s layout as `baseconv_gd_step_broadcast` (3 layers, width 4D + 1 = 89, 87,064
    weights; `ODE_GD_LAYOUT`). Adam first, then the matrix-free LM on
    8,192 problems (22 residuals each: 180,224 residuals), curvature on 2,048 (BaseConv: 4,096) of them a
    step, as grid 8's warm-started GD step."""
    adam_steps, default_seconds = ODE_GD_STEP_RECIPE[model]
    seconds = default_seconds if seconds is None else seconds
    D = ODE_GD_TASK["D"]
    params = (exact_gd_step_model(D) if model == "linear_attention"
              else {"width": 4 * D + 1, "depth": 3, "prenorm": False, "final_norm": False, "mlp": False})
    return b.run("gd_step", model, task_params=ode_gd_task(model), model_params=params, depth=params["depth"],
                 lr=3e-3, steps=adam_steps + 100_000, batch_size=64,
                 schedule={"name": "step", "gamma": 0.9, "every": adam_steps // 30},
                 polish=matrix_free_lm(train_size=8192, curvature_size=ODE_GD_CURVATURE[model]),
                 polish_after=adam_steps,
                 polish_patience=1000, polish_eval_every=1, eval_every=1000, eval_size=1024, checkpoint_every=4000,
                 time_limit_s=seconds, extends=extends, keep_final_state=True)

