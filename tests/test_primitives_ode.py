"""ode_operator: token layout, draws, and the exact targets against independent methods
(Gauss-Legendre collocation, the exact integral of a piecewise-linear c, constant-coefficient
closed forms, step halving), to float64 rounding."""
import math

import numpy as np
import pytest
import torch

from primitives import make_task, stream_generator
from primitives import ode

B = 16


def prompts(batch=B, seed=0, dtype=torch.float64, **params):
    task = make_task("ode_operator", **params)
    return task, task.prompts(batch, stream_generator(seed, "train"), dtype)


def rel_l2(a, b):
    return ((a - b).norm() / b.norm()).item()


# ---- layout and draws --------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_layout_holds_c_u0_one_and_solved_examples(dtype):
    task = make_task("ode_operator", n_points=6, n_examples=5)
    batch = task.sample(3, generator=stream_generator(1, "train"), dtype=dtype)
    p = task.prompts(3, stream_generator(1, "train"), dtype)  # the same draws
    assert batch.inputs.shape == (3, 5, 9) and batch.targets.shape == (3, 5, 1)
    assert batch.mask.tolist() == [False] * 4 + [True]
    x = batch.inputs.to(torch.float64)
    assert torch.equal(x[..., :6], p.c) and torch.equal(x[..., 6], p.u0) and (x[..., 7] == 1).all()
    assert torch.equal(x[:, :-1, 8], p.u[:, :-1].to(dtype).to(torch.float64)) and (x[:, -1, 8] == 0).all()
    assert torch.equal(batch.exact_targets[:, -1, 0], p.u[:, -1])
    assert torch.equal(batch.targets, batch.exact_targets.to(dtype))
    # the inputs are exactly representable in dtype: the model sees what the target is computed from
    assert torch.equal(p.c.to(dtype).to(torch.float64), p.c)


def test_operator_draws_follow_the_class_and_scales():
    for eqn_class in (0, 1, 2):
        _, p = prompts(batch=4000, eqn_class=eqn_class, operator_scale=2.0, u0_scale=3.0, n_points=4,
                       n_examples=2)
        s = 2.0
        a1_range = (p.a1.min() >= 1 - s / 2) & (p.a1.max() <= 1 + s / 2)
        assert (p.a1 == 0).all() if eqn_class == 2 else bool(a1_range) and p.a1.std() > 0.5
        assert (p.a2 == 0).all() if eqn_class == 1 else bool((p.a2.abs() <= 1 + s / 2).all()) and p.a2.std() > 0.5
        for a in (p.a3, p.a4):
            assert a.abs().max() <= s and a.abs().max() > 0.99 * s
        assert p.u0.abs().max() <= 3.0 and p.u0.abs().max() > 2.99
        assert p.t_q.abs().max() <= 1 and p.t_q.std() > 0.5
    _, p = prompts(query_time=0.25, n_points=4, n_examples=2)
    assert (p.t_q == 0.25).all()


def test_gp_draws_have_the_rbf_covariance():
    F = ode.gp_factor(7, 0.1)
    K = ode.rbf_covariance(ode.grid(7), 0.1)
    assert torch.allclose(F @ F.T, K, atol=1e-13)
    assert K[0, 1].item() == pytest.approx(math.exp(-(1 / 3) ** 2 / 0.2), rel=1e-14)  # variance form of the paper
    c = ode.sample_gp((40000,), 7, 0.1, stream_generator(0, "train"))
    cov = c.T @ c / c.shape[0]
    assert (cov - K).abs().max() < 0.04


def test_interpolant_passes_through_the_values_and_is_linear_between():
    c = torch.tensor([[0.0, 2.0, -1.0, 4.0]], dtype=torch.float64)  # knots -1, -1/3, 1/3, 1
    t = torch.tensor(ode.grid(4).tolist() + [0.0, -2 / 3, 2 / 3], dtype=torch.float64)
    got = torch.stack([ode.interpolate(c, ti) for ti in t], dim=-1)[0]
    assert torch.allclose(got, torch.tensor([0.0, 2.0, -1.0, 4.0, 0.5, 1.0, 1.5], dtype=torch.float64), atol=1e-15)


# ---- exact targets against independent methods ----------------------------------------------


@pytest.mark.parametrize("n_points", [21, 8])  # 8: t = 0 falls inside a piece
def test_closed_form_taylor_and_collocation_agree_on_class_1(n_points):
    _, p = prompts(n_points=n_points, n_examples=6)
    args = (p.a1, p.a2, p.a3, p.a4, p.c, p.u0, p.t_q)
    closed = ode.solve_closed_form(p.a1, p.a3, p.a4, p.c, p.u0, p.t_q)
    assert torch.equal(closed, p.u)
    assert rel_l2(ode.solve_taylor(*args), closed) < 2e-15
    assert rel_l2(ode.solve_collocation(*args), closed) < 2e-15


@pytest.mark.parametrize("eqn_class, scale", [(0, 1.0), (2, 1.0), (0, 16.0), (2, 0.0625)])
def test_taylor_agrees_with_collocation_and_with_itself_at_smaller_steps(eqn_class, scale):
    _, p = prompts(batch=8, eqn_class=eqn_class, operator_scale=scale, n_examples=4)
    args = (p.a1, p.a2, p.a3, p.a4, p.c, p.u0, p.t_q)
    assert torch.equal(ode.solve_taylor(*args), p.u)
    assert rel_l2(ode.solve_collocation(*args), p.u) < 5e-15
    assert rel_l2(ode.solve_taylor(*args, rho=0.05), p.u) < 5e-15  # step quartered: Richardson-style check
    assert rel_l2(ode.solve_taylor(*args, terms=8), p.u) > 1e-12  # a truncated series is caught


def test_constant_forcing_has_the_constant_coefficient_solution():
    # c constant: u' = P u + Q with P = a2 c + a3, Q = a1 c + a4, so u(t) = e^{Pt} u0 + t phi1(Pt) Q
    a = [torch.tensor([v], dtype=torch.float64) for v in (0.7, 1.3, -0.4, 0.25)]
    c = torch.full((1, 3, 9), 0.8, dtype=torch.float64)
    u0 = torch.tensor([[0.5, -1.0, 2.0]], dtype=torch.float64)
    P, Q = (1.3 * 0.8 - 0.4), (0.7 * 0.8 + 0.25)
    for t in (-1.0, -0.37, 0.0, 0.61, 1.0):
        tq = torch.tensor([t], dtype=torch.float64)
        exact = math.exp(P * t) * u0 + (math.expm1(P * t) / P) * Q
        assert rel_l2(ode.solve_taylor(*a, c, u0, tq), exact) < 1e-15
        assert rel_l2(ode.solve_collocation(*a, c, u0, tq), exact) < 1e-15


def integral_of_piecewise_linear(c: np.ndarray, t: float) -> float:
    """int_0^t c for c piecewise linear on linspace(-1, 1, D): the trapezoid rule is exact."""
    knots = np.linspace(-1, 1, len(c))
    lo, hi = sorted((0.0, t))
    inside = knots[(knots > lo) & (knots < hi)]
    pts = np.concatenate([[lo], inside, [hi]])
    vals = np.interp(pts, knots, c)
    value = float(np.sum((pts[1:] - pts[:-1]) * (vals[1:] + vals[:-1]) / 2))
    return value if t >= 0 else -value


@pytest.mark.parametrize("a3", [0.0, 1e-12, 1e-8, 1e-4])
def test_a3_to_zero_is_exact_where_the_papers_collocation_loses_the_initial_condition(a3):
    # a3 = 0: u(t) = u0 + a1 int_0^t c + a4 t exactly; small a3 moves u by O(a3), continuously
    _, p = prompts(batch=4, n_examples=3)
    a3s = torch.full_like(p.a3, a3)
    u = ode.solve_closed_form(p.a1, a3s, p.a4, p.c, p.u0, p.t_q)
    for b in range(4):
        t = p.t_q[b].item()
        for i in range(3):
            base = p.u0[b, i].item() + p.a1[b].item() * integral_of_piecewise_linear(p.c[b, i].numpy(), t) \
                + p.a4[b].item() * t
            assert abs(u[b, i].item() - base) <= 2e-15 * max(1.0, abs(base)) + 10 * a3 * max(1.0, abs(base))
    assert rel_l2(ode.solve_collocation(p.a1, p.a2, a3s, p.a4, p.c, p.u0, p.t_q), u) < 2e-15
    # the initial condition holds exactly, for every a3
    at_zero = ode.solve_closed_form(p.a1, a3s, p.a4, p.c, p.u0, torch.zeros(4, dtype=torch.float64))
    assert torch.equal(at_zero, p.u0)


def test_query_at_zero_gives_u0_bit_exactly_in_every_class():
    for eqn_class in (0, 1, 2):
        task = make_task("ode_operator", eqn_class=eqn_class, query_time=0.0, n_examples=3)
        batch = task.sample(4, generator=stream_generator(0, "train"))
        assert torch.equal(batch.exact_targets[:, -1, 0], batch.inputs[:, -1, -3])


def test_class_1_prompt_is_a_consistent_least_squares_problem_and_class_0_is_not():
    def ls_mse(eqn_class):
        task = make_task("ode_operator", eqn_class=eqn_class, n_points=20, n_examples=26)
        batch = task.sample(64, generator=stream_generator(0, "eval"))
        A, b = batch.inputs[:, :-1, :-1], batch.inputs[:, :-1, -1]
        x = torch.linalg.lstsq(A, b.unsqueeze(-1)).solution.squeeze(-1)
        pred = (batch.inputs[:, -1, :-1] * x).sum(-1)
        return (pred - batch.exact_targets[:, -1, 0]).pow(2).mean().item()

    assert ls_mse(1) < 1e-26  # u(t_q) is linear in (c, u0, 1): least squares recovers it to rounding
    assert ls_mse(0) > 1e-8  # the a2 c u term is not


def test_solver_error_is_the_float64_rounding_floor():
    for eqn_class in (1, 0):
        task = make_task("ode_operator", eqn_class=eqn_class, n_examples=4)
        err = task.solver_error(n=32)
        assert err["mse"] < 1e-29 * err["target_mean_square"] and err["rel_l2"] < 5e-15
        assert task.floor(torch.float64) == 0.0
        assert task.floor(torch.float32, n=64) > 1e5 * err["mse"]
