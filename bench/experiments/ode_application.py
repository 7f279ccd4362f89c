"""In-context ODE operator learning (Liu et al.'s application): every method on the same prompts, in
distribution and along the paper's three out-of-distribution axes, the paper's numbers beside ours.

    python -m bench ode                                  # results/ode/: comparison.{json,csv,md}, ratios.md,
                                                         # floors.md, collocation.md, results/figures/ode_ood.png
    python -m bench ode --prompts 256 --gd-steps 10000 --construction-steps 200 --grid bench.grids:ode_ci

Prompts: ode_operator (eqn_class 1) at the sizes of bench.grids.ODE_TASK: 25 solved examples and a
query, c at 20 points. Settings: in distribution (operator_scale 1, gp_length 0.1, u0_scale 1) and one
axis at a time: operator_scale x 1/16 .. 16, gp_length 0.1 .. 1, u0_scale x 1/16 .. 16. Every setting
draws its prompts from the same eval stream, so the settings differ only by their scales.

The least-squares problem of a prompt: A (25, 22) with rows (c_i (20), u0_i, 1), b_i = u_i(t_q), the query
row a_q. For eqn_class 1 it is consistent (primitives.ode: u(t_q) is linear in the row), so every method
but the Transformer predicts a_q . x with its own x:

  (a) transformer     softmax attention trained end to end on ode_operator: it reads the prompt
  (b) learned step    BaseConv / linear attention trained on gd_step (D=22, N=25, Gaussian problems) and
                      applied as GD: x <- x - eta * model(tokens(A, b, x))[:, -1], `learned_steps` times,
                      in the layout of the run's task (gd_tokens; BaseConv: x in every token, broadcast_tokens)
  (c) GD              x <- x - eta A^T (A x - b) / N from x = 0 (primitives.algorithms.gd_step), `gd_steps`
                      times in float32; in float64 its exact-arithmetic value (`gd_exact_arithmetic`,
                      through the eigendecomposition of A^T A / N), at `gd_steps` and 10 x `gd_steps`
  (d) least squares   float64 QR (primitives.algorithms.least_squares_solution) of the float64 prompt
  (e) constructions   the hand-set one-step GD models (BaseConv, 4 layers, width 4D + 1 = 89; linear
                      attention, 2 layers) iterated `construction_steps` times, float32 and float64; and
                      the map of the BaseConv Newton-Schulz construction (4 + K layers, the GD iterate 2^K):
                      E = I - eta M, d = eta g_0, K times (d <- d + E d, E <- E E), x = x_0 - d. That model
                      is not built at D = 22: its width is 6,050 (`newton_schulz_size`).

Step size: eta = 1 / lambda_max, the largest eigenvalue of M = A^T A / N over the setting's prompts: one
step for every prompt of a setting, as a model with a fixed step would use it.

Error of a prompt: (prediction - exact target)^2 in float64. Reported: median and quartiles over the
prompts (and the mean). Rows (a) and (b) load the weights of the grid's runs (results/runs and
results/checkpoints); a run without a record is "not trained", one without a checkpoint "no checkpoint"
(--retrain retrains it deterministically into results/scratch, bench.harness.iterate.trained_model).

The headline ratios (README, "In-context ODEs"):
  MSE ratio         median squared error of the Transformer / that of a method, in distribution
  OOD gap           of a method at a setting: median error there / median error in distribution; the
                    method's gap is its largest over the OOD settings; the gap ratio of a method is the
                    Transformer's gap / the method's gap (the same with differences, median OOD - median ID)
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Optional

import torch
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from primitives import algorithms as alg
from primitives import make_task, stream_generator
from primitives.least_squares import gd_tokens

from bench.harness.config import RunConfig, describe_validation_error
from bench.grids import ODE_TASK
from bench.reporting.frames import budget_text
from bench.harness.records import environment, has_weights, load_model, load_result

OUT = Path("results/ode")
DEFAULT_GRID = "bench.grids:ode_ci"
OPERATOR_SCALES = (1 / 16, 1 / 4, 1.0, 4.0, 16.0)
GP_LENGTHS = (0.1, 0.2, 0.5, 1.0)
U0_SCALES = (1 / 16, 1 / 4, 1.0, 4.0, 16.0)
AXES = {"operator_scale": OPERATOR_SCALES, "gp_length": GP_LENGTHS, "u0_scale": U0_SCALES}
IN_DISTRIBUTION = "in distribution"
METHOD_ORDER = ("transformer", "learned_step", "gd", "least_squares", "construction")  # (a) .. (e)

# The paper's numbers (its code's notebook notebooks/app_odes.ipynb): in distribution, read off its plot
# of 5 prompts (about +-0.3 decade); the Transformer (12 layers, 9.48M weights) out of distribution along
# operator_scale, printed as 25th / 50th / 75th percentiles.
PAPER_IN_DISTRIBUTION = {"least squares": 1e-9, "BaseConv (learned GD step)": 4e-7, "GD": 4e-7, "Transformer": 8e-4}
PAPER_TRANSFORMER_OPERATOR_SCALE = {  # scale: (q25, median, q75)
    1 / 16: (2.6e-4, 1.93e-3, 6.0e-3), 1 / 4: (None, 2.20e-3, None), 1.0: (None, 2.57e-3, None),
    4.0: (None, 6.34e-3, None), 16.0: (5.0e-3, 2.10e-2, 2.5e-1)}
PAPER_HEADLINES = {"mse_ratio": "100,000x lower MSE than standard Transformers trained end to end",
                   "ood_gap_ratio": "10,000x smaller generalization gap on out-of-distribution problems"}


class ODEComparisonConfig(BaseModel):
    """What one comparison evaluates; validated with messages that name the field."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompts: int = Field(256, ge=1, description="prompts per setting (the issue asks for at least 256)")
    gd_steps: int = Field(10_000, ge=1, description="iterations of GD (and of the learned steps, unless learned_steps)")
    # a learned step costs a model forward per iteration (on one CPU core, for the 13 settings' 3,328 prompts:
    # 0.5 s for grid 9's linear attention, 0.76 s for its BaseConv), so 10,000 iterations of it on every
    # setting take hours where GD takes minutes
    learned_steps: Optional[int] = Field(None, ge=1, description="iterations of the learned steps (None: gd_steps)")
    construction_steps: int = Field(200, ge=1, description="iterations of the one-step GD constructions")
    construction_settings: str = Field("in_distribution", pattern="^(in_distribution|all)$")
    eqn_class: int = Field(1, ge=0, le=2)
    n_points: int = Field(ODE_TASK["n_points"], ge=2)  # the prompt size grid 9 trains at
    n_examples: int = Field(ODE_TASK["n_examples"], ge=3)
    seed: int = Field(0, ge=0)
    grid: Optional[str] = DEFAULT_GRID
    # the grid's runs to load, by model name (None: all): one new row evaluated on its own, e.g. into
    # another --out while the other rows' weights are not on this machine
    models: Optional[tuple[Literal["attention", "baseconv", "linear_attention"], ...]] = None
    retrain: bool = False

    @property
    def learned_iterations(self) -> int:
        return self.gd_steps if self.learned_steps is None else self.learned_steps

    @property
    def ns_iterations(self) -> int:
        """Newton-Schulz iterations K: the first 2^K >= gd_steps."""
        return max(1, math.ceil(math.log2(self.gd_steps)))


@dataclass(frozen=True)
class Setting:
    key: str
    axis: str  # IN_DISTRIBUTION or an AXES key
    value: float
    params: dict


def settings() -> list[Setting]:
    """In distribution, then one axis at a time (the axis point that is the training value is the
    in-distribution setting itself, not drawn twice)."""
    out = [Setting(IN_DISTRIBUTION, IN_DISTRIBUTION, 1.0, {})]
    base = {"operator_scale": 1.0, "gp_length": 0.1, "u0_scale": 1.0}
    for axis, values in AXES.items():
        out += [Setting(f"{axis}={v:g}", axis, v, {axis: v}) for v in values if v != base[axis]]
    return out


def axis_points(axis: str) -> list[tuple[float, str]]:
    """(value, setting key) along an axis, the in-distribution point included."""
    base = {"operator_scale": 1.0, "gp_length": 0.1, "u0_scale": 1.0}[axis]
    return [(v, IN_DISTRIBUTION if v == base else f"{axis}={v:g}") for v in AXES[axis]]


# ---- the prompts as least-squares problems ----------------------------------------------------


@dataclass
class Prompts:
    """One setting's prompts in one dtype. inputs (B, n, D + 3) as the model sees them; A (B, n - 1, D + 2),
    b (B, n - 1), query (B, D + 2) in that dtype; target (B,) float64 (exact)."""

    inputs: torch.Tensor
    A: torch.Tensor
    b: torch.Tensor
    query: torch.Tensor
    target: torch.Tensor


def draw(task, prompts: int, seed: int, dtype: torch.dtype) -> Prompts:
    batch = task.sample(prompts, generator=stream_generator(seed, "eval"), dtype=dtype)
    x = batch.inputs
    return Prompts(x, x[:, :-1, :-1], x[:, :-1, -1], x[:, -1, :-1], batch.exact_targets[:, -1, 0])


def predict(query: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """a_q . x in float64."""
    return (query.to(torch.float64) * x.to(torch.float64)).sum(-1)


def step_size(A: torch.Tensor) -> float:
    """1 / the largest eigenvalue of A^T A / N over the prompts (float64)."""
    return 1.0 / torch.linalg.eigvalsh(alg.hessian(A.to(torch.float64)))[:, -1].max().item()


@torch.no_grad()
def gd_final(step, A: torch.Tensor, b: torch.Tensor, eta: torch.Tensor, steps: int,
             keep: tuple[int, ...] = ()) -> dict[int, torch.Tensor]:
    """x_t for t in keep + (steps,), from x_0 = 0: x <- step(A, b, x, eta) in A's dtype."""
    x = torch.zeros(A.shape[0], A.shape[-1], dtype=A.dtype)
    eta = eta.to(A.dtype).reshape(-1, 1)
    out = {}
    for t in range(1, steps + 1):
        x = step(A, b, x, eta)
        if t in keep or t == steps:
            out[t] = x.clone()
    return out


def gd_exact_arithmetic(A: torch.Tensor, b: torch.Tensor, eta, steps: int) -> torch.Tensor:
    """x_steps of GD from x_0 = 0 in exact arithmetic, through the eigendecomposition M = V diag(lam) V^T
    (float64): x_T = V diag((1 - (1 - eta lam)^T) / lam) V^T A^T b / N (T eta where lam = 0). As costly for
    10^5 steps as for one; it equals float64 GD up to float64 rounding (tests/test_bench_ode.py)."""
    A, b = A.to(torch.float64), b.to(torch.float64)
    lam, V = torch.linalg.eigh(alg.hessian(A))
    eta = torch.as_tensor(eta, dtype=torch.float64).reshape(-1, 1)  # a float, or one per prompt
    q = (V.transpose(-1, -2) @ (A.transpose(-1, -2) @ b.unsqueeze(-1))).squeeze(-1) / A.shape[-2]
    tiny = lam.abs() < 1e-300
    safe = torch.where(tiny, torch.ones_like(lam), lam)
    z = eta * safe
    # 1 - (1 - z)^T: through log1p for small z (1 - z would round z away), a plain power near z = 1
    small = -torch.expm1(steps * torch.log1p(-z.clamp(max=0.5)))
    large = 1 - torch.pow(1 - z, steps)
    factor = torch.where(tiny, steps * eta.expand_as(lam), torch.where(z < 0.5, small, large) / safe)
    return (V @ (factor * q).unsqueeze(-1)).squeeze(-1)


def true_gd_step(A, b, x, eta):
    return alg.gd_step(A, b, x, eta)


def learned_gd_step(model: torch.nn.Module, tokens: Callable = gd_tokens, chunk: int = 1024):
    """The learned step as a GD update: x - eta * model(tokens(A, b, x))[:, -1], in chunks of prompts;
    `tokens` is the layout of the task the model was trained on."""
    def step(A, b, x, eta):
        grads = [model(tokens(A[i:i + chunk], b[i:i + chunk], x[i:i + chunk]))[:, -1]
                 for i in range(0, A.shape[0], chunk)]
        return x - eta * torch.cat(grads)
    return step


def newton_schulz_map(A: torch.Tensor, b: torch.Tensor, eta: float, iterations: int) -> torch.Tensor:
    """What the BaseConv Newton-Schulz construction computes (architectures.constructions.baseconv_newton),
    in A's dtype, from x_0 = 0: E = I - eta M, d = eta g_0; K times d <- d + E d, E <- E E; x = x_0 - d."""
    D = A.shape[-1]
    x0 = torch.zeros(A.shape[0], D, dtype=A.dtype)
    E = torch.eye(D, dtype=A.dtype) - eta * alg.hessian(A)
    d = eta * alg.gradient(A, b, x0)
    for _ in range(iterations):
        d = d + (E @ d.unsqueeze(-1)).squeeze(-1)
        E = E @ E
    return x0 - d


def newton_schulz_size(D: int, N: int, iterations: int) -> dict:
    """Width and weights of the BaseConv Newton-Schulz construction at this size (counted on the meta
    device: nothing is allocated)."""
    from architectures import build_model
    from architectures.constructions.base import shapes
    from architectures.constructions.baseconv_newton import newton_schulz_width

    width = newton_schulz_width(D)
    with torch.device("meta"):
        block = build_model("baseconv", shapes(N + 1, D + 1, D), width=width, depth=1, prenorm=False, mlp=False,
                            final_norm=False, pos_emb=False, residual=True, conv_kind="short",
                            conv_backend="direct")
        weights_one = sum(p.numel() for p in block.parameters())
    per_layer = sum(p.numel() for p in block.blocks[0].parameters())
    layers = 4 + iterations
    weights = weights_one + (layers - 1) * per_layer
    return {"width": width, "layers": layers, "weights": weights, "weights_per_layer": per_layer,
            "float32_GB": 4 * weights / 1e9}


# ---- learned models from run records ----------------------------------------------------------


def learned_models(configs: list[RunConfig], results_dir: Path, retrain: bool) -> list[dict]:
    """One entry per run of the grid: its role (transformer | learned_step), label, status and model."""
    out = []
    for cfg in configs:
        role = "transformer" if cfg.task.name == "ode_operator" else "learned_step"
        label = ("Transformer (softmax attention, end to end)" if role == "transformer"
                 else f"{cfg.model.name} learned GD step ({cfg.task.params.get('layout', 'first_token')} layout), iterated")
        entry = {"role": role, "label": label, "hash": cfg.hash, "config": cfg.label(), "budget": budget_text(cfg),
                 "model": None, "tokens": cfg.build_task().tokens if role == "learned_step" else None}
        record = load_result(cfg, results_dir)
        if record is None:
            entry["status"] = "not trained"
        elif record.status != "ok":
            entry["status"] = f"run {record.status}"
        elif has_weights(cfg, results_dir):
            entry.update(status="ok", model=load_model(cfg, results_dir), eval_mse=record.eval_mse)
        elif retrain:
            from bench.harness.iterate import trained_model

            entry.update(status="ok (retrained)", model=trained_model(cfg, results_dir), eval_mse=record.eval_mse)
        else:
            entry["status"] = "no checkpoint (rerun with --retrain)"
        if entry["model"] is not None:
            entry["model"].eval()
        out.append(entry)
    return out


# ---- statistics -------------------------------------------------------------------------------


def stats(errors: torch.Tensor) -> dict:
    """Median, quartiles, mean of per-prompt squared errors; non-finite ones counted (and ranked last)."""
    e = errors.to(torch.float64)
    nonfinite = int((~torch.isfinite(e)).sum())
    e = torch.where(torch.isfinite(e), e, torch.full_like(e, math.inf))
    q = torch.quantile(e, torch.tensor([0.25, 0.5, 0.75], dtype=torch.float64)).tolist()

    def finite(v):
        return v if math.isfinite(v) else None

    return {"q25": finite(q[0]), "median": finite(q[1]), "q75": finite(q[2]),
            "mean": finite(e.mean().item()), "n": e.numel(), "nonfinite": nonfinite}


class Comparison:
    """The prompts of every setting and the rows measured on them (one row per method, dtype, setting, iteration)."""

    def __init__(self, cfg: ODEComparisonConfig):
        base = dict(eqn_class=cfg.eqn_class, n_points=cfg.n_points, n_examples=cfg.n_examples)
        self.cfg, self.settings = cfg, settings()
        self.tasks = {s.key: make_task("ode_operator", **base, **s.params) for s in self.settings}
        self.p64 = {k: draw(t, cfg.prompts, cfg.seed, torch.float64) for k, t in self.tasks.items()}
        self.p32 = {k: draw(t, cfg.prompts, cfg.seed, torch.float32) for k, t in self.tasks.items()}
        self.eta = {k: step_size(p.A) for k, p in self.p64.items()}
        self.keys = list(self.p64)
        self.rows: list[dict] = []

    def add(self, method, label, dtype, iterations, key, errors, **extra):
        s = next(s for s in self.settings if s.key == key)
        self.rows.append({"method": method, "label": label, "dtype": dtype, "iterations": iterations, "setting": key,
                          "axis": s.axis, "value": s.value, "eta": self.eta[key], **stats(errors), **extra})

    def add_final(self, method, label, dtype, iterations, key, x, **extra):
        p = (self.p64 if dtype == "float64" else self.p32)[key]
        self.add(method, label, dtype, iterations, key, (predict(p.query, x) - p.target) ** 2, **extra)

    def batched(self, prompts_by_key, step, dtype_name, method, label, steps, keep=()):
        """Iterate `step` on every setting's prompts at once; a row at each kept iteration and at the last."""
        sizes = [self.cfg.prompts] * len(self.keys)
        eta_all = torch.cat([torch.full((self.cfg.prompts,), self.eta[k], dtype=torch.float64) for k in self.keys])
        A = torch.cat([prompts_by_key[k].A for k in self.keys])
        b = torch.cat([prompts_by_key[k].b for k in self.keys])
        for t, x in gd_final(step, A, b, eta_all, steps, keep).items():
            for k, xk in zip(self.keys, torch.split(x, sizes)):
                p = prompts_by_key[k]
                self.add(method, label, dtype_name, t, k, (predict(p.query, xk) - p.target) ** 2)

    def kept_iterations(self) -> tuple[int, ...]:
        return tuple(t for t in (10, 100, 1000, self.cfg.construction_steps) if t < self.cfg.gd_steps)


def least_squares_rows(c: Comparison) -> None:
    """(d) least squares, float64 QR."""
    for k, p in c.p64.items():
        c.add_final("least_squares", "least squares (float64 QR)", "float64", None, k,
                    alg.least_squares_solution(p.A, p.b))


def gd_rows(c: Comparison, log) -> None:
    """(c) GD: iterated in float32, every setting at once; in float64 in exact arithmetic (eigendecomposition)."""
    steps, t0 = c.cfg.gd_steps, time.time()
    c.batched(c.p32, true_gd_step, "float32", "gd", "GD (float32)", steps, c.kept_iterations())
    log(f"ode: GD float32, {steps} steps on {len(c.keys)} settings: {time.time() - t0:.0f} s")
    for t in sorted({*c.kept_iterations(), steps, 10 * steps}):
        label = "GD (float64, exact arithmetic)" + (", 10x the steps" if t > steps else "")
        for k, p in c.p64.items():
            c.add_final("gd", label, "float64", t, k, gd_exact_arithmetic(p.A, p.b, c.eta[k], t))


def construction_rows(c: Comparison, log) -> None:
    """(e) constructions: the one-step GD models iterated, and the Newton-Schulz construction's map."""
    from architectures.constructions import baseconv_gd_step, gd_iterate, linear_attention_gd_step

    cfg = c.cfg
    construction_keys = c.keys if cfg.construction_settings == "all" else [IN_DISTRIBUTION]
    D, N = cfg.n_points + 2, cfg.n_examples - 1
    for builder, label in ((baseconv_gd_step, "BaseConv GD construction (4 layers, width 4D + 1)"),
                           (linear_attention_gd_step, "linear-attention GD construction (2 layers)")):
        for name, prompts_by_key in (("float32", c.p32), ("float64", c.p64)):
            t0 = time.time()
            for k in construction_keys:
                p = prompts_by_key[k]
                built = builder(D, N, c.eta[k], dtype=getattr(torch, name))
                x = gd_iterate(built, p.A, p.b, torch.zeros(cfg.prompts, D), cfg.construction_steps)[-1]
                c.add_final("construction", label, name, cfg.construction_steps, k, x, width=built.width,
                            depth=built.depth)
            log(f"ode: {label} {name}, {cfg.construction_steps} steps: {time.time() - t0:.0f} s")
    K = cfg.ns_iterations
    for name, prompts_by_key in (("float32", c.p32), ("float64", c.p64)):
        for k, p in prompts_by_key.items():
            c.add_final("construction", f"Newton-Schulz construction's map (K = {K}: GD step {2 ** K:,})", name, 2 ** K,
                        k, newton_schulz_map(p.A, p.b, c.eta[k], K))


def learned_rows(c: Comparison, configs: list[RunConfig], results_dir: Path, log) -> list[dict]:
    """(a), (b): the trained models named by the grid, on the prompts of their dtype."""
    cfg = c.cfg
    if cfg.models is not None:
        configs = [x for x in configs if x.model.name in cfg.models]
    learned = learned_models(configs, results_dir, cfg.retrain)
    for entry in learned:
        model, tokens = entry.pop("model"), entry.pop("tokens")
        if model is None:
            log(f"ode: {entry['label']} ({entry['hash']}): {entry['status']}")
            continue
        dtype = next(model.parameters()).dtype
        dtype_name = str(dtype).removeprefix("torch.")
        by_key = c.p32 if dtype == torch.float32 else c.p64
        t0 = time.time()
        if entry["role"] == "transformer":
            with torch.no_grad():
                for k, p in by_key.items():
                    pred = torch.cat([model(p.inputs[i:i + 256])[:, -1, 0] for i in range(0, cfg.prompts, 256)])
                    c.add("transformer", entry["label"], dtype_name, None, k, (pred.double() - p.target) ** 2,
                          run=entry["hash"])
        else:
            steps = cfg.learned_iterations
            c.batched(by_key, learned_gd_step(model, tokens), dtype_name, "learned_step", entry["label"], steps,
                      tuple(t for t in c.kept_iterations() if t < steps))
        log(f"ode: {entry['label']}: {time.time() - t0:.0f} s")
    return learned


def run(cfg: ODEComparisonConfig, results_dir: Path = Path("results"), log=print,
        configs: Optional[list[RunConfig]] = None) -> dict:
    """Every method on every setting; the rows, floors, ratios and the size of what was not run.
    `configs`: the trained rows' runs (default: those of cfg.grid)."""
    from bench.experiments.ode_report import paper_ratios, ratios
    from bench.harness.sweep import resolve_grid

    started = time.time()
    c = Comparison(cfg)
    least_squares_rows(c)
    gd_rows(c, log)
    construction_rows(c, log)
    if configs is None:
        configs = resolve_grid(cfg.grid) if cfg.grid else []
    learned = learned_rows(c, configs, results_dir, log)
    floors = [{"setting": k, "float32_floor": c.tasks[k].floor(torch.float32, n=cfg.prompts, seed=cfg.seed),
               "float64_floor": 0.0, **{f"solver_{m}": v for m, v in
                                        c.tasks[k].solver_error(n=cfg.prompts, seed=cfg.seed).items()}}
              for k in c.keys]
    D, N = cfg.n_points + 2, cfg.n_examples - 1
    return {"config": cfg.model_dump(), "task": c.tasks[IN_DISTRIBUTION].describe(), "rows": c.rows,
            "floors": floors, "learned": learned,
            "newton_schulz_size": newton_schulz_size(D, N, cfg.ns_iterations), "ratios": ratios(c.rows),
            "paper": {"in_distribution": PAPER_IN_DISTRIBUTION,
                      "transformer_operator_scale": {f"{k:g}": v for k, v in PAPER_TRANSFORMER_OPERATOR_SCALE.items()},
                      "headlines": PAPER_HEADLINES, "ratios_from_its_numbers": paper_ratios()},
            "environment": environment(), "wall_time_s": time.time() - started}




# ---- the paper's Chebyshev collocation and the initial condition -------------------------------


def chebyshev(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The n + 1 Chebyshev points x_j = cos(pi j / n) and the spectral differentiation matrix on them
    (Trefethen, Spectral Methods in MATLAB, cheb), float64."""
    j = torch.arange(n + 1, dtype=torch.float64)
    x = torch.cos(math.pi * j / n)
    w = torch.where((j == 0) | (j == n), 2.0, 1.0) * (-1.0) ** j
    dx = x[:, None] - x[None, :] + torch.eye(n + 1, dtype=torch.float64)
    Dm = (w[:, None] / w[None, :]) / dx
    Dm = Dm - torch.diag(Dm.sum(dim=1))
    return x, Dm


def paper_collocation(a1, a2, a3, a4, u0, c_nodes, nodes: int = 40) -> tuple[torch.Tensor, float]:
    """The paper's solver, re-derived: collocation of u' = a1 c + a2 c u + a3 u + a4 at the Chebyshev
    points, where the equation at the middle node t = 0 has a3 u0 in place of a3 u(0): the initial
    condition is never imposed. Returns u at the nodes and the condition number of the system."""
    x, Dm = chebyshev(nodes)
    mid = nodes // 2
    M = Dm - a3 * torch.eye(nodes + 1, dtype=torch.float64) - a2 * torch.diag(c_nodes)
    M[mid, mid] += a3
    rhs = a1 * c_nodes + a4
    rhs[mid] += a3 * u0
    return torch.linalg.solve(M, rhs), torch.linalg.cond(M).item()


def collocation_initial_condition(a3_values=(0.5, 0.05, 5e-3, 1e-4, 1e-6), *, gp_length: float = 0.1,
                                  seed: int = 0) -> list[dict]:
    """|u(0) - u0| of the paper's collocation (41 nodes) on one GP draw at the nodes, eqn_class 1 with
    a1 = 1, a4 = 0.5, u0 = 1, as a3 -> 0, next to the condition number of its system; ours is exact
    (primitives.ode steps from t = 0, where u = u0 untouched)."""
    from primitives.ode import rbf_covariance

    x, _ = chebyshev(40)
    K = rbf_covariance(x, gp_length)
    lam, V = torch.linalg.eigh(K)
    z = torch.randn(41, generator=stream_generator(seed, "eval"), dtype=torch.float64)
    c = (V * lam.clamp_min(0).sqrt()) @ z
    rows = []
    for a3 in a3_values:
        u, cond = paper_collocation(1.0, 0.0, a3, 0.5, 1.0, c)
        rows.append({"a3": a3, "u(0) error, paper's collocation": abs(u[20].item() - 1.0), "condition number": cond,
                     "u(0) error, ours": 0.0})
    _, Dm = chebyshev(40)
    singular = torch.linalg.matrix_rank(Dm).item() < 41  # a3 = 0: the system is D alone, constants in its kernel
    rows.append({"a3": 0.0, "u(0) error, paper's collocation": "singular" if singular else "?",
                 "condition number": math.inf, "u(0) error, ours": 0.0})
    return rows
# ---- command line -----------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench ode", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--prompts", type=int, default=256)
    p.add_argument("--gd-steps", type=int, default=10_000)
    p.add_argument("--learned-steps", type=int, default=None,
                   help="iterations of the learned steps (default: --gd-steps)")
    p.add_argument("--construction-steps", type=int, default=200)
    p.add_argument("--construction-settings", default="in_distribution", choices=("in_distribution", "all"))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--grid", default=DEFAULT_GRID, help="the grid naming the trained rows; 'none' for none")
    p.add_argument("--models", nargs="+", default=None, help="load only the grid's runs of these models "
                   "(attention: the Transformer; baseconv, linear_attention: the learned steps)")
    p.add_argument("--retrain", action="store_true", help="retrain runs whose checkpoint is missing")
    p.add_argument("--results", type=Path, default=Path("results"))
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--figures", type=Path, default=Path("results/figures"))
    p.add_argument("--threads", type=int, default=1)
    return p


def main(argv: Optional[list[str]] = None) -> int:
    args = parser().parse_args(argv)
    try:
        cfg = ODEComparisonConfig(prompts=args.prompts, gd_steps=args.gd_steps, learned_steps=args.learned_steps,
                                  construction_steps=args.construction_steps,
                                  construction_settings=args.construction_settings, seed=args.seed,
                                  grid=None if args.grid == "none" else args.grid, retrain=args.retrain,
                                  models=None if args.models is None else tuple(args.models))
    except ValidationError as err:
        print(f"error: invalid ODE comparison: {describe_validation_error(err)}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads)
    from bench.experiments.ode_report import write

    result = run(cfg, args.results)
    written = write(result, args.out, args.figures, collocation_initial_condition())
    print(f"wrote {len(written)} files under {args.out} and {args.figures} ({result['wall_time_s']:.0f} s)")
    return 0
