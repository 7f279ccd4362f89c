"""The experiment grids, as plain Python: each grid is a function budget -> list[RunConfig].

    from bench.grids import GRIDS
    configs = GRIDS["primitives"]("ci")

    python -m bench sweep bench.grids:primitives_ci --workers 2      # one grid at one budget
    python -m bench sweep bench.grids:all_ci --workers 2             # every grid at ci
    python -m bench sweep bench.grids:primitives_paper --executor ray

Budgets (`BUDGETS`):
  paper  the paper's training recipe: batch 1024, 1M steps, Adam (eps 1e-16), LR 1e-3 decayed
         x0.9 every 10k steps, width 64, 2 heads, eval on 1024 held-out samples. Every grid at
         its full shape (full products of its axes).
  ci     the same grids sized for a 2-core CPU: width 32, batch 32, 300 steps (more for some
         grids), LR 1e-2 decayed x0.9 ten times over the run (a short run needs its time at a
         high LR: at 300 steps this recipe gets LINEAR to ~1e-1 where 3e-3 with 30 decays
         leaves it at ~2e1). The GD-step runs (grids 3 and 6) use 1500 steps from LR 3e-3 with
         30 decays. The larger grids keep the most informative subset of their axes (one axis
         at a time around a base config, fewer depths); each grid's docstring says which.
  smoke  grid 1 ("primitives") only: a handful of runs that take seconds each.

Grids (`GRIDS`; the module also exposes `<grid>_<budget>` for `bench sweep`):
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
  to_the_limit_extended  grid 8's warm-started GD step given longer (goes on from its checkpoint)
  to_the_limit_slice  grid 8's GD steps with the LM step of the curvature slice's own problem
  to_the_limit_whole_set  grid 8's warm-started GD step gone on with whole-set Gauss-Newton steps
  to_the_limit_float64  the paper's primitive BaseConv on multiply: 30 minutes of float32, then float64
  ode                 (9) the ODE operator in context: a softmax Transformer end to end on ode_operator,
                      BaseConv and linear attention on the prompt-sized GD step (applied by bench.experiments.ode_application)
  ode_whole_set       grid 9's BaseConv step gone on with whole-set Gauss-Newton steps, a chain (ci only)
"""
from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass, replace
from typing import Callable, Optional, Sequence

from bench.harness.config import RunConfig, unique_configs

BUDGETS = ("smoke", "ci", "paper")

PRIMITIVE_TASKS = ("read", "linear", "multiply")
PAPER_MIXERS = ("attention", "linear_attention", "baseconv")
ADDED_MIXERS = ("hyena", "s4d", "mamba", "based", "mlp")
LEAST_SQUARES_DEPTHS = (1, 2, 4, 8, 12, 16, 24, 32, 48, 64)
# Per-mixer parameters every grid uses. Liu et al.'s BaseConv adds its input back around the
# conv (c = conv(x) + x); conv_kind "long" starts the filter at the identity plus small noise,
# the same function at initialisation.
MODEL_DEFAULTS = {"baseconv": {"conv_kind": "long"}}


@dataclass(frozen=True)
class Budget:
    """How much training one run of a grid gets; `run()` turns it into a RunConfig."""

    name: str
    steps: int
    batch_size: int
    width: int
    heads: int
    lr: float
    decays: int  # the step schedule multiplies the LR by 0.9 this many times over the run
    eval_size: int
    curve_points: int  # evals over the run (eval_every = steps // curve_points)
    checkpoint_every: int
    lbfgs_steps: int
    lbfgs_train_size: int
    lbfgs_max_iter: int

    def scaled(self, factor: float) -> "Budget":
        """The same budget with `factor` times the steps (ci grids that need longer runs)."""
        return replace(self, steps=max(1, int(round(self.steps * factor))))

    def run(self, task: str, model: str, *, task_params: Optional[dict] = None, depth: int = 2,
            steps: Optional[int] = None, lr: Optional[float] = None, **fields) -> RunConfig:
        """A RunConfig for `model` on `task` at this budget; `fields` override RunConfig fields
        (model params go in `model_params`)."""
        steps = self.steps if steps is None else steps
        lr = self.lr if lr is None else lr
        model_params = {"width": self.width, "heads": self.heads, "depth": depth, **MODEL_DEFAULTS.get(model, {}),
                        **fields.pop("model_params", {})}
        data = dict(
            task={"name": task, "params": dict(task_params or {})},
            model={"name": model, "params": model_params},
            optimizer={"name": "adam", "lr": lr, "eps": 1e-16},
            schedule={"name": "step", "gamma": 0.9, "every": max(1, steps // self.decays)},
            steps=steps,
            batch_size=self.batch_size,
            eval_size=self.eval_size,
            eval_every=max(1, steps // self.curve_points),
            checkpoint_every=self.checkpoint_every,
        )
        data.update(fields)
        return RunConfig(**data)


PAPER = Budget(name="paper", steps=1_000_000, batch_size=1024, width=64, heads=2, lr=1e-3, decays=100,
               eval_size=1024, curve_points=100, checkpoint_every=10_000,
               lbfgs_steps=5000, lbfgs_train_size=16384, lbfgs_max_iter=20)
CI = Budget(name="ci", steps=300, batch_size=32, width=32, heads=2, lr=1e-2, decays=10,
            eval_size=256, curve_points=15, checkpoint_every=0,
            lbfgs_steps=20, lbfgs_train_size=256, lbfgs_max_iter=10)
SMOKE = Budget(name="smoke", steps=300, batch_size=32, width=32, heads=2, lr=1e-2, decays=10,
               eval_size=256, curve_points=10, checkpoint_every=0,
               lbfgs_steps=10, lbfgs_train_size=128, lbfgs_max_iter=10)
BUDGET_BY_NAME = {b.name: b for b in (SMOKE, CI, PAPER)}


def get_budget(budget: str | Budget) -> Budget:
    if isinstance(budget, Budget):
        return budget
    if budget not in BUDGET_BY_NAME:
        raise ValueError(f"budget must be one of {', '.join(BUDGETS)}, got {budget!r}")
    return BUDGET_BY_NAME[budget]


def cached(grid: Callable[[Budget], list[RunConfig]]) -> Callable[[str | Budget], list[RunConfig]]:
    """Build a grid once per budget (validating a RunConfig builds its model: not free)."""
    cache: dict[Budget, tuple[RunConfig, ...]] = {}

    @functools.wraps(grid)
    def wrapper(budget: str | Budget = "ci") -> list[RunConfig]:
        b = get_budget(budget)
        if b not in cache:
            cache[b] = tuple(grid(b))
        return list(cache[b])

    return wrapper


def _no_smoke(grid: str, b: Budget) -> None:
    if b.name == "smoke":
        raise ValueError(f"grid {grid!r} has budgets ci and paper; only 'primitives' has a smoke budget")


# ---- (1) primitives ------------------------------------------------------------------


def exact_multiply_model() -> dict:
    """The backbone reduced to one mixer (no norms, no MLP, no position embedding): BaseConv
    computes multiply exactly with it (the gate multiplies two projections of the same token,
    the conv filter starts at the identity), softmax attention cannot."""
    return {"prenorm": False, "final_norm": False, "mlp": False, "pos_emb": False}


@cached
def primitives(budget: str | Budget = "ci") -> list[RunConfig]:
    """(1) read, linear, multiply x {attention, linear_attention, baseconv} x prenorm {on, off}
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
    """(2) softmax attention (depth 2) on multiply: width {32, 64, 128, 256} x heads {1, 2, 4, 8}
    x mlp_factor {1, 2, 4, 8}, and training steps.

    paper: the full 64-run product at 1M steps, and steps {10k, 100k, 1M} at width 64, 2 heads,
    mlp_factor 4. ci: one axis at a time around width 32, 2 heads, mlp_factor 4: width
    {32, 64} (128 and 256 are too slow for 2 cores), heads {1, 2, 4, 8}, mlp_factor {1, 2, 4, 8},
    steps {1/3, 1, 3} x the ci run length (300 steps).
    """
    b = get_budget(budget)
    _no_smoke("attention_multiply", b)

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

GD_DEPTH = 3  # Liu et al.: three layers per GD step


def gd_budget(budget: str | Budget) -> Budget:
    """The learned-GD-step runs (grids 3 and 6): at ci 1500 steps from LR 3e-3, 30 decays."""
    b = get_budget(budget)
    _no_smoke("gd_step", b)
    return replace(b.scaled(5), lr=3e-3, decays=30) if b.name == "ci" else b


def adaptive_schedule(steps: int, lr: float) -> dict:
    """The adaptive LR with its clock scaled to the run (the paper's numbers at 1M steps),
    capped at the initial LR: small-batch gradients rarely agree (cosine < threshold), and an
    uncapped rule then raises the LR every period until training blows up."""
    every = max(1, steps // 100)
    return {"name": "adaptive", "gamma": 0.9, "every": every, "measure_every": every,
            "probe_batches": 64 if steps >= 100_000 else 8, "warmup": steps // 10, "max_lr": lr}


@cached
def gd_step(budget: str | Budget = "ci") -> list[RunConfig]:
    """(3) gd_step (the explicit gradient, D=5, N=20) with depth-3 baseconv and
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
    """(4) gd_k with k = 4 (eta 0.5) for baseconv, linear_attention and attention (3 layers per
    step: depth 12), and least squares end to end vs depth {1, 2, 4, 8, 12, 16, 24, 32, 48, 64}
    for attention and baseconv.

    ci (300-step runs): gd_k at depth 4 (one step's worth of layers and one more); least
    squares at depths {1, 2, 4, 8, 16} (depth 64 costs half a second a step on one core).
    """
    b = get_budget(budget)
    _no_smoke("gd_k_least_squares", b)
    if b.name == "ci":
        gd_k_depth, depths = 4, (1, 2, 4, 8, 16)
    else:
        gd_k_depth, depths = 12, LEAST_SQUARES_DEPTHS
    runs = [b.run("gd_k", m, task_params={"k": 4}, depth=gd_k_depth)
            for m in ("baseconv", "linear_attention", "attention")]
    runs += [b.run("least_squares", m, depth=d) for m in ("attention", "baseconv") for d in depths]
    return runs


# ---- (5) float64, and L-BFGS next to Adam --------------------------------------------


def with_fields(cfg: RunConfig, **fields) -> RunConfig:
    """A copy of `cfg` with some fields replaced, validated again."""
    return RunConfig(**{**cfg.model_dump(mode="json"), **fields})


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
    _no_smoke("dtype_optimizer", b)
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
    """(5) the runs of the other grids in float64 too, and L-BFGS next to Adam (see `twins`)."""
    return unique_configs(twin for _, _, twin in twins(budget))


# ---- (6) added mixers, conditioning --------------------------------------------------


@cached
def added_mixers(budget: str | Budget = "ci") -> list[RunConfig]:
    """(6) hyena, s4d, mamba, based, mlp on grid 1 (paper: the full task x prenorm x depth grid; ci:
    prenorm off, depth {1, 2}); and the learned GD step (depth 3; paper: baseconv,
    linear_attention and attention; ci: linear_attention, the one that learns the step at ci)
    on problems of condition number kappa {1, 10, 100} (least-squares kappa:
    singular values of A log-spaced in [1, kappa]). The out-of-distribution input scale of
    the learned step is evaluated from grid 3's trained models (bench.harness.iterate.shifted_mse).
    """
    b = get_budget(budget)
    _no_smoke("added_mixers", b)
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


def exact_gd_step_model(D: int = 5) -> dict:
    """The architecture of the linear-attention GD-step construction (architectures.constructions.
    linear_attention_gd_step) at D unknowns: width 3D + 2 rounded up to even (18 at D = 5), 2 heads,
    depth 2, learned position embedding, no norms, no MLP. Some setting of its weights (3,335 at
    D = 5, N = 20) computes the gd_step target exactly."""
    width = 3 * D + 2
    return {"width": width + width % 2, "heads": 2, "depth": 2, "prenorm": False, "final_norm": False, "mlp": False,
            "pos_emb": True}


@cached
def second_order(budget: str | Budget = "ci") -> list[RunConfig]:
    """(7) The learned GD step (gd_step) with `exact_gd_step_model`, trained from the same random
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
    _no_smoke("second_order", b)
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

# Steps of the main job's bare multiply runs: L-BFGS stalls, and Levenberg-Marquardt takes over, at
# step 76 for BaseConv and at step 32 for softmax attention (grid 7's records de4997bfe75a96d2 and
# 66407166c37501b7, one torch thread); each then gets 12 Levenberg-Marquardt steps. BaseConv is at
# 7.0e-14 after them; attention's eval MSE only rises from its L-BFGS plateau (0.94) under them.
# The switch is also forced there (polish_after): the stall is the CPU's to decide, and on an Intel
# Xeon BaseConv's L-BFGS was still gaining 7% every 20 steps at step 88 (1.6e-8), so without it the
# main job ran no Levenberg-Marquardt step at all
QUICK_MULTIPLY_STEPS = {"baseconv": 88, "attention": 44}
QUICK_LM_STEPS = 12


def quick() -> list[RunConfig]:
    """The runs of the main job (`python -m bench main`, profile quick): the suite's question
    answered in minutes on one core, by the recipes of grid 7 that reach the float32 floor.

    - multiply with the bare one-layer BaseConv and softmax attention (width 32): L-BFGS until it
      stalls or reaches the step where it stalled in grid 7, then 12 Levenberg-Marquardt steps
      (QUICK_MULTIPLY_STEPS; grid 7 runs the same recipe
      for 112 steps, about 17 minutes a model);
    - the GD step learned by the bare linear attention that can express it, by Levenberg-Marquardt
      (grid 7's float32 run itself: 60 steps on 1,024 problems, about 4 minutes); the main job applies
      it iteratively next to true GD.
    """
    polished = [polished_multiply(CI, model, steps=steps, polish_after=steps - QUICK_LM_STEPS)
                for model, steps in QUICK_MULTIPLY_STEPS.items()]
    return polished + [lm_gd_step(CI, "float32", 60, 1024)]


# ---- (8) to the limit: the paper's own models, second order ------------------------


def paper_primitive_model(depth: int, layernorm: bool = False) -> dict:
    """The paper's primitive model: width 64, 2 heads, MLP x4 (ReLU); LayerNorm off (the
    grid's base) or on (pre-norm and a final norm, the backbone's default)."""
    return {"width": 64, "heads": 2, "depth": depth, "mlp": True, "mlp_factor": 4, "activation": "relu",
            "prenorm": layernorm, "final_norm": layernorm}


def paper_gd_step_model(model: str, budget: str = "ci") -> dict:
    """The paper's learned-GD-step models: 3 layers, no MLP, no LayerNorm. BaseConv at width 64
    (43,589 weights); linear attention non-causal at the paper's width 256 with 16 heads on the
    `paper` budget (786k weights) and at width 64 with 4 heads on `ci` (52,037 weights: the
    paper's size costs 18x more per Gauss-Newton product, too much for a 15-minute CPU run)."""
    bare = {"depth": GD_DEPTH, "mlp": False, "prenorm": False, "final_norm": False}
    if model == "baseconv":
        return {**bare, "width": 64}
    width, heads = (256, 16) if budget == "paper" else (64, 4)
    return {**bare, "width": width, "heads": heads, "causal": False}


def matrix_free_lm(train_size: int = 512, **overrides) -> dict:
    """The matrix-free Levenberg-Marquardt settings grid 8 trains with (the README's table of
    choices says what each gave): Gauss-Newton products on half of a 512-problem training set,
    taken by torch.func.linearize, Kronecker-factored preconditioner, CG capped at 100 products
    a solve, the ratio damping rule (mu / 3 when rho > 0.5, x 2 when rho < 0.25), three
    backtracks before a re-solve."""
    return {"name": "levenberg_marquardt", "solver": "cg", "train_size": train_size,
            "curvature_size": max(1, train_size // 2), "cg_max_iter": 100, "preconditioner": "kronecker",
            "products": "linearize", "backtracks": 3, "damping_rule": "ratio", "damping_down": 1 / 3,
            "damping_up": 2.0, **overrides}


def lm_512_then_2048(**polish) -> dict:
    """The time-to-precision recipe for the paper's primitive BaseConv (bench/benchmarks/test_bench_training.py):
    the matrix-free LM on 512 problems for the first 40 steps (fast to ~1e-9), then on 2,048 fresh ones,
    its curvature on 256 of them a step; `polish` changes the second phase's LM."""
    return {"optimizer": matrix_free_lm(), "polish_after": 40, "polish_patience": 1000,
            "polish": matrix_free_lm(train_size=2048, curvature_size=256, **polish)}


def branch(start: RunConfig, seconds: float, polish: dict, **update) -> RunConfig:
    """`start` gone on from its end (RunConfig.starts_from) to `seconds` of training in all, its polish
    changed by `polish` (and the run by `update`, e.g. checkpoint_every): the one way a grid changes the
    solver partway through a run."""
    return start.model_copy(update={"polish": start.polish.model_copy(update=polish), "time_limit_s": seconds,
                                    "extends": None, "starts_from": start.hash, **update})


def extension_chain(base: RunConfig, seconds: Sequence[float], **update) -> list[RunConfig]:
    """`base` changed by `update`, once for each total of training seconds in `seconds`, each run
    extending the one before it (RunConfig.extends), so a sweep cut off goes on from the last one
    committed: run such a chain with --workers 1, in order."""
    runs: list[RunConfig] = []
    for total in seconds:
        runs.append(base.model_copy(update={**update, "time_limit_s": total,
                                            "extends": runs[-1].hash if runs else None}))
    return runs


# The LM step of the curvature slice's own problem (LevenbergMarquardtConfig.gradient "slice"; each
# solve starts from zero, since the last step was solved on another slice): for a slice with fewer
# residuals than the model has weights (`to_the_limit_slice`)
SLICE_LM = {"gradient": "slice", "warm_start": False}


TO_THE_LIMIT_SECONDS = {"ci": {"primitive": 240.0, "gd_step": 900.0, "float64": 900.0},
                        "paper": {"primitive": 4 * 3600.0, "gd_step": 8 * 3600.0, "float64": 8 * 3600.0}}


# the training problems of grid 8's GD steps (why so many: `to_the_limit`'s `one`)
GD_STEP_PROBLEMS = 16384


@cached
def to_the_limit(budget: str | Budget = "ci") -> list[RunConfig]:
    """(8) The paper's own models trained by the matrix-free Levenberg-Marquardt (`matrix_free_lm`),
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
    _no_smoke("to_the_limit", b)
    seconds = TO_THE_LIMIT_SECONDS[b.name]

    def one(task, model, model_params, limit, dtype="float32"):
        # gd_step scores one position per problem (5 residuals): 512 problems would give 2,560 residuals
        # for 43,589 weights, which the solver fits without learning the step (measured: train MSE 0.096,
        # eval 1.16 after 900 s). 16,384 problems give 81,920; curvature on 2,048 of them.
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


def gd_step_warm_started(b: Budget, seconds: Optional[float] = None, extends: Optional[str] = None,
                         adam_steps: Optional[int] = None, layout: str = "first_token", **lm_overrides) -> RunConfig:
    """The paper's BaseConv GD step, Adam first, then the matrix-free LM (grid 8's last run).

    From a random start the LM's curvature slice is the problem: gd_step scores 5 residuals a
    problem, so 2,048 problems give 10,240 residuals for 43,589 weights, and the step that fits
    the slice overshoots on the rest (measured: rho ~0.5 at best). A product on all 16,384 costs
    ~6-8 s of one core (10 of them: 60-100 s a step). Adam at batch 64 costs ~16 ms a step, so it
    takes the bulk (ci: 96,000 steps, about 25 minutes) and the LM the rest of the 36 minutes.
    `seconds` and `extends`: the same run given longer (`to_the_limit_extended`); `adam_steps` and
    `lm_overrides` (LevenbergMarquardtConfig fields): its recipe changed (`to_the_limit_slice`); `layout`:
    gd_step's token layout (`to_the_limit_broadcast`; first_token names no task parameter, so its hashes stay)."""
    default_adam_steps, default_seconds = GD_WARM_START[b.name]
    adam_steps = default_adam_steps if adam_steps is None else adam_steps
    seconds = default_seconds if seconds is None else seconds
    task_params = None if layout == "first_token" else {"layout": layout}
    return b.run("gd_step", "baseconv", task_params=task_params, model_params=paper_gd_step_model("baseconv"),
                 depth=GD_DEPTH, lr=3e-3,
                 steps=adam_steps + 100_000, batch_size=64,
                 schedule={"name": "step", "gamma": 0.9, "every": adam_steps // 30},
                 polish=matrix_free_lm(train_size=GD_STEP_PROBLEMS, **{"curvature_size": 2048, **lm_overrides}), polish_after=adam_steps,
                 polish_patience=1000, polish_eval_every=1, eval_every=2000, eval_size=1024, checkpoint_every=4000,
                 time_limit_s=seconds, extends=extends, keep_final_state=True)


# seconds of training in all for grid 8's warm-started GD step given longer
GD_EXTENDED_SECONDS = {"ci": 7260.0, "paper": 24 * 3600.0}


def to_the_limit_extended(budget: str | Budget = "ci") -> list[RunConfig]:
    """(8, extended) Grid 8's warm-started GD step (`gd_step_warm_started`) given longer: ci 121
    minutes of training instead of 36, all the extra ones second order. It goes on from the
    36-minute run's checkpoint where one is on disk (RunConfig.extends), and trains from the start
    where none is (about 2 hours of one core)."""
    b = get_budget(budget)
    _no_smoke("to_the_limit_extended", b)
    base = gd_step_warm_started(b)
    return [gd_step_warm_started(b, GD_EXTENDED_SECONDS[b.name], extends=base.hash)]


# Adam steps, then seconds of training in all, for the warm-started GD step with it
GD_SLICE_WARM_START = {"ci": (24_000, 4800.0), "paper": (1_000_000, 12 * 3600.0)}


@cached
def to_the_limit_slice(budget: str | Budget = "ci") -> list[RunConfig]:
    """(8, slice) Grid 8's GD steps with the slice's own LM step (`SLICE_LM`). gd_step scores 5 residuals
    a problem, so the 2,048-problem curvature slice has fewer residuals (10,240) than the BaseConv has
    weights (43,589); with the gradient from all 16,384 problems, its part outside the slice's
    Gauss-Newton range is divided by mu alone and the step overshoots wherever mu is small (the 121-minute
    run's damping cycles). Here each step fits its slice, a block-Kaczmarz step: the BaseConv and
    linear-attention GD steps from the random start as in grid 8 (same time cap), and the BaseConv warm
    started by a quarter of grid 8's Adam phase (ci: 24,000 steps, then the LM; 80 minutes in all)."""
    b = get_budget(budget)
    _no_smoke("to_the_limit_slice", b)
    # grid 8's float32 GD steps from the random start, their LM changed and nothing else
    runs = [c.model_copy(update={"optimizer": c.optimizer.model_copy(update=SLICE_LM)}) for c in to_the_limit(b)
            if c.task.name == "gd_step" and c.dtype == "float32" and c.polish is None]
    adam_steps, total = GD_SLICE_WARM_START[b.name]
    return [gd_step_warm_started(b, total, adam_steps=adam_steps, **SLICE_LM)] + runs


# The Gauss-Newton step of the whole training set: the curvature on all 16,384 problems (81,920 residuals for
# 43,589 weights), gradient and acceptance on the same set; the last step is no start for CG's next solve
WHOLE_SET_LM = {"curvature_size": GD_STEP_PROBLEMS, "gradient": "whole", "warm_start": False}
# ... with a trust region that acts: the slice run leaves the damping at its 1e-15 floor, where doubling it
# on a refused step changes nothing, so every whole-set step after the first was cut to 1/4-1/8 of its length
# (rho 0) and a refused one re-solved at the same damping. A floor of 1e-8 (the GN diagonal's median is 6e-4),
# x10 on a poor step, and the length among 1, 1/2, 1/4 where rho < 0.5
WHOLE_SET_DAMPED = {**WHOLE_SET_LM, "min_damping": 1e-8, "damping_up": 10.0, "line_search": True}
# seconds of training in all, the slice run's 4,800 included: the first whole-set run, then each run of the
# damped chain (ci: 30 minutes more each from 170 minutes)
WHOLE_SET_SECONDS = {"ci": (6600.0, tuple(10200.0 + 1800.0 * k for k in range(6))),
                     "paper": (16 * 3600.0, (24 * 3600.0,))}


@cached
def to_the_limit_whole_set(budget: str | Budget = "ci") -> list[RunConfig]:
    """(8, whole set) The warm-started BaseConv GD step of `to_the_limit_slice` (80 minutes; eval MSE 2.8e-7,
    the training MSE level at 1.4e-7 for every LM on 2,048-problem slices) gone on from its end
    (RunConfig.starts_from) with the whole set's Gauss-Newton step (`WHOLE_SET_LM`: ~8 minutes a step of
    one core), then from that run's end with its damping made to act (`WHOLE_SET_DAMPED`).

    The damped runs are a chain, 30 minutes more each (ci), each extending the one before
    (RunConfig.extends) and keeping its final state, so a sweep cut off goes on from the last one
    committed: run it with --workers 1, in order. Each run is a row of grid 8's tables."""
    b = get_budget(budget)
    _no_smoke("to_the_limit_whole_set", b)
    start = to_the_limit_slice(b)[0]
    first_seconds, chain_seconds = WHOLE_SET_SECONDS[b.name]
    first = branch(start, first_seconds, WHOLE_SET_LM)
    damped = first.polish.model_copy(update=WHOLE_SET_DAMPED)
    return [first] + extension_chain(first, chain_seconds, polish=damped, starts_from=first.hash)


# Grid 8's warm-started BaseConv GD step in Liu et al.'s layout (x in every token, gd_step layout "broadcast"):
# grid 9's BaseConv step learned in it at D = 22 and its whole-set steps gained x0.5-0.66 each down to 3e-8
# (ODE_WHOLE_SET_SECONDS), where grid 8's first_token chain gains x0.96-0.98 at the same level. The same Adam
# phase as `to_the_limit_slice` (24,000 steps), then at once the whole set's Gauss-Newton step with the line
# search, as grid 9's (`ODE_WHOLE_SET_LM`): no slice phase, whose steps the whole set's replaced there. The
# damping starts at 1e-6, not 1e-3: at ~8 minutes a step, walking down by 1/3 a step from 1e-3 would cost an hour
BROADCAST_LM = {**WHOLE_SET_LM, "line_search": True, "damping": 1e-6}
# seconds of training in all, Adam's ~7 minutes included: a chain of links, each extending the one before
BROADCAST_SECONDS = {"ci": tuple(2400.0 * k for k in range(1, 6)), "paper": (12 * 3600.0,)}
# Its fourth link (1.26e-9, be82b0a72453a9c2) gained x0.89-0.91 a step, the damping down to 7.7e-15 and CG's
# residual up to 0.7 at its 100-product cap. Beside the fifth link, from the fourth's end and as long: the whole
# set's model over the plane of the solved step and the last one, mu by rho (the float64 BaseConv's x0.983 a step
# became x0.94-0.97 with it, record 23243d5ecb0faa48; here the curvature is the whole set's already, so only
# the last step's direction is new)
BROADCAST_PLANE = {"whole_set_plane": True, "plane_damping": "rho"}
BROADCAST_PLANE_EXTRA_SECONDS = {"ci": 0.0, "paper": 4 * 3600.0}
# It gained x0.87-0.90 a step where the fifth link gained x0.93-0.94 (8.8e-10 against 1.03e-9 in the same three
# steps, record a2cc27545a33b48e): 40 minutes more of it, extending it
BROADCAST_PLANE_LINK_SECONDS = {"ci": 2400.0, "paper": 4 * 3600.0}
# It gained x0.88, 0.87, 0.92 (6.2e-10, record fdd05bbc96850f4a) with CG's 100 products started from zero each
# step on a system that changes little from one step to the next. From its end, side by side for 50 minutes
# more each: the plane run extended once more, and the same with the last three solves' CG directions
# preconditioning the next solve (`recycle`, bench.solvers.matrix_free.limited_memory_preconditioner)
BROADCAST_RECYCLE = {"recycle": 300}
BROADCAST_RECYCLE_SECONDS = {"ci": 3000.0, "paper": 4 * 3600.0}
# By then eval / train is 1.9x (5.4e-10 against 2.8e-10): the 16,384 problems are fitted past what they teach,
# as the float64 BaseConv's 8,192 were (twice the problems took its eval / train from 1.67x to 1.13x). From the
# extension's end, on twice the problems (the same 16,384 and as many new ones). The curvature on all 32,768 is
# refused before training on a 24 GB machine (about 24 GiB of activations): it is on half of them a step
# (81,920 residuals for 43,653 weights), the gradient, the plane and the acceptance on all of them
BROADCAST_MORE_PROBLEMS = {"train_size": 2 * GD_STEP_PROBLEMS, "curvature_size": GD_STEP_PROBLEMS}
BROADCAST_MORE_PROBLEMS_SECONDS = {"ci": 1800.0, "paper": 4 * 3600.0}


@cached
def to_the_limit_broadcast(budget: str | Budget = "ci") -> list[RunConfig]:
    """(8, broadcast) Grid 8's warm-started BaseConv GD step (the paper's model, 3 layers, width 64) in Liu et
    al.'s token layout, x in every token (`BROADCAST_LM`): Adam for `to_the_limit_slice`'s 24,000 steps, then
    the whole set's Gauss-Newton steps, as a chain of runs (`BROADCAST_SECONDS`), each extending the one before
    and keeping its final state: run it with --workers 1, in order. Last, beside the chain's last link, the same
    steps with the whole set's plane (`BROADCAST_PLANE`), then that run extended twice, and beside its second
    extension the same with CG's directions recycled (`BROADCAST_RECYCLE`); from that extension's end, twice
    the problems (`BROADCAST_MORE_PROBLEMS`). Each run is a row of grid 8's tables."""
    b = get_budget(budget)
    _no_smoke("to_the_limit_broadcast", b)
    adam_steps, _ = GD_SLICE_WARM_START[b.name]
    seconds = BROADCAST_SECONDS[b.name]
    first = gd_step_warm_started(b, seconds[0], adam_steps=adam_steps, layout="broadcast", **BROADCAST_LM)
    chain = extension_chain(first, seconds)
    # ci: from the next-to-last link's end to the last one's length; paper: from its one link's end, 4 hours more
    start = chain[-2] if len(chain) > 1 else chain[-1]
    plane = branch(start, seconds[-1] + BROADCAST_PLANE_EXTRA_SECONDS[b.name], BROADCAST_PLANE, keep_final_state=True)
    plane_longer = extension_chain(plane, (plane.time_limit_s, plane.time_limit_s + BROADCAST_PLANE_LINK_SECONDS[b.name]))[-1]
    more = plane_longer.time_limit_s + BROADCAST_RECYCLE_SECONDS[b.name]
    plane_longest = extension_chain(plane_longer, (plane_longer.time_limit_s, more))[-1]
    recycled = branch(plane_longer, more, BROADCAST_RECYCLE, keep_final_state=True)
    more_problems = branch(plane_longest, more + BROADCAST_MORE_PROBLEMS_SECONDS[b.name], BROADCAST_MORE_PROBLEMS,
                           keep_final_state=True)
    return chain + [plane, plane_longer, plane_longest, recycled, more_problems]


# seconds of training in all: the float32 run, then each float64 run going on from it (a chain, as the
# whole-set runs: each extends the one before)
FLOAT64_LADDER_SECONDS = {"ci": (1800.0, tuple(1800.0 + 1200.0 * k for k in range(1, 7))),
                          "paper": (4 * 3600.0, (12 * 3600.0,))}


@cached
def to_the_limit_float64(budget: str | Budget = "ci") -> list[RunConfig]:
    """(8, float64) How far below float32's floor the paper's primitive BaseConv gets on MULTIPLY: the
    recipe that took it to 8.2e-13 in 26 minutes of one core in float32 (time to precision,
    `cg_lm_512_then_2048_line_search`: the LM on 512 problems for 40 steps, then on 2,048 fresh ones with
    the line search), trained in float32 for 30 minutes (ci), then going on from its end in float64
    (RunConfig.starts_from with dtype float64), 20 minutes more a run. Run with --workers 1, in order."""
    b = get_budget(budget)
    _no_smoke("to_the_limit_float64", b)
    float32_seconds, float64_seconds = FLOAT64_LADDER_SECONDS[b.name]
    first = b.run("multiply", "baseconv", model_params=paper_primitive_model(2), depth=2,
                  schedule={"name": "constant"}, steps=100_000, eval_every=1, eval_size=1024,
                  **lm_512_then_2048(line_search=True), polish_eval_every=1, checkpoint_every=5,
                  time_limit_s=float32_seconds, keep_final_state=True)
    return [first] + extension_chain(first, float64_seconds, dtype="float64", starts_from=first.hash)


# Two ways the float64 chain might go on faster. By 3.85e-15 (b61a6e1a10e9a7e5) half of its steps were refused
# at full length and CG ended at a residual of 0.4-1.7 of |g| at its 100-product cap, the damping below 1e-12.
# Its curvature slice is 256 problems, 102,400 residuals (400 a problem) for the model's 100,810 weights,
# barely more: the ODE BaseConv's slice pathology (`ODE_WHOLE_SET_LM`)? Twice the slice (~2x the time a
# product) took the train MSE from 2.49e-15 to 1.62e-15 in 20 steps while the eval MSE stopped at 3.56e-15
# and rose (record 3f121ab50fde81fe): the 2,048 problems are fitted past what they teach. So, one change
# each, all else the chain's: twice the slice, or a training set four times as large (its gradient and
# trial losses ~4x the time, the products the same)
FLOAT64_VARIANTS = {"wider_slice": {"curvature_size": 512}, "more_problems": {"train_size": 8192}}
FLOAT64_VARIANT_SECONDS = {"ci": 7800.0 + 2400.0, "paper": 12 * 3600.0 + 4 * 3600.0}
# The 8,192 problems took the eval MSE to 1.81e-15 (record de5c0e70960f4305), x0.983 a step, with 17 of 32
# steps refused at full length and CG ending at a residual of 0.24-1.5 of |g| at its 100-product cap. From
# its end, four times the products: whether a solve nearer convergence buys more a second than it costs
FLOAT64_LONGER_CG = {"cg_max_iter": 400}
FLOAT64_LONGER_CG_SECONDS = {"ci": 2400.0, "paper": 4 * 3600.0}
# At the longer-CG run's end (1.58e-15, 7d8f9670c22b978d) the whole set's Gauss-Newton model predicts the loss
# along the step to 0.1% and the curvature slice's has half its curvature there (results/step_model): the
# slice, not the model nor the solve, limits the step. From the 8,192-problem run's end as the longer CG,
# with 100 products, the step the whole set's model takes over the plane of the solved step and the last one
FLOAT64_WHOLE_SET_PLANE = {"whole_set_plane": True}
# With it every step was taken and foreseen (rho 1.00), but mu, following the slice's fidelity, rose from 2e-11
# to 6e-9 and each step's gain fell from x0.97 to x0.995 (record 5dade19a467191c0). The same with mu by rho alone
FLOAT64_PLANE_BY_RHO = {**FLOAT64_WHOLE_SET_PLANE, "plane_damping": "rho"}
# It went from 1.81e-15 to 1.09e-16 in 44 steps (record 23243d5ecb0faa48), the damping at its 1e-15 floor and
# the plane's step nearly all the last step's (coefficients ~0.03 and ~1): 40 minutes more of it, extending it
FLOAT64_PLANE_EXTENSION_SECONDS = {"ci": 2400.0, "paper": 4 * 3600.0}
# ... and beside it, as long from the same end, the plane widened by the preconditioned gradient: whether a
# third direction buys more a step than its product costs
FLOAT64_PLANE_GRADIENT = {**FLOAT64_PLANE_BY_RHO, "plane_gradient": True}
# The extension reached 3.29e-17 (record 2971fab4ed5d93a5), x0.974 a step, but its eval / train MSE grew from
# 1.23x to 1.67x: from its end, twice the training problems (16,384; four times would not fit in memory beside
# a second run), whether the training set stops it again
FLOAT64_TWICE_THE_PROBLEMS = {"train_size": 16384}


@cached
def to_the_limit_float64_variants(budget: str | Budget = "ci") -> list[RunConfig]:
    """(8, float64 variants) The float64 chain's run at 3.85e-15 (ci: its fifth float64 run, 130 minutes
    in all; paper: its only one) gone on from its end (RunConfig.starts_from) for 40 more minutes (ci)
    with one change each (`FLOAT64_VARIANTS`): whether the slice or the training set stops the chain; then
    the larger training set's run gone on with a longer CG (`FLOAT64_LONGER_CG`): whether the solve does;
    and with the whole set's model choosing the step (`FLOAT64_WHOLE_SET_PLANE`, and `FLOAT64_PLANE_BY_RHO`):
    whether the slice does; then the last gone on further, as it is (extending it) and with the preconditioned
    gradient in the plane (`FLOAT64_PLANE_GRADIENT`, from its end); and from the extension's end on twice the
    training problems (`FLOAT64_TWICE_THE_PROBLEMS`)."""
    b = get_budget(budget)
    _no_smoke("to_the_limit_float64_variants", b)
    first, *chain = to_the_limit_float64(b)
    start = chain[-2] if b.name == "ci" else chain[-1]
    variants = {name: branch(start, FLOAT64_VARIANT_SECONDS[b.name], change, checkpoint_every=1)
                for name, change in FLOAT64_VARIANTS.items()}
    more_problems = variants["more_problems"]
    seconds = more_problems.time_limit_s + FLOAT64_LONGER_CG_SECONDS[b.name]
    longer_cg = branch(more_problems, seconds, FLOAT64_LONGER_CG)
    plane = branch(more_problems, seconds, FLOAT64_WHOLE_SET_PLANE)
    plane_by_rho = branch(more_problems, seconds, FLOAT64_PLANE_BY_RHO)
    plane_by_rho_longer = extension_chain(plane_by_rho, (seconds, seconds + FLOAT64_PLANE_EXTENSION_SECONDS[b.name]))[-1]
    plane_gradient = branch(plane_by_rho, plane_by_rho_longer.time_limit_s, FLOAT64_PLANE_GRADIENT)
    twice_the_problems = branch(plane_by_rho_longer, plane_by_rho_longer.time_limit_s
                                + FLOAT64_PLANE_EXTENSION_SECONDS[b.name], FLOAT64_TWICE_THE_PROBLEMS)
    return [*variants.values(), longer_cg, plane, plane_by_rho, plane_by_rho_longer, plane_gradient, twice_the_problems]


# ---- (9) the ODE operator in context -------------------------------------------------

# The prompt size of bench.experiments.ode_application: 25 solved examples and a query (n_examples 26), c at 20 points, so the
# in-context least-squares problem has 25 equations in 22 unknowns (c (20), u0, 1): the size of the
# paper's notebook for least squares and GD, and of its explicit-gradient model (gd_step D=22, N=25).
ODE_TASK = {"n_points": 20, "n_examples": 26}
ODE_GD_TASK = {"D": 22, "N": 25}


@cached
def ode(budget: str | Budget = "ci") -> list[RunConfig]:
    """(9) The rows of bench.experiments.ode_application that need training: (a) a softmax Transformer trained end to end on
    ode_operator (`ODE_TASK`), and (b) BaseConv and linear attention trained on gd_step at the prompt's
    least-squares size (`ODE_GD_TASK`: the explicit gradient of Gaussian problems, as the paper trains it),
    which bench.experiments.ode_application applies iteratively as GD to each prompt's problem.

    paper: the paper's recipes: the Transformer with 12 layers, width 256, 8 heads, MLP x4, LR 1e-4, batch
    64; the GD steps with 4 layers, width 256, no MLP, LR 1e-3 (the budget's 1M steps). ci: the Transformer
    at depth 4, width 64, 14,000 Adam steps (20 minutes); for the steps, Adam and then the matrix-free LM
    (`ode_gd_step`), 40 minutes for linear attention and 250 for BaseConv (in the broadcast layout,
    `ODE_GD_LAYOUT`; 80 minutes on curvature slices, then the whole set's, `ODE_WHOLE_SET_LM`): 310
    minutes of one core.
    """
    b = get_budget(budget)
    _no_smoke("ode", b)
    if b.name == "paper":
        runs = [b.run("ode_operator", "attention", task_params=ODE_TASK, depth=12, lr=1e-4, batch_size=64,
                      model_params={"width": 256, "heads": 8, "mlp_factor": 4})]
        return runs + [b.run("gd_step", m, task_params=ode_gd_task(m), depth=4, lr=1e-3,
                             model_params={"width": 256, "mlp": False}) for m in ("baseconv", "linear_attention")]
    # linear attention was still gaining x0.5 a step at 20 minutes: it gets 40, going on from the 20-minute
    # run's checkpoint where one is on disk (RunConfig.extends)
    la = ode_gd_step(b, "linear_attention", 2400.0, extends=ode_gd_step(b, "linear_attention").hash)
    # the Transformer: 4 layers, width 64, 4 heads, MLP x4 (203,329 weights), Adam at batch 64 for 14,000 steps
    # (about 85 ms a step on one core: 20 minutes)
    transformer = b.run("ode_operator", "attention", task_params=ODE_TASK, depth=4, lr=1e-3, steps=14_000,
                        batch_size=64, model_params={"width": 64, "heads": 4}, checkpoint_every=2000,
                        keep_final_state=True)
    # BaseConv in the broadcast layout: 1.5e-5 at 40 minutes, 4 LM steps of ~8 minutes (x0.25 the first,
    # x0.45-0.87 the next ones), 1.05e-5 at 80 (record fd101f35ce1207d6), going on from the 40-minute run
    # as linear attention does; then from the 80-minute run's end with the whole set's Gauss-Newton step, a
    # chain of runs (`ode_whole_set`) whose last one is the step bench.experiments.ode_application applies
    baseconv = ode_whole_set(b)[-1]
    return [transformer, baseconv, la]


@cached
def ode_whole_set(budget: str | Budget = "ci") -> list[RunConfig]:
    """(9, BaseConv; ci only) Grid 9's BaseConv step gone on from the 80-minute run's end (on curvature
    slices) with the Gauss-Newton step of its whole training set (`ODE_WHOLE_SET_LM`), in a chain of runs
    each extending the one before (`ODE_WHOLE_SET_SECONDS`): run it with --workers 1, before `ode`."""
    b = get_budget(budget)
    if b.name != "ci":
        raise ValueError(f"ode_whole_set has a ci budget only, not {b.name!r}; the paper budget's step is Adam's")
    slice_run = ode_gd_step(b, "baseconv", 4800.0, extends=ode_gd_step(b, "baseconv").hash)
    whole_set = branch(slice_run, ODE_WHOLE_SET_SECONDS[0], ODE_WHOLE_SET_LM, checkpoint_every=1)
    return extension_chain(whole_set, ODE_WHOLE_SET_SECONDS)


# Adam steps before the matrix-free LM takes over, and the run's seconds of training in all (ci)
ODE_GD_STEP_RECIPE = {"linear_attention": (20_000, 1200.0), "baseconv": (15_000, 2400.0)}
# BaseConv reads the problem in Liu et al.'s layout, x in every token (gd_step layout "broadcast"): in the
# first_token layout its first layer must learn to find x at position 0, and at 4 layers, width 89 (111,806
# weights) Adam was at eval MSE 0.66 after 15,000 steps and the LM after it at 0.58 (record e32bd224d6edd62f;
# with each slice's own LM step 1.07, record 14de7d4df710705e). In the broadcast layout the same Adam
# reaches 6.2e-4 by step 12,000 (record ad7c7d062b3cab51) at 3 layers, the depth of Liu et al.'s construction (87,064 weights), whose
# curvature slice is 4,096 problems so that it has more residuals (90,112) than the model has weights.
ODE_GD_LAYOUT = {"linear_attention": "first_token", "baseconv": "broadcast"}
ODE_GD_CURVATURE = {"linear_attention": 2048, "baseconv": 4096}
# After 80 minutes on 4,096-problem curvature slices every full LM step of the BaseConv was refused and its
# half accepted (x0.98-0.99 a step) while the damping doubled each step: the gradient of all 8,192 problems
# has a part outside the slice's Gauss-Newton range (90,112 residuals for 87,064 weights), which the step
# divides by mu alone, as grid 8's slices showed (`to_the_limit_whole_set`). So the curvature of the whole
# set (180,224 residuals; ~2x the time a product), CG from zero each step, and the line search
ODE_WHOLE_SET_LM = {"curvature_size": 8192, "warm_start": False, "line_search": True}
# seconds of training in all, the 80-minute run's included: the first whole-set run, then 30 minutes more a
# run. The first one's steps gained x0.99, 0.99, 0.96, 0.91, 0.81, 0.68 as the damping came down from the
# slice run's 4.7e-3, to 5.04e-6 (record 6a1e5c65a171455f); the second x0.57, x0.51, to 1.46e-6
# (39f6caa353d06876); the next two x0.47-0.66 a step, to 3.22e-8 (bbbbfdab1352a578), the gain shrinking as
# CG's residual at its 100-product cap grows (0.09 to 0.37 of |g|) with the damping down to 3e-9
ODE_WHOLE_SET_SECONDS = (9600.0, 11400.0, 13200.0, 15000.0)


def ode_gd_task(model: str) -> dict:
    """The gd_step parameters of grid 9's learned step for `model`: the prompt's size, in its layout."""
    layout = ODE_GD_LAYOUT[model]
    return ODE_GD_TASK if layout == "first_token" else {**ODE_GD_TASK, "layout": layout}


def ode_gd_step(b: Budget, model: str, seconds: Optional[float] = None, extends: Optional[str] = None) -> RunConfig:
    """Grid 9's learned GD step at the prompt's size (`ODE_GD_TASK`), in the architecture of its exact
    construction: linear attention as `exact_gd_step_model(22)` (2 layers, width 68, 42,454 weights),
    BaseConv in Liu et al.'s layout as `baseconv_gd_step_broadcast` (3 layers, width 4D + 1 = 89, 87,064
    weights; `ODE_GD_LAYOUT`). Adam first (about 22 / 26 ms a step on one core), then the matrix-free LM on
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


# ---- registry ------------------------------------------------------------------------


GRIDS: dict[str, Callable[[str | Budget], list[RunConfig]]] = {
    "primitives": primitives,
    "attention_multiply": attention_multiply,
    "gd_step": gd_step,
    "gd_k_least_squares": gd_k_least_squares,
    "dtype_optimizer": dtype_optimizer,
    "added_mixers": added_mixers,
    "second_order": second_order,
    "to_the_limit": to_the_limit,
    "to_the_limit_extended": to_the_limit_extended,
    "to_the_limit_slice": to_the_limit_slice,
    "to_the_limit_whole_set": to_the_limit_whole_set,
    "to_the_limit_broadcast": to_the_limit_broadcast,
    "to_the_limit_float64": to_the_limit_float64,
    "to_the_limit_float64_variants": to_the_limit_float64_variants,
    "ode": ode,
    "ode_whole_set": ode_whole_set,
}


# grids whose runs are rows of another grid's tables (tables and the report fold them in)
ROWS_OF = {"to_the_limit_extended": "to_the_limit", "to_the_limit_slice": "to_the_limit",
           "to_the_limit_whole_set": "to_the_limit", "to_the_limit_broadcast": "to_the_limit",
           "to_the_limit_float64_variants": "to_the_limit_float64",
           "ode_whole_set": "ode"}


# the budgets of the grids that do not have ci and paper: only grid 1 has a smoke budget, and grid 9's
# whole-set chain exists only at ci (at paper the step is Adam's)
GRID_BUDGETS = {"primitives": BUDGETS, "ode_whole_set": ("ci",)}


def grid_budgets(name: str) -> tuple[str, ...]:
    return GRID_BUDGETS.get(name, ("ci", "paper"))


# The order `all_<budget>` runs the grids in: what the headline tables and figures need first.
RUN_ORDER = ("gd_step", "primitives", "gd_k_least_squares", "added_mixers", "attention_multiply", "dtype_optimizer",
             "second_order", "to_the_limit", "ode_whole_set", "ode", "to_the_limit_extended", "to_the_limit_slice")


def all_grids(budget: str | Budget = "ci") -> list[RunConfig]:
    """Every grid at one budget (in RUN_ORDER), without duplicates."""
    b = get_budget(budget)
    return unique_configs(c for name in RUN_ORDER if b.name in grid_budgets(name) for c in GRIDS[name](b))


def grid_of(cfg_hash: str, budget: str | Budget = "ci") -> list[str]:
    """The names of the grids (at `budget`) that contain the run with this config hash."""
    return [name for name, fn in GRIDS.items() if get_budget(budget).name in grid_budgets(name)
            and any(c.hash == cfg_hash for c in fn(budget))]


def sweep_names() -> dict[str, Callable[[], list[RunConfig]]]:
    """The zero-argument grids `python -m bench sweep bench.grids:NAME` takes: <grid>_<budget> for
    every grid and budget it has, and all_<budget>."""
    names = {f"{name}_{b}": functools.partial(fn, b) for name, fn in GRIDS.items() for b in grid_budgets(name)}
    names.update({f"all_{b}": functools.partial(all_grids, b) for b in ("ci", "paper")})
    return names


def __getattr__(name: str):
    # module attributes for the sweep names (PEP 562), so bench.grids:primitives_ci resolves
    names = sweep_names()
    if name in names:
        return names[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(sweep_names()))
