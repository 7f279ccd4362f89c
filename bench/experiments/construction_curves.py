"""Error curves of the least-squares constructions against the reference algorithms.

Error of an iterate: per problem, the mean over the D coordinates of (x_t - x_ls)^2, where
x_ls is the float64 least-squares solution of the problem as the model sees it (A, b rounded
to the dtype), i.e. what GD converges to. A curve reports the median over problems (as
Liu et al. do) and the mean; the mean is dominated by the few worst-conditioned problems.

Problems: D x N Gaussian least squares from primitives.sample_least_squares, drawn from the
"eval" stream of `seed`; float32 and float64 runs use the same draws, rounded to each dtype.

The problems, the per-problem error, true GD and the iterated one-step constructions are
bench.harness.iterate's (`sample_problems`, `iterate_errors`, `true_gd_iterates`, `ONE_STEP_BUILDERS`),
shared with the learned steps iterated there; the token layout is primitives.least_squares.gd_tokens.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from primitives import algorithms as alg
from primitives.least_squares import LeastSquaresProblem, gd_tokens

from architectures.constructions.baseconv_gd import baseconv_gd_unrolled, gd_iterate
from architectures.constructions.baseconv_newton import baseconv_gd_gram, baseconv_newton_schulz, layer_outputs

from bench.harness.config import DTYPES
from bench.harness.iterate import ONE_STEP_BUILDERS, iterate_errors, sample_problems, true_gd_iterates

# "reached the floor": the median error at or below these (the targets of the construction tests)
FLOOR_THRESHOLDS = {"float32": 1e-14, "float64": 1e-28}


def relative_difference(xs: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Per iteration, the largest over problems of ||x - x_ref|| / ||x_ref||: (T,)."""
    xs, ref = xs.to(torch.float64), ref.to(torch.float64)
    return ((xs - ref).norm(dim=-1) / ref.norm(dim=-1)).amax(dim=-1)


@dataclass
class Curve:
    """Median and mean error per iteration; `layers[t]` is the depth spent to reach iteration t."""

    median: list[float]
    mean: list[float]
    layers: list[int]

    @classmethod
    def from_errors(cls, errors: torch.Tensor, layers: list[int]) -> "Curve":
        return cls(errors.median(dim=1).values.tolist(), errors.mean(dim=1).tolist(), list(layers))

    def first_below(self, threshold: float) -> int | None:
        """The first iteration whose median error is <= threshold (None if never)."""
        return next((t for t, v in enumerate(self.median) if v <= threshold), None)

    def to_dict(self) -> dict:
        return {"median": self.median, "mean": self.mean, "layers": self.layers}


def true_gd_curve(problem: LeastSquaresProblem, eta: float, steps: int, dtype: torch.dtype) -> tuple[Curve, torch.Tensor]:
    """GD run in `dtype` by primitives.algorithms (no model); returns the curve and the iterates (T, B, D)."""
    xs = true_gd_iterates(problem, steps, dtype, eta)
    return Curve.from_errors(iterate_errors(xs, problem.x_ls), [0] * (steps + 1)), xs


def gd_iterate_curve(
    construction: str = "baseconv",
    *,
    steps: int = 300,
    D: int = 5,
    N: int = 20,
    eta: float = 0.5,
    batch: int = 64,
    seed: int = 0,
    dtypes: tuple[str, ...] = ("float32", "float64"),
) -> dict:
    """MSE vs iteration of a one-step GD construction applied `steps` times, and of true GD.

    construction: a key of ONE_STEP_BUILDERS: "baseconv" (4 layers per step), "baseconv_3layer"
    and "baseconv_broadcast" (3), "linear_attention" (2).
    Returns {dtype: {"construction": Curve, "true_gd": Curve, "max_relative_difference": float,
    "relative_difference": [per iteration]}}; the relative difference is between the
    construction's iterates and true GD's in the same dtype.
    """
    out = {}
    for name in dtypes:
        dtype = DTYPES[name]
        problem = sample_problems(batch, D, N, dtype, seed=seed)
        c = ONE_STEP_BUILDERS[construction](D, N, eta, dtype=dtype)
        xs = gd_iterate(c, problem.A, problem.b, problem.x0, steps)
        true_curve, ref = true_gd_curve(problem, eta, steps, dtype)
        rel = relative_difference(xs, ref)
        out[name] = {
            "construction": Curve.from_errors(iterate_errors(xs, problem.x_ls), [c.layers_per_step * t for t in range(steps + 1)]),
            "true_gd": true_curve,
            "relative_difference": rel.tolist(),
            "max_relative_difference": rel.max().item(),
        }
    return out


def single_pass_curves(build, read_iterates, layers, *, steps: int, D: int, N: int, eta: float, batch: int,
                       seed: int, dtypes: tuple[str, ...]) -> dict:
    """MSE vs GD step of a construction that computes every iterate in one forward pass.

    build(dtype) -> Construction; read_iterates(per_layer, x0) -> iterates (steps + 1, B, D) from the
    last position's output after every layer; layers: the depth spent per iterate."""
    out = {}
    for name in dtypes:
        dtype = DTYPES[name]
        problem = sample_problems(batch, D, N, dtype, seed=seed)
        c = build(dtype)
        per_layer = layer_outputs(c.model, gd_tokens(problem.A, problem.b, problem.x0).to(dtype))[:, :, -1]
        xs = read_iterates(per_layer, problem.x0.to(dtype))
        _, ref = true_gd_curve(problem, eta, steps, dtype)
        rel = relative_difference(xs, ref)
        out[name] = {
            "construction": Curve.from_errors(iterate_errors(xs, problem.x_ls), layers),
            "relative_difference": rel.tolist(),
            "max_relative_difference": rel.max().item(),
        }
    return out


def gram_gd_curve(
    *, steps: int = 300, D: int = 5, N: int = 20, eta: float = 0.5, batch: int = 64, seed: int = 0,
    dtypes: tuple[str, ...] = ("float32", "float64"),
) -> dict:
    """MSE vs GD step of the single-pass GD-with-M construction (one forward pass of depth 3 + steps)."""
    setup = baseconv_gd_gram(D, N, eta, 1).setup_layers
    return single_pass_curves(
        lambda dtype: baseconv_gd_gram(D, N, eta, steps, dtype=dtype),
        lambda per_layer, x0: per_layer[setup - 1 :],  # iterate t is read after layer 3 + t (t = 0: x0 broadcast)
        [0] + [setup + t for t in range(1, steps + 1)],
        steps=steps, D=D, N=N, eta=eta, batch=batch, seed=seed, dtypes=dtypes,
    )


def unrolled_gd_curve(
    *, steps: int = 300, D: int = 5, N: int = 20, eta: float = 0.5, batch: int = 64, seed: int = 0,
    dtypes: tuple[str, ...] = ("float32", "float64"),
) -> dict:
    """MSE vs GD step of the non-causal unrolled GD construction (one pass of depth 1 + 3 steps)."""
    return single_pass_curves(
        lambda dtype: baseconv_gd_unrolled(D, N, eta, steps, dtype=dtype),
        lambda per_layer, x0: torch.cat([x0.unsqueeze(0), per_layer[3::3]]),  # iterate t >= 1: after layer 1 + 3t
        [0] + [1 + 3 * t for t in range(1, steps + 1)],
        steps=steps, D=D, N=N, eta=eta, batch=batch, seed=seed, dtypes=dtypes,
    )


def newton_curve(
    *, iterations: int = 10, rounds: int = 3, D: int = 5, N: int = 20, eta: float = 0.5, batch: int = 64,
    seed: int = 0, dtypes: tuple[str, ...] = ("float32", "float64"),
) -> dict:
    """The Newton-Schulz construction: error after each iteration of one pass, and after refinement rounds.

    Returns {dtype: {"iterations": Curve over k = 0..iterations within one pass (iterate k,
    x0 - X_k g0, is read after layer 4 + k; k = 0 is one GD step), "max_relative_difference_ns": largest relative
    difference to Newton-Schulz X_k g0 computed by primitives.algorithms in the same dtype,
    "refinement": {K: Curve over rounds 0..rounds, each round a full pass of depth 4 + K with
    the previous answer fed back as token 0}}}.
    """
    out = {}
    for name in dtypes:
        dtype = DTYPES[name]
        problem = sample_problems(batch, D, N, dtype, seed=seed)
        c = baseconv_newton_schulz(D, N, eta, iterations, dtype=dtype)
        A, b, x0 = problem.A.to(dtype), problem.b.to(dtype), problem.x0.to(dtype)
        xs = layer_outputs(c.model, gd_tokens(A, b, x0))[c.setup_layers - 1 :, :, -1]  # k = 0..iterations
        eye = torch.eye(D, dtype=dtype).expand(batch, D, D)
        X = alg.newton_schulz_iterates(alg.hessian(A), eta * eye, iterations)  # (B, K+1, D, D)
        ns = x0.unsqueeze(0) - torch.einsum("bkij,bj->kbi", X, alg.gradient(A, b, x0))
        rel = relative_difference(xs, ns)
        refinement = {}
        for K in range(1, iterations + 1):
            one = baseconv_newton_schulz(D, N, eta, K, dtype=dtype)
            rs = gd_iterate(one, A, b, x0, rounds)
            refinement[K] = Curve.from_errors(iterate_errors(rs, problem.x_ls), [(4 + K) * r for r in range(rounds + 1)])
        out[name] = {
            "iterations": Curve.from_errors(iterate_errors(xs, problem.x_ls), [c.setup_layers + k for k in range(iterations + 1)]),
            "max_relative_difference_ns": rel.max().item(),
            "refinement": refinement,
        }
    return out
